"""Shared by the Python checks: where the built `negclip` binary is.

.build/debug/negclip, or $NEGCLIP_SCRATCH_PATH/debug/negclip when the build used another scratch
path. A missing binary skips the check with a SKIPPED line, which CI (NEGCLIP_REQUIRE_PYTHON_CHECKS=1)
counts as a failure.
"""
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def negclip_binary():
    scratch = os.environ.get("NEGCLIP_SCRATCH_PATH", os.path.join(ROOT, ".build"))
    path = os.path.join(scratch, "debug", "negclip")
    if not os.access(path, os.X_OK):
        pytest.skip(f"SKIPPED: {path} not built (swift build, or set NEGCLIP_SCRATCH_PATH)")
    return path
