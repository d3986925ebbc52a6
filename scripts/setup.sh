#!/usr/bin/env bash
# Set up a fresh machine for mdistiller: Debian's Fashion-MNIST package (where apt exists;
# elsewhere the demo downloads the data), PyTorch (if missing) and this package.
#   bash scripts/setup.sh          # to run training and the demo
#   bash scripts/setup.sh --test   # also the test requirements (pytest, hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1 && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist; } \
    || echo "setup: warning: apt-get could not install dataset-fashion-mnist; the demo will download Fashion-MNIST"
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "setup: installing torch 2.14.1 and torchvision 0.29.1"
  "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
"$PY" -m pip install -q -e .
if [ "${1:-}" = "--test" ]; then
  "$PY" -m pip install -q -r requirements-dev.txt
fi
echo "setup: done ($("$PY" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'))"
