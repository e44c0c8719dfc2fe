#!/usr/bin/env bash
# Install PyTorch into the given Python environment, choosing the build for this machine.
#   scripts/install_torch.sh PYTHON [VERSION]
# VERSION defaults to the torch pin of requirements/lock.txt. Then:
#   - TORCH_SPEC set: install exactly that (e.g. TORCH_SPEC="torch==2.9.1"), or keep any installed torch
#     with TORCH_SPEC=keep (GPU users with their own CUDA build);
#   - torch VERSION already installed (any build: +cpu, +cu128, ...): keep it;
#   - an NVIDIA GPU visible: torch==VERSION from PyPI (the CUDA build);
#   - otherwise the CPU build torch==VERSION+cpu (a local wheel house given by pip's find-links, or
#     PyTorch's CPU index), which avoids several GB of CUDA wheels.
set -euo pipefail
PY=${1:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
VERSION=${2:-$(sed -n 's/^torch==\([^ +]*\).*/\1/p' "$HERE/requirements/lock.txt")}
[ -n "$VERSION" ] || { echo "install_torch: no torch pin in requirements/lock.txt" >&2; exit 1; }
installed=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [ "${TORCH_SPEC:-}" = keep ] && [ -n "$installed" ]; then
  echo "install_torch: keeping torch $installed (TORCH_SPEC=keep)"
elif [ -n "${TORCH_SPEC:-}" ] && [ "${TORCH_SPEC}" != keep ]; then
  "$PY" -m pip install -q "$TORCH_SPEC"
elif [ "${installed%%+*}" = "$VERSION" ]; then
  echo "install_torch: keeping torch $installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==$VERSION"
else
  "$PY" -m pip install -q "torch==$VERSION+cpu" 2>/dev/null \
    || "$PY" -m pip install -q "torch==$VERSION" --index-url https://download.pytorch.org/whl/cpu
fi
