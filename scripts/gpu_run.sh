#!/usr/bin/env bash
# The command a GPU session gives the device tool (carry [".whl"], made by scripts/gpu_prepare.sh).
# Each part fits one 10-minute command; results land in $OUT (the device tool brings them back), to be
# copied to data/results/ here (a part that runs out of time splits further: utils.shapes --sizes 2b). Parts:
#   models-2b-9b   memory, step latency, HF greedy (dynamic, static cache): 2b and 9b, bf16 and NF4
#   models-27b     the same for 27b
#   pairs          ours vs HF assisted, 2b->9b and 2b->27b, bracketed at alpha~0 and alpha=1 (bf16)
#   tiny           python -m utils.bench on the tiny pair, gamma 1-8, T 0 and 1
set -euo pipefail
cd "$(dirname "$0")/.."
part="${1:?which part: models-2b-9b | models-27b | pairs | tiny}"
OUT="${OUT:-data/results}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
cp -r .whl/site/. /tmp/site/
export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, bitsandbytes as b; print(torch.__version__, transformers.__version__, b.__version__)"
case "$part" in
  models-2b-9b) python3 -m utils.shapes --sizes 2b 9b --pairs --out "$OUT" --tag "$part" ;;
  models-27b)   python3 -m utils.shapes --sizes 27b --pairs --out "$OUT" --tag "$part" ;;
  pairs)        python3 -m utils.shapes --sizes --pairs 2b:9b 2b:27b --out "$OUT" --tag "$part" ;;
  tiny)         python3 -m utils.bench --device cuda --gammas 1 2 4 8 --temperatures 0 1 --out "$OUT" ;;
  *) echo "unknown part: $part" >&2; exit 2 ;;
esac
