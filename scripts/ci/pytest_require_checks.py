"""pytest plugin loaded by scripts/ci/python_checks.sh (`-p pytest_require_checks`).

Under NEGCLIP_REQUIRE_PYTHON_CHECKS=1 (set by .ci/run) a check that does not run is a failure: a skipped
test (pytest.skip, a skip mark, importorskip inside a test), a skipped module (importorskip at import
time), and an xfail are reported as failed, with the skip reason. Without the variable nothing changes:
skips stay skips and scripts/test.sh counts them as skipped.
"""
import os

import pytest

REQUIRED = os.environ.get("NEGCLIP_REQUIRE_PYTHON_CHECKS") == "1"


def _fail(report, what):
    longrepr = report.longrepr
    # A skip's longrepr is (path, line, reason); an xfail's reason is in `wasxfail`.
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else getattr(report, "wasxfail", longrepr)
    report.outcome = "failed"
    if hasattr(report, "wasxfail"):
        del report.wasxfail   # else the junit report still files it as skipped
    report.longrepr = f"{what} under NEGCLIP_REQUIRE_PYTHON_CHECKS=1 (CI requires every check to run): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRED and report.skipped:
        _fail(report, "xfail" if hasattr(report, "wasxfail") else "skipped")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if REQUIRED and report.skipped:
        _fail(report, "module skipped")


def pytest_report_header(config):
    if REQUIRED:
        return "NEGCLIP_REQUIRE_PYTHON_CHECKS=1: skips and xfails count as failures"
