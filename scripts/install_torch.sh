#!/usr/bin/env bash
# Install PyTorch into the given Python environment, choosing the build for this machine:
#   - torch already importable: keep it (GPU users keep their CUDA build);
#   - TORCH_SPEC set: install exactly that (e.g. TORCH_SPEC="torch==2.9.1");
#   - an NVIDIA GPU visible: the default (CUDA) build from PyPI;
#   - otherwise: the CPU build, which avoids several GB of CUDA wheels.
set -euo pipefail
PY=${1:-python3}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "install_torch: keeping $("$PY" -c 'import torch; print(torch.__version__)')"
  exit 0
fi
if [ -n "${TORCH_SPEC:-}" ]; then
  "$PY" -m pip install -q "$TORCH_SPEC"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch>=2.4"
else
  # A local wheel house (find-links) may hold the CPU build; otherwise PyTorch's CPU index.
  "$PY" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || "$PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
