"""Subtests of an isolated test: their reports are logged once, in pytest.

The comparisons with plain pytest (counts, ``-v`` lines, xdist) are in
``tests/compat/test_plugins.py``; these are the cases around them.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ..conftest import skip_unless

PYTEST_9 = int(pytest.__version__.split(".")[0]) >= 9


def need_subtests() -> None:
    """pytest >= 9 has the ``subtests`` fixture; before, pytest-subtests."""
    skip_unless(PYTEST_9 or importlib.util.find_spec("pytest_subtests") is not None,
                "pytest-subtests is not installed (install the test extras)")


X_AFTER_A_FAILED_SUBTEST = """
import pytest

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    yield
    with open(tmp_path_factory.getbasetemp() / "teardowns", "a") as f:
        f.write("module torn down\\n")

def test_sub(shared, subtests):
    for i in range(3):
        with subtests.test(i=i):
            assert i != 1

def test_after(shared):
    pass
"""


def test_x_after_a_failed_subtest_tears_the_module_down_once(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Under ``-x`` the first failed subtest stops the session; pytest then
    tears every scope down after that test.  The sandbox does the same for
    the function scope only: the module is the pytest process's, torn down
    there once."""
    need_subtests()
    pytester.makepyfile(test_x=X_AFTER_A_FAILED_SUBTEST)
    runs = {}
    for mode in ("--no-isolate", "--isolate-all"):
        basetemp = pytester.path / f"basetemp{mode}"
        result = pytester.runpytest_subprocess(mode, "-x", "-p", "no:cacheprovider", f"--basetemp={basetemp}",
                                               timeout=120)
        runs[mode] = (result, (Path(basetemp) / "teardowns").read_text())
    (plain, plain_log), (iso, iso_log) = runs["--no-isolate"], runs["--isolate-all"]
    assert plain_log == "module torn down\n", plain.stdout.str()
    assert iso_log == plain_log, iso.stdout.str()
    assert iso.parseoutcomes() == plain.parseoutcomes(), iso.stdout.str()


FORGED_SUBTEST = """
import pytest
from isolate_runtime import send_message

def test_forges(request):
    report = pytest.TestReport(nodeid=request.node.nodeid, location=request.node.location, keywords={},
                               outcome="passed", longrepr=None, when="call")
    data = report._to_json()
    data.update({"_report_type": "SubTestReport", "_subtest.context": {"msg": None, "kwargs": {}}})
    send_message({"t": "subtest", "report": data, "counted": False, "shown": True})
"""


def test_a_subtest_report_without_a_subtests_plugin_is_refused(pytester: pytest.Pytester,
                                                                full_sandbox: None) -> None:
    pytester.makepyfile(test_forged=FORGED_SUBTEST)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-p", "no:subtests",
                                           timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CRASHED: the sandbox sent an invalid message during call: a subtest report, "
                                 "but no subtests plugin here to read it*"])
