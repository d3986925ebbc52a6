#!/usr/bin/env bash
# One command for the first GPU: the CUDA-only tests against the CPU, the SLD step's speed
# (fp32, bf16, compiled, CUDA graphs; batch 64 and 256), the input pipelines (CIFAR-shaped,
# and ImageNet's DATASET.DECODE cpu/device beside the reference's), a 240-epoch projection,
# printed as measured and as JSON (output/gpu_check/). Without CUDA: a short CPU dry mode.
# Works after `bash scripts/setup.sh` or with only torch: it installs the test requirements
# (requirements-dev.txt) when they are missing, or says in one line why it cannot (exit 2).
#   bash scripts/gpu_check.sh                  # auto: CUDA when present, else the dry mode
#   bash scripts/gpu_check.sh --out a.json     # where the JSON goes; --dry, --skip-tests, --skip-speed, --budget S
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-disabled}"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "error: gpu_check needs torch and torchvision ($PY cannot import them); run: bash scripts/setup.sh" >&2
  exit 2
fi
if ! "$PY" -c "import pytest, hypothesis, mdistiller.cli.gpu_check" >/dev/null 2>&1; then
  echo "gpu_check: installing the test requirements (pip install -r requirements-dev.txt)"
  log="$(mktemp)"
  if ! "$PY" -m pip install -q -r requirements-dev.txt >"$log" 2>&1 \
     || ! "$PY" -c "import pytest, hypothesis, mdistiller.cli.gpu_check" >>"$log" 2>&1; then
    why="$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-200)"
    rm -f "$log"
    echo "error: gpu_check could not install its test requirements with '$PY -m pip install -r requirements-dev.txt' (${why:-no output}); install them yourself (bash scripts/setup.sh --test) and run it again" >&2
    exit 2
  fi
  rm -f "$log"
fi
exec "$PY" -c 'import sys; from mdistiller.cli.gpu_check import main; sys.exit(main(sys.argv[1:]))' "$@"
