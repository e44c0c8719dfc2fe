#!/usr/bin/env bash
# Install sm_dream (editable, with the `dev` extra) and its dependencies into a Python environment.
#   scripts/install.sh PYTHON lock     exact versions of requirements/lock.txt (make install, CI)
#   scripts/install.sh PYTHON latest   the newest releases that setup.cfg allows (make test-latest)
#   scripts/install.sh PYTHON oldest   setup.cfg's lower bounds, requirements/oldest.txt (make test-oldest)
# torch comes first from scripts/install_torch.sh (CPU build where there is no NVIDIA GPU) and is
# then held: the newest torch on PyPI is a CUDA build of several GB, so `latest` keeps the lock's torch.
set -euo pipefail
PY=$1
MODE=${2:-lock}
HERE=$(cd "$(dirname "$0")/.." && pwd)
"$HERE/scripts/install_torch.sh" "$PY"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Hold whatever torch is installed now (its build included), whichever mode.
"$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$work/torch.txt"
case "$MODE" in
  lock)
    grep -v '^torch==' "$HERE/requirements/lock.txt" > "$work/constraints.txt"
    cat "$work/torch.txt" >> "$work/constraints.txt"
    "$PY" -m pip install -q -c "$work/constraints.txt" -e "$HERE[dev]" ;;
  latest)
    "$PY" -m pip install -q --upgrade --upgrade-strategy eager -c "$work/torch.txt" -e "$HERE[dev]" ;;
  oldest)
    cat "$HERE/requirements/oldest.txt" "$work/torch.txt" > "$work/constraints.txt"
    "$PY" -m pip install -q -c "$work/constraints.txt" -e "$HERE[dev]" ;;
  *)
    echo "install.sh: unknown mode '$MODE' (lock, latest or oldest)" >&2; exit 2 ;;
esac
"$PY" -m pip check
