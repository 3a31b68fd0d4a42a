#!/usr/bin/env bash
# The test command of the README: installs what is missing, builds, runs the Swift suite, then the Python
# checks (scripts/python_checks.sh: h5py/safetensors readers of our files; transformers parity when a torch
# wheel is available). Both run even when the first fails. Ends with two lines:
#   tests: Swift N run (F failed, S skipped); Python N run (F failed, S skipped)
#   summary: P passed, F failed, S skipped
# (Swift tests + Python checks; a failed step such as the build counts as one failed test). Exit status
# non-zero when anything failed. .ci/run sets NEGCLIP_REQUIRE_PYTHON_CHECKS=1: a Python check that does not
# run (no torch wheel, a skip) is then a failure (see scripts/python_checks.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
SWIFT_PASSED=0 SWIFT_FAILED=0 SWIFT_SKIPPED=0 PY_PASSED=0 PY_FAILED=0 PY_SKIPPED=0

summary() {
    local swift_run=$((SWIFT_PASSED + SWIFT_FAILED + SWIFT_SKIPPED)) py_run=$((PY_PASSED + PY_FAILED + PY_SKIPPED))
    local failed=$((SWIFT_FAILED + PY_FAILED))
    echo "tests: Swift $swift_run run ($SWIFT_FAILED failed, $SWIFT_SKIPPED skipped); Python $py_run run ($PY_FAILED failed, $PY_SKIPPED skipped)"
    echo "summary: $((SWIFT_PASSED + PY_PASSED)) passed, $failed failed, $((SWIFT_SKIPPED + PY_SKIPPED)) skipped"
    ((failed == 0))
    exit $?
}
problem() {   # a failed step that is not a test: one failed test in the summary
    echo "==================== FAILED: $1 ====================" >&2
    SWIFT_FAILED=$((SWIFT_FAILED + 1))
}

scripts/bootstrap.sh || { problem "scripts/bootstrap.sh"; summary; }
swift build --build-tests || { problem "swift build --build-tests"; summary; }

# Swift Testing prints one line per test ("<symbol> Test name() passed after ...", "... failed after ...",
# "... skipped") and a closing "Test run with N tests in M suites passed/failed". The three counts must
# add up to N, otherwise (a crash, a changed format) the run counts as failed.
swift test --skip-build --disable-xctest 2>&1 | tee "$LOGS/swift.txt"
rc=${PIPESTATUS[0]}
total=$(sed -nE 's/.*Test run with ([0-9]+) tests? in [0-9]+ suites? (passed|failed).*/\1/p' "$LOGS/swift.txt" | tail -1)
tests=$(grep -E '^[^ ]+ Test ' "$LOGS/swift.txt" | grep -v ' Test run with ' || true)
SWIFT_PASSED=$(grep -cE ' passed after [0-9.]+ seconds' <<< "$tests" || true)
SWIFT_FAILED=$(grep -cE ' failed after [0-9.]+ seconds' <<< "$tests" || true)
SWIFT_SKIPPED=$(grep -cE '^[^ ]+ Test .* skipped(:|\.|$)' <<< "$tests" || true)
if [[ -z $total ]]; then
    problem "swift test printed no 'Test run with N tests' line (exit status $rc)"
elif ((SWIFT_PASSED + SWIFT_FAILED + SWIFT_SKIPPED != total)); then
    problem "swift test: counted $SWIFT_PASSED passed + $SWIFT_FAILED failed + $SWIFT_SKIPPED skipped, but it ran $total"
elif ((rc != 0 && SWIFT_FAILED == 0)); then
    problem "swift test exited with status $rc without a failed test"
fi

NEGCLIP_CHECKS_COUNTS="$LOGS/python.txt" scripts/python_checks.sh
rc=$?
if [[ -s $LOGS/python.txt ]]; then
    read -r PY_PASSED PY_FAILED PY_SKIPPED < "$LOGS/python.txt"
fi
if ((rc != 0 && PY_FAILED == 0)); then
    echo "==================== FAILED: scripts/python_checks.sh (exit status $rc) ====================" >&2
    PY_FAILED=1
fi
summary
