#!/usr/bin/env bash
# The test command of the README: installs what is missing, runs the Swift suite, then the
# Python checks (h5py readers; transformers loading our checkpoints when a torch wheel is available).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
swift build --build-tests
swift test --skip-build --disable-xctest
scripts/python_checks.sh
