#!/usr/bin/env bash
# Python-side checks (scripts/checks/test_*.py; notebooks-export/negclip_h5.py is checked by
# scripts/checks/test_hdf5_store.py and test_shard_merge.py). Small packages (numpy,
# h5py, pytest) are always installed into the venv; torch comes only from a local CPU wheel (never a
# multi-GB download in CI), transformers from PyPI with the pinned versions, open_clip_torch and torchvision
# from PyPI without their dependencies into $VENV/open-clip-site (the open_clip parity check).
#
# Without torch the transformers checks skip, with a loud SKIPPED line. Under
# NEGCLIP_REQUIRE_PYTHON_CHECKS=1 (set by .ci/run) a check that does not run is a failure instead: no
# torch wheel, torch or transformers not importable, no check collected, any skipped or xfailed test
# (scripts/ci/pytest_require_checks.py turns pytest skips into failures; the junit counts are checked too).
#
# Ends with `python checks: passed P, failed F, skipped S` and, when NEGCLIP_CHECKS_COUNTS names a file,
# writes "P F S" into it (scripts/test.sh's summary). Exit status non-zero when F > 0.
# NEGCLIP_TORCH_WHEELS (default /opt/wheels) is where the wheel is looked for; NEGCLIP_VENV (default
# .venv) the virtual environment: point them elsewhere to try the no-torch path.
set -uo pipefail
cd "$(dirname "$0")/../.."
REQUIRE=${NEGCLIP_REQUIRE_PYTHON_CHECKS:-0}
VENV=${NEGCLIP_VENV:-.venv}
WHEELS=${NEGCLIP_TORCH_WHEELS:-/opt/wheels}
# open_clip and torchvision live here, outside the venv's site-packages (see below); the check reads the
# same default (sys.prefix/open-clip-site) unless NEGCLIP_OPEN_CLIP_SITE is set.
OPEN_CLIP_SITE=${NEGCLIP_OPEN_CLIP_SITE:-$VENV/open-clip-site}
PASSED=0 FAILED=0 SKIPPED=0

finish() {
    echo "python checks: passed $PASSED, failed $FAILED, skipped $SKIPPED"
    [[ -n ${NEGCLIP_CHECKS_COUNTS:-} ]] && echo "$PASSED $FAILED $SKIPPED" > "$NEGCLIP_CHECKS_COUNTS"
    ((FAILED == 0))
    exit $?
}
problem() {   # a failure that is not a test's: counted as one failed check
    echo "==================== FAILED: $1 ====================" >&2
    FAILED=$((FAILED + 1))
}

# cairosvg (the probe-layers SVG check) needs the cairo library from Debian.
need=()
for pkg in libcairo2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; } \
        || problem "apt-get install ${need[*]} failed"
fi
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" || { problem "cannot create the venv $VENV"; finish; }
PY=$VENV/bin/python
$PY -m pip install -q --disable-pip-version-check numpy h5py pytest safetensors==0.8.0 matplotlib nbformat scikit-learn cairosvg \
    || { problem "pip install of numpy h5py pytest ... failed"; finish; }
TORCH_WHEEL=$(ls "$WHEELS"/torch-*cpu*.whl 2>/dev/null | head -1 || true)
if [[ -n $TORCH_WHEEL ]]; then
    $PY -c "import torch" 2>/dev/null || $PY -m pip install -q --disable-pip-version-check "$TORCH_WHEEL" \
        || problem "pip install $TORCH_WHEEL failed"
    $PY -c "import transformers" 2>/dev/null || $PY -m pip install -q --disable-pip-version-check -r scripts/fixtures/requirements.txt \
        || problem "pip install -r scripts/fixtures/requirements.txt failed"
    # open_clip for scripts/checks/test_open_clip_parity.py (9 MB of wheels): --no-deps, since a --target
    # install resolves on its own and torchvision's torch==2.13.0 would put a second torch (PyPI's CUDA
    # build) into the folder (open_clip's other imports, regex tqdm safetensors huggingface_hub numpy
    # pillow, come from the venv; timm is optional), and --target beside the venv, not in it: with torchvision
    # importable, transformers' image processors switch to it and its compiled operators do not load
    # beside the CPU torch. Only the check's open_clip subprocess puts this folder on its path.
    [[ -d $OPEN_CLIP_SITE/open_clip_torch-3.3.0.dist-info && -d $OPEN_CLIP_SITE/torchvision-0.28.0.dist-info ]] \
        || $PY -m pip install -q --disable-pip-version-check --no-deps --upgrade --target "$OPEN_CLIP_SITE" \
            open_clip_torch==3.3.0 torchvision==0.28.0 ftfy==6.3.1 wcwidth==0.7.0 \
        || problem "pip install --no-deps --target $OPEN_CLIP_SITE open_clip_torch==3.3.0 torchvision==0.28.0 ... failed"
fi
if ! $PY -c "import torch, transformers" 2>/dev/null; then
    if [[ $REQUIRE == 1 ]]; then
        problem "torch/transformers not importable in $VENV (torch CPU wheel: ${TORCH_WHEEL:-none in $WHEELS/torch-*cpu*.whl}); NEGCLIP_REQUIRE_PYTHON_CHECKS=1 needs the transformers checks"
    else
        echo "==================== SKIPPED: no torch CPU wheel found ($WHEELS/torch-*cpu*.whl); transformers checks not run ===================="
    fi
fi

shopt -s nullglob
tests=(scripts/checks/test_*.py)
if ((${#tests[@]} == 0)); then
    if [[ $REQUIRE == 1 ]]; then problem "no Python checks found (scripts/checks/test_*.py)"; else echo "python checks: none yet"; fi
    finish
fi
JUNIT=$(mktemp)
trap 'rm -f "$JUNIT"' EXIT
PYTHONPATH=scripts/ci${PYTHONPATH:+:$PYTHONPATH} $PY -m pytest -q -rs -p pytest_require_checks \
    --continue-on-collection-errors --junitxml="$JUNIT" "${tests[@]}"
rc=$?
# Counts from the junit report: one testcase per test, plus one per module that failed or skipped at
# collection. failure/error -> failed, skipped (skip or xfail) -> skipped, otherwise passed.
if counts=$($PY scripts/ci/junit_counts.py "$JUNIT"); then
    read -r p f s <<< "$counts"
    PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) SKIPPED=$((SKIPPED + s))
else
    problem "pytest wrote no readable junit report (exit status $rc)"
fi
if ((rc == 5)); then
    # pytest: no tests collected.
    if [[ $REQUIRE == 1 ]]; then problem "pytest collected no checks from ${tests[*]}"; else echo "python checks: pytest collected none"; fi
elif ((rc != 0 && FAILED == 0)); then
    problem "pytest exited with status $rc without a failed check (internal or usage error)"
fi
if [[ $REQUIRE == 1 ]] && ((SKIPPED > 0)); then
    problem "$SKIPPED checks skipped under NEGCLIP_REQUIRE_PYTHON_CHECKS=1"
fi
finish
