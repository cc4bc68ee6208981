#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what a session with a GPU carries to the device machine: the
# pinned transformers and bitsandbytes, which the device's image lacks or has in another version.
# Everything goes to .whl/ (ignored by git). The working tree travels too (about 31 MB, mostly the
# tiny pair) and the limit is 64 MiB, so bitsandbytes keeps only the library for the device's CUDA
# (CUDA=130 by default: torch 2.11+cu130 there) and is carried unpacked.
#
#   bash scripts/gpu_prepare.sh            # then, with the device tool: carry [".whl"] and run
#   bash scripts/gpu_run.sh compiled-27b   # (and the other parts: bash scripts/gpu_run.sh --list)
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA="${CUDA:-130}"
PYVER="${PYVER:-3.12}"   # the device's python3
rm -rf .whl && mkdir -p .whl/site
mapfile -t reqs < <(grep -E "^(transformers|bitsandbytes)[<>=]" requirements.txt)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${reqs[@]}"
# bitsandbytes: unpack, keep the CPU library and the one CUDA library the device uses
python3 -m zipfile -e .whl/bitsandbytes-*.whl .whl/site
find .whl/site/bitsandbytes -name 'libbitsandbytes_*' ! -name 'libbitsandbytes_cpu.*' \
  ! -name "libbitsandbytes_cuda${CUDA}.*" -delete
rm .whl/bitsandbytes-*.whl
ls .whl/site/bitsandbytes/libbitsandbytes_cuda"${CUDA}".* >/dev/null  # fails if that CUDA has no library
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -sb .whl | cut -f1)
echo "carried .whl: $((carried / 1048576)) MiB; tracked tree: $((tree / 1048576)) MiB; limit 64 MiB"
[ $((tree + carried)) -lt $((64 * 1048576)) ] || { echo "too large for the device tool" >&2; exit 1; }
