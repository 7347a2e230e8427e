"""A plugin that runs the test protocol itself (pytest-rerunfailures) runs
isolated tests too, each try in a fresh sandbox (``pytest_isolate/phased.py``).

The comparisons with plain pytest (``--reruns``, ``@pytest.mark.flaky``)
are in ``tests/compat/test_plugins.py``; these are the cases around them.
"""
from __future__ import annotations

import importlib.util

import pytest

from ..conftest import skip_unless


def need_rerunfailures() -> None:
    skip_unless(importlib.util.find_spec("pytest_rerunfailures") is not None,
                "pytest-rerunfailures is not installed (install the test extras)")


TRIES = """
import os, pytest

PYTEST_PID = os.getpid()

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with open(tmp_path_factory.getbasetemp() / "module", "a") as f:
        f.write("set up\\n")
    return []

@pytest.mark.flaky(reruns=2)
def test_each_try_in_a_fresh_sandbox(tmp_path_factory, shared):
    with open(tmp_path_factory.getbasetemp() / "tries", "a") as f:
        f.write(f"{os.getpid() != PYTEST_PID} {os.path.exists('scratch')} {shared}\\n")
    open("scratch", "w").close()  # outside the writable paths: gone with the sandbox
    shared.append("changed in a try")
    assert False

@pytest.mark.flaky(reruns=1)
def test_a_crashed_try_is_tried_again():
    os._exit(3)
"""


def test_each_try_runs_in_a_fresh_sandbox(pytester: pytest.Pytester, full_sandbox: None) -> None:
    need_rerunfailures()
    pytester.makepyfile(test_tries=TRIES)
    basetemp = pytester.path / "basetemp"
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", f"--basetemp={basetemp}",
                                           "-v", timeout=120)
    assert result.parseoutcomes() == {"failed": 2, "rerun": 3}, result.stdout.str()
    # not in the pytest process, nothing left by the try before, the
    # module fixture's value as the parent made it (set up once)
    assert (basetemp / "tries").read_text() == "True False []\n" * 3, result.stdout.str()
    assert (basetemp / "module").read_text() == "set up\n"
    assert not (pytester.path / "scratch").exists()
    result.stdout.fnmatch_lines(["*test_a_crashed_try_is_tried_again RERUN*",
                                 "*test_a_crashed_try_is_tried_again CRASHED*"])


SETUP_FAILS = """
import pytest

@pytest.fixture(scope="module")
def broken():
    raise RuntimeError("module fixture broke")

@pytest.mark.flaky(reruns=2)
def test_uses_it(broken):
    pass

@pytest.mark.flaky(reruns=1)
def test_passes():
    pass
"""


def test_a_failed_parent_setup_is_tried_again_as_in_process(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """The parent's share of the setup runs as the test's setup: its error
    is the setup's, reported and tried again as pytest-rerunfailures does
    in-process."""
    need_rerunfailures()
    pytester.makepyfile(test_setup=SETUP_FAILS)
    plain = pytester.runpytest_subprocess("--no-isolate", "-p", "no:cacheprovider", "-rA", timeout=120)
    iso = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-rA", timeout=120)
    assert plain.parseoutcomes() == {"errors": 1, "passed": 1, "rerun": 2}, plain.stdout.str()
    assert iso.parseoutcomes() == plain.parseoutcomes(), iso.stdout.str()
    iso.stdout.fnmatch_lines(["ERROR test_setup.py::test_uses_it - RuntimeError: module fixture broke"])


OWN_PROTOCOL = {
    "conftest": """
import os, pytest
from _pytest.runner import runtestprotocol

os.environ["INNER_PYTEST_PID"] = str(os.getpid())

# A plugin that runs the protocol before pytest-isolate's hook could.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in runtestprotocol(item, nextitem=nextitem, log=False):
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
""",
    "test_own": """
import os

def test_runs_in_a_sandbox():
    assert os.getpid() != int(os.environ["INNER_PYTEST_PID"])
    open("scratch", "w").close()

def test_fails():
    assert 1 == 2
""",
}


def test_a_plugin_running_the_protocol_first_still_gets_isolated_tests(pytester: pytest.Pytester,
                                                                        full_sandbox: None) -> None:
    pytester.makepyfile(**OWN_PROTOCOL)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-rA", timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*writes discarded at sandbox teardown*", "*scratch"])
    assert not (pytester.path / "scratch").exists()


AFTER_A_PASSING_TEST = """
import os, pytest

def test_passes():
    pass

@pytest.mark.flaky(reruns=1)
def test_flaky():
    with open(os.environ["RUNS"], "a") as f:
        f.write("ran\\n")
    assert False
"""


def test_a_sandbox_prepared_ahead_serves_the_first_try(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """After a passing test the next one's sandbox is forked ahead and may
    already run when its turn comes: it is the first try, not an extra run."""
    need_rerunfailures()
    pytester.makepyfile(test_ahead=AFTER_A_PASSING_TEST)
    basetemp = pytester.path / "basetemp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNS", str(basetemp / "runs"))
        result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", f"--basetemp={basetemp}",
                                               timeout=120)
    assert result.parseoutcomes() == {"passed": 1, "failed": 1, "rerun": 1}, result.stdout.str()
    assert (basetemp / "runs").read_text() == "ran\n" * 2


def test_each_try_has_its_own_stats_record(pytester: pytest.Pytester, full_sandbox: None) -> None:
    need_rerunfailures()
    import json
    from pathlib import Path

    import pytest_isolate.stats

    from .test_stats import _need

    jsonschema = _need("jsonschema")

    pytester.makepyfile(test_tries="""
        import pytest

        @pytest.mark.flaky(reruns=2)
        def test_fails():
            assert False
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "--isolate-json=stats.json",
                                           timeout=120)
    assert result.parseoutcomes() == {"failed": 1, "rerun": 2}, result.stdout.str()
    document = json.loads((pytester.path / "stats.json").read_text())
    schema = json.loads(Path(pytest_isolate.stats.__file__).with_name("stats-schema.json").read_text())
    jsonschema.validate(document, schema)
    # (pytest-rerunfailures before 16.7 logs no teardown report for a
    # repeated try: no record for it)
    outcomes = [t["outcome"] for t in document["tests"]]
    assert outcomes in (["rerun", "rerun", "failed"], ["failed"]), outcomes
