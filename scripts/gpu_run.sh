#!/usr/bin/env bash
# The command a GPU session gives the device tool (carry [".whl"], made by scripts/gpu_prepare.sh):
#   bash scripts/gpu_run.sh PART [PART...]   parts in order, each under its own `timeout`
#   bash scripts/gpu_run.sh --print PART     the command it runs (nothing installed or run)
#   bash scripts/gpu_run.sh --list           the parts
# Results land in $OUT (the device tool brings them back), to be copied to data/results/ here
# (compiled parts: shapes-compiled-cuda-<part without "compiled-">.json). Every compiled part writes
# its JSON after each step, starts no compiling step after BUDGET_S seconds (default 400; steps that
# compile nothing, a pair's rounds and HF's eager generate, still run) and is stopped by
# `timeout` at PART_TIMEOUT seconds (default 550; installing takes ~15 s of the 600): what it measured
# stays, skipped steps are listed. The JSON's meta has the GPU name and torch/transformers/bnb versions.
# Compiling one shape took 60-130 s on an H200 in a probe: a part compiles at most 6 (utils.fast engines
# + HF static generate; --print PART, then add --dry-run, lists them). Order inside a part: what the goals
# need first (compiled greedy, HF dynamic, the pair's rounds), then HF static of the pair's target, then
# the self-draft, so a budget cut drops the tail.
# A task that is lent a GPU gets 15 minutes of device time in all, the machine's start (1-2 min)
# included, and the machine goes back 30 s after a call: ONE call per session (timeout_s 600). Not yet
# run, in order of what they decide (a later session takes the first one that has no committed JSON):
#   0. cuda-tests             first, in every GPU session until it has passed once (6 passed, 0 skipped),
#                             in the same call as the compiled part below:
#                             `PART_TIMEOUT=230 bash scripts/gpu_run.sh cuda-tests; BUDGET_S=250
#                             PART_TIMEOUT=330 bash scripts/gpu_run.sh compiled-27b` (timeout_s 600):
#                             tests/test_device.py on CUDA, the notebooks' calls with the tiny pair on
#                             the GPU (Colab's setting) and a CPU generator
#   1. compiled-27b           issue 12's goals: 27b compiled greedy vs its bandwidth bound, HF
#                             dynamic/static; 2b->27b round time, tok/s at alpha 0.6-0.9, goal ratios
#   2. batched-cost batched   issue 15: c(B), v(B) on real 2b/27b shapes, and the tiny pair's
#                             tokens/s against B on CUDA (both eager, a few minutes together)
#   3. batched-cost-compiled  issue 15: c(B), v(B) on the fast path (alone: six compiles)
#   4. compiled-2b-9b         2b and 9b: the same per model; 2b->9b round time; 9b self-draft
#   5. compiled-nf4           2b, 9b, 27b in NF4 (a bitsandbytes failure is recorded in "errors")
# Parts:
#   compiled-27b        27b: compiled greedy, HF dynamic/static, % of the bandwidth bound; 2b->27b round
#                       time, implied tok/s at alpha 0.6-0.9 and the goal ratios; 27b self-draft (5 shapes)
#   compiled-2b-9b      2b and 9b: the same per model; 2b->9b round time; 9b self-draft (6 shapes)
#   compiled-nf4        2b, 9b, 27b in NF4: weights, HF dynamic/static, compiled greedy where bitsandbytes
#                       allows (a failure is recorded in the JSON, "errors") (6 shapes)
#   compiled-self-9b / compiled-self-27b   the self-draft alone, if a part above skipped it (3 shapes)
# Eager parts (the measurements of 2026-11-24):
#   models-2b-9b   memory, step latency, HF greedy (dynamic, static cache): 2b and 9b, bf16 and NF4
#   models-27b     the same for 27b
#   pairs          ours vs HF assisted, 2b->9b and 2b->27b, bracketed at alpha~0 and alpha=1 (bf16)
#   tiny           python -m utils.bench on the tiny pair, gamma 1-8, T 0 and 1 (ran past 10 minutes on an H200)
# Batched speculative decoding (notebook 09):
#   batched-cost   c(B) and v(B) for B = 1..64 on real 2b and 27b Gemma2 shapes (random weights, bf16):
#                  batched-cost-2b-27b-cuda.json
#   batched        python -m utils.beyond batched on the tiny pair: tokens/s against B (batched-tiny-cuda.json)
#   batched-cost-compiled   the same c(B), v(B) also on the fast path (static cache, torch.compile, CUDA
#                  graphs): what v(B) is once launches no longer hide the hardware. Six compiles (target
#                  width 1 and gamma + 1, draft width 1; at B = 1 and once more general in B), so alone
#                  in a session (PART_TIMEOUT=550, timeout_s 600): batched-cost-2b-27b-cuda-compiled.json
# Tests:
#   cuda-tests     pytest tests/test_device.py on CUDA (float32): greedy = HF greedy for the eager, batched,
#                  adaptive, lookup, self-speculative and compiled (CUDA graphs) loops; sampling with a CPU
#                  generator follows the target; the compiled steps replay as CUDA graphs (no inductor
#                  skip heard); junit XML to $OUT/cuda-tests.xml
# Several parts in one call share the 600-s command: set PART_TIMEOUT so that their sum fits
# (`PART_TIMEOUT=270 bash scripts/gpu_run.sh batched-cost batched`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-data/results}"
BUDGET_S="${BUDGET_S:-400}"
PART_TIMEOUT="${PART_TIMEOUT:-550}"
PARTS="cuda-tests compiled-27b compiled-2b-9b compiled-nf4 compiled-self-9b compiled-self-27b models-2b-9b models-27b pairs tiny batched-cost batched batched-cost-compiled"

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; echo "parts: $PARTS"; }

command_for() {  # PART -> the python command (one word per line)
  local c=(python3 -m utils.shapes --compiled --out "$OUT" --tag "${1#compiled-}" --budget-s "$BUDGET_S")
  case "$1" in
    compiled-27b)      printf '%s\n' "${c[@]}" --sizes --pairs 2b:27b ;;
    compiled-2b-9b)    printf '%s\n' "${c[@]}" --sizes 2b --pairs 2b:9b ;;
    compiled-nf4)      printf '%s\n' "${c[@]}" --sizes 2b 9b 27b --quant nf4 --pairs ;;
    compiled-self-9b)  printf '%s\n' "${c[@]}" --sizes --pairs --self-draft 9b --no-hf-static ;;
    compiled-self-27b) printf '%s\n' "${c[@]}" --sizes --pairs --self-draft 27b --no-hf-static ;;
    models-2b-9b) printf '%s\n' python3 -m utils.shapes --sizes 2b 9b --pairs --out "$OUT" --tag "$1" ;;
    models-27b)   printf '%s\n' python3 -m utils.shapes --sizes 27b --pairs --out "$OUT" --tag "$1" ;;
    pairs)        printf '%s\n' python3 -m utils.shapes --sizes --pairs 2b:9b 2b:27b --out "$OUT" --tag "$1" ;;
    tiny)         printf '%s\n' python3 -m utils.bench --device cuda --gammas 1 2 4 8 --temperatures 0 1 --out "$OUT" ;;
    batched-cost) printf '%s\n' python3 -m utils.beyond batched-cost --shapes 2b:27b --device cuda --out "$OUT" ;;
    batched-cost-compiled) printf '%s\n' python3 -m utils.beyond batched-cost --compiled --shapes 2b:27b --device cuda --out "$OUT" ;;
    batched)      printf '%s\n' python3 -m utils.beyond batched --device cuda --out "$OUT" ;;
    cuda-tests)   printf '%s\n' python3 -m pytest -v -rs -o addopts= -p no:cacheprovider tests/test_device.py -k cuda --junitxml "$OUT/cuda-tests.xml" ;;
    *) return 1 ;;
  esac
}

print=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --list) echo "$PARTS" | tr ' ' '\n'; exit 0 ;;
  --print) print=1; shift ;;
  "") usage >&2; exit 2 ;;
esac
[ $# -ge 1 ] || { usage >&2; exit 2; }
if [ "$print" = 1 ] && [ $# -ne 1 ]; then echo "--print takes one part (got $#)" >&2; usage >&2; exit 2; fi
for part in "$@"; do  # every part checked before anything is installed
  if ! command_for "$part" >/dev/null; then echo "unknown part: $part" >&2; usage >&2; exit 2; fi
done
if [ "$print" = 1 ]; then command_for "$1" | paste -sd' '; exit 0; fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
cp -r .whl/site/. /tmp/site/
export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# fail in seconds, not after a model load, if the carried packages do not import
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__)"
python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" || echo "bitsandbytes does not import: the NF4 parts will fail" >&2
mkdir -p "$OUT"
status=0
for part in "$@"; do
  mapfile -t cmd < <(command_for "$part")
  echo "== part $part: ${cmd[*]}" >&2
  set +e
  timeout -k 20 "$PART_TIMEOUT" "${cmd[@]}"
  rc=$?
  set -e
  [ $rc -eq 124 ] && echo "part $part stopped at ${PART_TIMEOUT} s; its JSON in $OUT holds what was measured" >&2
  [ $status -ne 0 ] || status=$rc
done
ls -l "$OUT"
exit $status
