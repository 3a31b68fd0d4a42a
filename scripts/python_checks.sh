#!/usr/bin/env bash
# Python-side checks. Small packages (numpy, h5py) are always installed into .venv; torch comes
# only from a local CPU wheel (never a multi-GB download in CI): without it the torch checks print
# a loud SKIPPED line.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
# cairosvg (the probe-layers SVG check) needs the cairo library from Debian.
need=()
for pkg in libcairo2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
PY=$VENV/bin/python
$PY -m pip install -q --disable-pip-version-check numpy h5py pytest safetensors==0.8.0 matplotlib nbformat scikit-learn cairosvg
TORCH_WHEEL=$(ls /opt/wheels/torch-*cpu*.whl 2>/dev/null | head -1 || true)
if [[ -n "$TORCH_WHEEL" ]]; then
    $PY -c "import torch" 2>/dev/null || $PY -m pip install -q --disable-pip-version-check "$TORCH_WHEEL"
    $PY -c "import transformers" 2>/dev/null || $PY -m pip install -q --disable-pip-version-check -r scripts/requirements-fixtures.txt
else
    echo "==================== SKIPPED: no torch CPU wheel found (/opt/wheels/torch-*cpu*.whl); transformers checks not run ===================="
fi
shopt -s nullglob
tests=(scripts/checks/test_*.py notebooks-export/test_*.py)
if ((${#tests[@]})); then
    $PY -m pytest -q "${tests[@]}"
else
    echo "python checks: none yet"
fi
