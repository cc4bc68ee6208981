#!/usr/bin/env bash
# The command a GPU session gives the device tool (carry [".whl"], made by scripts/gpu_prepare.sh):
#   bash scripts/gpu_run.sh PART[@S] [PART[@S]...]   parts in order, each under its own `timeout`: S
#                                            seconds if given, else the time left of TOTAL_S (default
#                                            570: the device tool's 600-s command, less a margin)
#                                            capped at PART_TIMEOUT
#   bash scripts/gpu_run.sh --print PART     the command it runs (nothing installed or run)
#   bash scripts/gpu_run.sh --list           the parts
# Results land in $OUT (the device tool brings them back), to be copied to data/results/ here
# (compiled parts: shapes-compiled-cuda-<part without "compiled-">.json). Every compiled part writes
# its JSON after each step, starts no compiling step after BUDGET_S seconds (default: its timeout less
# 150 s, the longest compile seen; steps that compile nothing, a pair's rounds and HF's eager generate,
# still run) and is stopped by `timeout` at its time (installing takes ~15 s, once per machine): what it
# measured stays, skipped steps are listed. The JSON's meta has the GPU name and torch/transformers/bnb
# versions. Each part's output is also kept in $OUT/PART.log (the device tool shows only the tail).
# Compiling one shape took 60-130 s on an H200 in a probe: a part compiles at most 6 (utils.fast engines
# + HF static generate; --print PART, then add --dry-run, lists them). Order inside a part: what the goals
# need first (compiled greedy, HF dynamic, the pair's rounds), then HF static of the pair's target, then
# the self-draft, so a budget cut drops the tail.
# A task that is lent a GPU gets 15 minutes of device time in all, the machine's start (1-2 min)
# included, and the machine goes back 30 s after a call: ONE call per session (timeout_s 600). Not yet
# run, in order of what they decide (a later session takes the first one that has no committed JSON):
#   0. cuda-tests             first, in every GPU session until it has passed once (7 passed, 0 skipped),
#                             in the same call as the compiled part below:
#                             `bash scripts/gpu_run.sh cuda-tests@240 compiled-27b` (timeout_s 600;
#                             compiled-27b gets the rest, about 310 s, and stops compiling 150 s before):
#                             tests/test_device.py on CUDA (7 passed, 0 skipped), the notebooks' calls with the tiny pair on
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
# Several parts in one call share the 600-s command: give the earlier ones their seconds, the last
# one gets the rest (`bash scripts/gpu_run.sh batched-cost@270 batched`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-data/results}"
TOTAL_S="${TOTAL_S:-570}"
PART_TIMEOUT="${PART_TIMEOUT:-550}"
PARTS="cuda-tests compiled-27b compiled-2b-9b compiled-nf4 compiled-self-9b compiled-self-27b models-2b-9b models-27b pairs tiny batched-cost batched batched-cost-compiled"

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; echo "parts: $PARTS"; }

command_for() {  # PART [BUDGET] -> the python command (one word per line)
  local c=(python3 -m utils.shapes --compiled --device cuda --out "$OUT" --tag "${1#compiled-}" --budget-s "${2:-400}")
  case "$1" in
    compiled-27b)      printf '%s\n' "${c[@]}" --sizes --pairs 2b:27b ;;
    compiled-2b-9b)    printf '%s\n' "${c[@]}" --sizes 2b --pairs 2b:9b ;;
    compiled-nf4)      printf '%s\n' "${c[@]}" --sizes 2b 9b 27b --quant nf4 --pairs ;;
    compiled-self-9b)  printf '%s\n' "${c[@]}" --sizes --pairs --self-draft 9b --no-hf-static ;;
    compiled-self-27b) printf '%s\n' "${c[@]}" --sizes --pairs --self-draft 27b --no-hf-static ;;
    models-2b-9b) printf '%s\n' python3 -m utils.shapes --device cuda --sizes 2b 9b --pairs --out "$OUT" --tag "$1" ;;
    models-27b)   printf '%s\n' python3 -m utils.shapes --device cuda --sizes 27b --pairs --out "$OUT" --tag "$1" ;;
    pairs)        printf '%s\n' python3 -m utils.shapes --device cuda --sizes --pairs 2b:9b 2b:27b --out "$OUT" --tag "$1" ;;
    tiny)         printf '%s\n' python3 -m utils.bench --device cuda --gammas 1 2 4 8 --temperatures 0 1 --out "$OUT" ;;
    batched-cost) printf '%s\n' python3 -m utils.beyond batched-cost --shapes 2b:27b --device cuda --out "$OUT" ;;
    batched-cost-compiled) printf '%s\n' python3 -m utils.beyond batched-cost --compiled --shapes 2b:27b --device cuda --out "$OUT" ;;
    batched)      printf '%s\n' python3 -m utils.beyond batched --device cuda --out "$OUT" ;;
    cuda-tests)   printf '%s\n' python3 -m pytest -v -rs -o addopts= -o faulthandler_timeout=150 -p no:cacheprovider tests/test_device.py -k cuda --junitxml "$OUT/cuda-tests.xml" ;;
    *) return 1 ;;
  esac
}

WHL="${SPECDEC_WHL:-.whl}"  # the carried wheels (tests point it at an empty folder)
carried_hash() {  # what this call carried in $WHL/ (a digest of every file), to install it once per machine
  { { find "$WHL" -type f 2>/dev/null || true; } | LC_ALL=C sort | while IFS= read -r f; do echo "$f"; cat "$f"; done; } \
    | sha256sum | cut -c1-16
}

print=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --list) echo "$PARTS" | tr ' ' '\n'; exit 0 ;;
  --carried) carried_hash; exit 0 ;;
  --print) print=1; shift ;;
  "") usage >&2; exit 2 ;;
esac
[ $# -ge 1 ] || { usage >&2; exit 2; }
if [ "$print" = 1 ] && [ $# -ne 1 ]; then echo "--print takes one part (got $#)" >&2; usage >&2; exit 2; fi
for spec in "$@"; do  # every part checked before anything is installed
  part="${spec%@*}"
  if ! command_for "$part" >/dev/null; then echo "unknown part: $part" >&2; usage >&2; exit 2; fi
  if [ "$spec" != "$part" ] && ! { [[ "${spec##*@}" =~ ^[1-9][0-9]*$ ]] && [ "${spec##*@}" -ge 60 ]; }; then
    echo "$spec: the seconds after @ must be a whole number of at least 60 (e.g. cuda-tests@240)" >&2; exit 2
  fi
done
budget_for() {  # a part's seconds -> when its last compiling step may start (BUDGET_S if set)
  echo "${BUDGET_S:-$(($1 > 210 ? $1 - 150 : 60))}"
}
if [ "$print" = 1 ]; then
  t=$([ "$1" != "${1%@*}" ] && echo "${1##*@}" || echo "$PART_TIMEOUT")
  command_for "${1%@*}" "$(budget_for "$t")" | paste -sd' '; exit 0
fi

SITE="${SPECDEC_SITE:-/tmp/site}"  # where the carried wheels are installed, ahead of the image's packages
carried=$(carried_hash)
if [ "$(cat "$SITE/.specdec-installed" 2>/dev/null)" != "$carried" ]; then  # once per machine and carried set
  if ! ls "$WHL"/*.whl >/dev/null 2>&1; then
    echo "no wheels in $WHL/: run 'bash scripts/gpu_prepare.sh' first (on a machine that reaches the package index) and carry $WHL" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
  cp -r "$WHL"/site/. "$SITE/"
  echo "$carried" > "$SITE/.specdec-installed"
fi
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi failed (a driver problem?)" >&2
else
  echo "nvidia-smi: not found (no NVIDIA driver?)" >&2
fi
# fail in seconds, not after a model load, if the carried packages do not import or torch sees no GPU
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__)"
python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || { echo "torch sees no CUDA GPU: every part needs one" >&2; exit 3; }
python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" || echo "bitsandbytes does not import: the NF4 parts will fail" >&2
mkdir -p "$OUT"
status=0
for spec in "$@"; do
  part="${spec%@*}"
  left=$((TOTAL_S - SECONDS))
  if [ "$spec" != "$part" ]; then t="${spec##*@}"; else t=$((left < PART_TIMEOUT ? left : PART_TIMEOUT)); fi
  [ "$t" -le "$left" ] || t=$left
  if [ "$t" -lt 60 ]; then
    echo "part $part not started: ${left} s left of TOTAL_S=${TOTAL_S}" >&2
    [ $status -ne 0 ] || status=124
    continue
  fi
  mapfile -t cmd < <(command_for "$part" "$(budget_for "$t")")  # no compiling step starts after the budget
  echo "== part $part (timeout ${t} s): ${cmd[*]}" >&2
  set +e
  timeout -k 20 "$t" "${cmd[@]}" > >(tee "$OUT/$part.log") 2>&1
  rc=$?
  set -e
  [ $rc -eq 124 ] && echo "part $part stopped at ${t} s; its JSON in $OUT holds what was measured" >&2
  [ $status -ne 0 ] || status=$rc
done
ls -l "$OUT"
exit $status
