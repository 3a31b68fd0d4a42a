#!/usr/bin/env bash
# The test command of the README: installs what is missing, builds, runs the Swift suite, then the Python
# checks (scripts/ci/python_checks.sh: h5py/safetensors readers of our files; transformers parity when a torch
# wheel is available). Both run even when the first fails. Ends with two lines:
#   tests: Swift N run (F failed, S skipped); Python N run (F failed, S skipped)
#   summary: P passed, F failed, S skipped
# (Swift tests + Python checks; a failed step such as the build counts as one failed test). Exit status
# non-zero when anything failed. .ci/run sets NEGCLIP_REQUIRE_PYTHON_CHECKS=1: a Python check that does not
# run (no torch wheel, a skip) is then a failure (see scripts/ci/python_checks.sh).
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

# Counts from Swift Testing's xunit report (one testcase per test; <failure> = failed, <skipped> =
# skipped), not from the console: through a pipe, Swift Testing's per-test lines can go missing (seen with
# `| tee`: 177 of 271 "passed" lines arrived). No report (a crash) or a non-zero exit status without a
# failed test counts as one failure.
# Suites run in parallel in one process and OpenBLAS's thread count is process-global: the sweep and the
# probe fits set it to 1 while they run (and restore it), which would change the rounding of whatever another
# suite computes at that moment. One thread for the whole suite keeps every test's numbers independent of
# which others run beside it (the byte-identical resume tests need that).
OPENBLAS_NUM_THREADS=1 swift test --skip-build --disable-xctest --xunit-output "$LOGS/swift.xml"
rc=$?
report=$LOGS/swift.xml
[[ -s $LOGS/swift-swift-testing.xml ]] && report=$LOGS/swift-swift-testing.xml   # SwiftPM's name when XCTest also writes one
if [[ -s $report ]] && counts=$(python3 scripts/ci/junit_counts.py "$report"); then
    read -r SWIFT_PASSED SWIFT_FAILED SWIFT_SKIPPED <<< "$counts"
    ((rc != 0 && SWIFT_FAILED == 0)) && problem "swift test exited with status $rc without a failed test"
else
    problem "swift test wrote no readable xunit report (exit status $rc)"
fi

NEGCLIP_CHECKS_COUNTS="$LOGS/python.txt" scripts/ci/python_checks.sh
rc=$?
if [[ -s $LOGS/python.txt ]]; then
    read -r PY_PASSED PY_FAILED PY_SKIPPED < "$LOGS/python.txt"
fi
if ((rc != 0 && PY_FAILED == 0)); then
    echo "==================== FAILED: scripts/ci/python_checks.sh (exit status $rc) ====================" >&2
    PY_FAILED=1
fi
summary
