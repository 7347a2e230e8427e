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


UNITTEST_SUBTESTS = """
import unittest

class TestCase(unittest.TestCase):
    def test_subtest(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 2)
"""


def _subtest_lines(result: pytest.RunResult) -> "list[str]":
    return [line.split("[")[0].rstrip() for line in result.stdout.lines if line.startswith("test_unit.py::")]


@pytest.mark.parametrize("capture", ["-s", "--capture=sys", "--capture=fd"])
def test_a_unittest_subtests_lines_show_as_in_process(pytester: pytest.Pytester, full_sandbox: None,
                                                      capture: str) -> None:
    """``unittest`` logs a subtest while capture is on: under fd capture what
    the terminal prints for it is captured with the test's output, under
    ``-s`` or sys capture it is on the terminal; once either way."""
    need_subtests()
    pytester.makepyfile(test_unit=UNITTEST_SUBTESTS)
    plain = pytester.runpytest_subprocess("--no-isolate", "-v", capture, "-p", "no:cacheprovider", timeout=120)
    iso = pytester.runpytest_subprocess("--isolate-all", "-v", capture, "-p", "no:cacheprovider", timeout=120)
    assert any("SUBFAIL" in line for line in plain.stdout.lines) or capture == "--capture=fd", plain.stdout.str()
    assert _subtest_lines(iso) == _subtest_lines(plain), iso.stdout.str()
    assert iso.parseoutcomes() == plain.parseoutcomes()


NESTED = """
import json
import time

def test_nested(subtests):
    with subtests.test("outer"):
        with subtests.test("inner"):
            time.sleep(1.0)
        time.sleep(0.2)
"""

DURATIONS = """
import json

def pytest_runtest_logreport(report):
    context = getattr(report, "context", None)
    if context is not None:
        with open("durations.jsonl", "a") as f:
            f.write(json.dumps([context.msg, report.duration]) + "\\n")
"""


def test_a_nested_subtest_keeps_the_time_of_the_one_inside_it(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Subtests are bounded together (a test's 50 subtests cannot each claim
    its whole run), but a nested one's time is in the outer one's too."""
    need_subtests()
    pytester.makeconftest(DURATIONS)
    pytester.makepyfile(test_nested=NESTED)
    got = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    assert got.ret == 0, got.stdout.str()
    import json

    durations = dict(json.loads(line) for line in (pytester.path / "durations.jsonl").read_text().splitlines())
    assert durations["inner"] >= 1.0 and durations["outer"] >= 1.2, durations
