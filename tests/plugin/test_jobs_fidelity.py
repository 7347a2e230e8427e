"""Subtests, reruns and plugin state under ``--isolate-jobs``: the same
results as one sandbox at a time.

Tests started ahead of their turn hold their subtest reports and plugin
data until it comes (``Replay(live=False)``); a test a rerun plugin takes
runs each try at its turn with nothing else in flight (``phased.may_take``).
"""
from __future__ import annotations

import importlib.util
import re
from typing import List, Tuple

import pytest

from ..conftest import skip_unless
from .test_route import ROUTE_CONFTEST as CONFTEST

TESTS = """
import pytest

@pytest.fixture(scope="module")
def shared():
    return "shared"

def test_a(record, shared):
    record("a")

@pytest.mark.flaky(reruns=2)
def test_flaky(tmp_path_factory, shared):
    tries = tmp_path_factory.getbasetemp() / "tries"
    with open(tries, "a") as f:
        f.write("x")
    assert len(tries.read_text()) >= 2

def test_b(record, shared):
    record("b")

def test_sub(subtests, record, shared):
    record("sub")
    for i in range(3):
        with subtests.test(i=i):
            assert i != 1

@pytest.mark.flaky(reruns=1)
def test_always_fails(shared):
    assert False

def test_c(record, shared):
    record("c")
"""

#: A -v result line: the node id (with a subtest's suffix) and its word.
LINE = re.compile(r"^(test_\S+(?: \[.*?\])?(?: \(.*?\))?) (PASSED|FAILED|RERUN|SUBPASSED|SUBFAILED|ERROR)\S*",
                  re.MULTILINE)


def _lines(text: str) -> List[Tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in LINE.finditer(text)]


def test_subtests_reruns_and_plugin_data_as_in_a_sequential_run(pytester: pytest.Pytester,
                                                                 full_sandbox: None) -> None:
    skip_unless(importlib.util.find_spec("pytest_rerunfailures") is not None,
                "pytest-rerunfailures is not installed (install the test extras)")
    skip_unless(int(pytest.__version__.split(".")[0]) >= 9 or importlib.util.find_spec("pytest_subtests") is not None,
                "a subtests fixture: pytest 9's, or pytest-subtests before 9 (install the test extras)")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_mix=TESTS)
    runs = {}
    for name, extra in (("sequential", ()), ("jobs", ("--isolate-jobs", "2"))):
        basetemp = pytester.path / f"basetemp-{name}"
        result = pytester.runpytest_subprocess("--isolate-all", *extra, "-v", "-p", "no:cacheprovider",
                                               f"--basetemp={basetemp}", timeout=180)
        out = result.stdout.str()
        merged = [line for line in out.splitlines() if line.startswith("merged: ")]
        runs[name] = (result.ret, result.parseoutcomes(), _lines(out), merged)
    assert runs["jobs"] == runs["sequential"], runs
    ret, outcomes, lines, merged = runs["sequential"]
    # ("2 subtests passed" parses as "subtests": 2; pytest 9 counts the failed
    # subtest among the failures and its test as failed too, pytest-subtests
    # the subtest only)
    if int(pytest.__version__.split(".")[0]) >= 9:
        assert outcomes == {"failed": 3, "passed": 4, "rerun": 2, "subtests": 2}, runs
    else:
        assert outcomes == {"failed": 2, "passed": 5, "rerun": 2, "subtests": 2}, runs
    assert ("test_mix.py::test_flaky", "RERUN") in lines and ("test_mix.py::test_flaky", "PASSED") in lines
    assert merged == ["merged: [['test_a', 'a'], ['test_b', 'b'], ['test_sub', 'sub'], ['test_c', 'c']]"]


#: Scenarios where pytest sets up, ahead of their turn, the fixtures of a
#: test after the ones in flight: each ends the session as a sequential run
#: does.  name -> (files, arguments)
AHEAD = {
    # a module fixture raises KeyboardInterrupt while the tests before it run
    "interrupt-from-a-fixture-set-up-ahead": ({
        "test_1.py": "import time\n\ndef test_a():\n    time.sleep(0.3)\n\n"
                     "def test_b():\n    time.sleep(0.3)\n    assert 0\n",
        "test_2.py": "import pytest\n\n@pytest.fixture(scope='module')\ndef modf():\n    raise KeyboardInterrupt\n\n"
                     "def test_c(modf):\n    pass\n",
    }, ()),
    # -x stops after test_a: the fixture set up ahead for test_c (which
    # never runs) is not torn down as test_a's, its error unreported
    "x-and-a-fixture-set-up-ahead": ({
        "test_1.py": "import time\n\ndef test_a():\n    time.sleep(0.4)\n    assert 0\n\n"
                     "def test_b():\n    time.sleep(0.1)\n",
        "test_2.py": "import pytest\n\n@pytest.fixture(scope='module')\ndef modf():\n    yield\n"
                     "    raise RuntimeError('modf teardown boom')\n\ndef test_c(modf):\n    pass\n",
    }, ("-x",)),
    # the same with the fixture in test_a's own module: its finalizer hangs
    # on a node test_a's teardown ends too
    "x-and-a-fixture-of-the-same-module-set-up-ahead": ({
        "test_1.py": "import time\nimport pytest\n\n@pytest.fixture(scope='module')\ndef later():\n    yield\n"
                     "    print('later teardown')\n    raise RuntimeError('later teardown boom')\n\n"
                     "def test_a():\n    time.sleep(0.5)\n    assert 0\n\ndef test_b(later):\n    pass\n",
    }, ("-x",)),
    # the same with a session fixture a module fixture of a later module
    # overrides (the base definition is set up ahead too)
    "x-and-an-overridden-fixture-set-up-ahead": ({
        "conftest.py": "import pytest\n\n@pytest.fixture(scope='session')\ndef res():\n    yield 'base'\n"
                       "    raise RuntimeError('session res teardown boom')\n",
        "test_1.py": "import time\n\ndef test_a():\n    time.sleep(1.0)\n    assert 0\n\ndef test_b():\n    pass\n",
        "test_2.py": "import pytest\n\n@pytest.fixture(scope='module')\ndef res(res):\n    yield res + '+mod'\n\n"
                     "def test_c(res):\n    pass\n",
    }, ("-x",)),
    # -x set off by test_a's own teardown report (a function fixture's
    # teardown error), after its higher scopes were torn down
    "x-from-a-teardown-and-a-fixture-set-up-ahead": ({
        "test_1.py": "import time\nimport pytest\n\n@pytest.fixture\ndef bad():\n    yield\n"
                     "    raise RuntimeError('function teardown error')\n\n"
                     "def test_a(bad):\n    time.sleep(1.0)\n\ndef test_b():\n    pass\n",
        "test_2.py": "import pytest\n\n@pytest.fixture(scope='module')\ndef modf():\n    yield\n"
                     "    raise RuntimeError('modf teardown boom')\n\ndef test_c(modf):\n    pass\n",
    }, ("-x",)),
    # the same with pytest.exit() in test_a
    "exit-and-a-fixture-set-up-ahead": ({
        "test_1.py": "import time\nimport pytest\n\ndef test_a():\n    time.sleep(0.4)\n    pytest.exit('bye')\n\n"
                     "def test_b():\n    time.sleep(0.1)\n",
        "test_2.py": "import pytest\n\n@pytest.fixture(scope='module')\ndef modf():\n    yield\n"
                     "    raise RuntimeError('modf teardown boom')\n\ndef test_c(modf):\n    pass\n",
    }, ()),
}


@pytest.mark.parametrize("scenario", list(AHEAD))
def test_a_session_that_ends_early_ends_as_in_a_sequential_run(pytester: pytest.Pytester, full_sandbox: None,
                                                               scenario: str) -> None:
    from .test_fidelity import _normalized

    files, args = AHEAD[scenario]
    for name, text in files.items():
        (pytester.path / name).write_text(text)
    plain = pytester.runpytest_subprocess("--no-isolate", "-rA", "-p", "no:cacheprovider", *args, timeout=120)
    jobs = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "3", "-rA", "-p", "no:cacheprovider",
                                         *args, timeout=120)
    assert jobs.ret == plain.ret != 0, jobs.stdout.str()
    assert _normalized(jobs.stdout.str()) == _normalized(plain.stdout.str())
    assert "boom" not in jobs.stdout.str() + jobs.stderr.str() and "later teardown" not in jobs.stdout.str()
    assert "isolate: jobs:" in jobs.stdout.str()


CTRL_C_DURING_A_SETUP_AHEAD = """
import time
import pytest

def test_1():
    time.sleep(6)

def test_2():
    time.sleep(6)

@pytest.fixture(scope="module")
def slow():
    open("setting-up", "w").close()
    time.sleep(4)

class TestLater:
    def test_3(self, slow):
        pass
"""


def test_a_ctrl_c_while_a_later_tests_fixture_is_set_up_interrupts_at_once(pytester: pytest.Pytester,
                                                                          full_sandbox: None) -> None:
    """A KeyboardInterrupt a fixture set up ahead raises waits for its
    test's turn (above); one that SIGINT delivers meanwhile does not wait
    for the tests in flight to finish."""
    import signal
    import subprocess
    import sys
    import time

    pytester.makepyfile(test_ctrl_c=CTRL_C_DURING_A_SETUP_AHEAD)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--isolate-all", "--isolate-jobs", "3", "-p",
                             "no:cacheprovider", "-rA"],  # (the fixture runs in pytest's process)
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # (a shell's background job ignores SIGINT, and its children with it)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (pytester.path / "setting-up").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (pytester.path / "setting-up").exists(), "the fixture was never set up"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out
    assert "KeyboardInterrupt" in out
    # interrupted, not run to their end (6 s each) first
    assert "passed" not in out.splitlines()[-1], out


SIGINT_HANDLER = {
    "test_sig.py": """
import signal
import time
import pytest

def custom(signum, frame):
    pass

@pytest.fixture(scope="module")
def quiet_sigint():
    old = signal.signal(signal.SIGINT, custom)
    yield
    signal.signal(signal.SIGINT, old)

def test_first():
    time.sleep(0.5)

def test_handler(quiet_sigint):
    assert signal.getsignal(signal.SIGINT) is custom
""",
    "test_sig2.py": """
import signal
from conftest import AT_START

def test_restored():
    assert signal.getsignal(signal.SIGINT) is AT_START, signal.getsignal(signal.SIGINT)
""",
    # (Python's own handler, or SIG_IGN when pytest runs as a shell's background job)
    "conftest.py": """
import signal

AT_START = signal.getsignal(signal.SIGINT)
""",
}


def test_a_fixture_set_up_ahead_keeps_the_sigint_handler_it_installs(pytester: pytest.Pytester,
                                                                     full_sandbox: None) -> None:
    """Telling a Ctrl-C from a fixture's KeyboardInterrupt while a later
    test's fixtures are set up must not touch SIGINT's handler: a fixture
    may install its own, and restore the one it found."""
    for name, text in SIGINT_HANDLER.items():
        (pytester.path / name).write_text(text)
    got = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "3", "-p", "no:cacheprovider",
                                        timeout=120)
    got.assert_outcomes(passed=3)
