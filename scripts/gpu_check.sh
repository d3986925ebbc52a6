#!/usr/bin/env bash
# One command for the first GPU: the CUDA-only tests against the CPU, the SLD step's speed
# (fp32, bf16, compiled, CUDA graphs; batch 64 and 256), the input pipeline, a 240-epoch
# projection, as a table and JSON (output/gpu_check/). Without CUDA: a short CPU dry mode.
#   bash scripts/gpu_check.sh                  # auto: CUDA when present, else the dry mode
#   bash scripts/gpu_check.sh --out a.json     # where the JSON goes; --dry, --skip-tests, --skip-speed
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-disabled}"
exec "${PYTHON:-python3}" -c 'import sys; from mdistiller.cli.gpu_check import main; sys.exit(main(sys.argv[1:]))' "$@"
