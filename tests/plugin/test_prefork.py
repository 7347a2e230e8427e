"""The next test's sandbox is forked while the current test runs, only when
the parent has nothing to do for it in between; otherwise it is discarded."""
from __future__ import annotations

import textwrap

import pytest

#: Records, in the parent, when each test's spec is built (the moment its
#: sandbox is forked) relative to the other tests' ends.
ORDER = """
import os

def _log(line):
    with open(os.path.join(os.path.dirname(__file__), "order.log"), "a") as f:
        f.write(line + "\\n")

def pytest_isolate_modify_spec(item, spec):
    _log("fork " + item.name)

def pytest_runtest_logfinish(nodeid, location):
    _log("end " + nodeid.split("::")[-1])
"""


def _order(pytester: pytest.Pytester) -> "list[str]":
    return (pytester.path / "order.log").read_text().splitlines()


def test_next_sandbox_is_forked_before_the_current_test_ends(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(ORDER)
    pytester.makepyfile(test_a="""
        import os, pytest

        @pytest.fixture(scope="session")
        def sess():
            return {"pid": os.getpid()}

        @pytest.mark.parametrize("i", range(4))
        def test_t(sess, i):
            assert os.getpid() == 2 and sess["pid"] != 2
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert _order(pytester) == ["fork test_t[0]", "fork test_t[1]", "end test_t[0]", "fork test_t[2]",
                                "end test_t[1]", "fork test_t[3]", "end test_t[2]", "end test_t[3]"]


def test_prefork_false_forks_each_sandbox_in_its_turn(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(ORDER)
    pytester.makeini("[pytest]\nisolate_prefork = false\n")
    pytester.makepyfile(test_a="""
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_t(i):
            pass
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert _order(pytester) == ["fork test_t[0]", "end test_t[0]", "fork test_t[1]", "end test_t[1]",
                                "fork test_t[2]", "end test_t[2]"]


def test_not_forked_ahead_when_the_parent_sets_something_up_in_between(pytester: pytest.Pytester,
                                                                       full_sandbox: None) -> None:
    pytester.makeconftest(ORDER)
    pytester.makepyfile(test_a="""
        import os, pytest

        SEEN = []

        @pytest.fixture(scope="module", params=["x", "y"])
        def mod(request):
            SEEN.append(request.param)  # in the parent
            return request.param

        @pytest.fixture(scope="session")
        def late():
            return "late"

        def test_first(mod):
            assert SEEN[-1] == mod

        def test_second(mod, late):
            assert (SEEN[-1], late) == (mod, "late")

        @pytest.mark.filterwarnings("error::UserWarning")
        def test_third(mod):
            import warnings
            with pytest.raises(UserWarning):
                warnings.warn(UserWarning("an error here"))
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=6)
    order = _order(pytester)
    # test_second needs a session fixture nobody set up yet, test_third other warning
    # filters, test_first[y] another module parameter: each is forked after the test before it ended.
    for name, before in (("test_second[x]", "test_first[x]"), ("test_third[x]", "test_second[x]"),
                         ("test_first[y]", "test_third[x]"), ("test_third[y]", "test_second[y]")):
        assert order.index("end " + before) < order.index("fork " + name), (name, order)
    # ... and test_second[y] (late and mod=y both set up by then) is forked ahead.
    assert order.index("fork test_second[y]") < order.index("end test_first[y]"), order


def test_a_stale_prepared_sandbox_is_discarded(pytester: pytest.Pytester, full_sandbox: None) -> None:
    # A parent-side hook changes a higher-scoped fixture's value after the next
    # sandbox was forked: that copy is stale, the test gets a fresh one.
    pytester.makeconftest(ORDER + """
import pytest

@pytest.fixture(scope="session")
def box():
    return ["old"]

def pytest_runtest_logreport(report):
    if report.when == "teardown" and report.nodeid.endswith("test_t[0]"):
        fixturedef = report_fixturedef[0]
        fixturedef.cached_result = (["new"], fixturedef.cached_result[1], None)

report_fixturedef = []

def pytest_collection_modifyitems(items):
    report_fixturedef.append(items[0]._fixtureinfo.name2fixturedefs["box"][-1])
""")
    pytester.makepyfile(test_a="""
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_t(box, i):
            assert box == (["old"] if i == 0 else ["new"])
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    order = _order(pytester)
    assert order.index("fork test_t[1]") < order.index("end test_t[0]"), order  # prepared, then discarded
    assert order.count("fork test_t[1]") == 2  # and forked again, from the parent as it is now


def test_exitfirst_leaves_no_prepared_sandbox_behind(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(ORDER + """
import psutil

def pytest_unconfigure(config):
    import time
    end = time.monotonic() + 5
    while psutil.Process().children(recursive=True) and time.monotonic() < end:
        time.sleep(0.02)
    _log("children %d" % len(psutil.Process().children(recursive=True)))
""")
    pytester.makepyfile(test_a="""
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_t(i):
            assert i != 0
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-x")
    result.assert_outcomes(failed=1)
    order = _order(pytester)
    assert "fork test_t[1]" in order and "end test_t[1]" not in order, order
    assert order[-1] == "children 0", order


#: The sandbox marks the start of each test's setup; the parent, at the end
#: of each test, waits a moment for the *next* test's mark: it can only
#: appear if that test's sandbox was released before this test ended.
EARLY = """
import os, time, pytest

MARKS = os.path.join(os.path.dirname(__file__), "marks")

def pytest_runtest_setup(item):
    open(os.path.join(MARKS, item.name), "w").close()

def pytest_runtest_logfinish(nodeid, location):
    name = nodeid.split("::")[-1]
    following = {"test_t[%d]" % i: "test_t[%d]" % (i + 1) for i in range(2)}.get(name)
    if following is None:
        return
    end = time.monotonic() + WAIT
    while not os.path.exists(os.path.join(MARKS, following)) and time.monotonic() < end:
        time.sleep(0.005)
    state = "running" if os.path.exists(os.path.join(MARKS, following)) else "held"
    with open(os.path.join(os.path.dirname(__file__), "order.log"), "a") as f:
        f.write("%s at the end of %s\\n" % (state, name))
"""


def _early(pytester: pytest.Pytester, wait: float) -> None:
    (pytester.path / "marks").mkdir()
    pytester.makeconftest(f"WAIT = {wait!r}\n" + EARLY)
    pytester.makeini(f"[pytest]\nisolate_writable = {pytester.path / 'marks'}\n")


def test_next_sandbox_runs_while_the_parent_finishes_the_test_before(pytester: pytest.Pytester,
                                                                     full_sandbox: None) -> None:
    _early(pytester, wait=10.0)
    # The parent starts each test once its sandbox prints (its own part of
    # the setup must not take that output).
    with open(pytester.path / "conftest.py", "a") as f:
        f.write(textwrap.dedent("""
            def pytest_runtest_logstart(nodeid, location):
                end = time.monotonic() + WAIT
                mark = os.path.join(MARKS, nodeid.split("::")[-1])
                while not os.path.exists(mark) and time.monotonic() < end and not nodeid.endswith("[0]"):
                    time.sleep(0.005)
        """))
    pytester.makepyfile(test_a="""
        import pytest

        @pytest.fixture
        def noisy(i):
            import sys, time
            for n in range(20):
                print("setup of", i)
                sys.stdout.flush()
                time.sleep(0.005)

        @pytest.mark.parametrize("i", range(3))
        def test_t(noisy, i):
            print("output of", i)
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-rP")
    result.assert_outcomes(passed=3)
    assert _order(pytester) == ["running at the end of test_t[0]", "running at the end of test_t[1]"]
    # each test's captured output is its own
    lines = []
    for i in range(3):
        lines += [f"*_ test_t[[]{i}] _*", "*- Captured stdout setup -*"] + [f"setup of {i}"] * 20
        lines += ["*- Captured stdout call -*", f"output of {i}"]
    result.stdout.fnmatch_lines(lines, consecutive=True)


@pytest.mark.parametrize("how", ["-s", "no:capture", "failure", "log_cli"])
def test_next_sandbox_is_held_until_its_turn(pytester: pytest.Pytester, full_sandbox: None, how: str) -> None:
    # -s, no capture plugin and live logging: its output would interleave with the lines the
    # parent still prints for the test before; after a failure, -x / --maxfail
    # / --sw may stop the session
    _early(pytester, wait=0.5)
    pytester.makepyfile(test_a="""
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_t(i):
            assert not FAIL
    """.replace("FAIL", str(how == "failure")))
    args = {"-s": ["-s"], "no:capture": ["-p", "no:capture"], "failure": [],
            "log_cli": ["-o", "log_cli=true"]}[how]
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(**({"failed": 3} if how == "failure" else {"passed": 3}))
    assert _order(pytester) == ["held at the end of test_t[0]", "held at the end of test_t[1]"]
