"""--isolate-jobs: tests in flight at once, reported as a sequential run reports them.

Concurrency is shown without timing anything: inner tests meet (each waits
until the others have started, which only works if they run at once) or
check that nothing else runs (``jobs_helpers.MARKS_PY``).
"""
from __future__ import annotations

import json
import os
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from ..compat.harness import ISOLATED, Compat, Run, differences
from .jobs_helpers import events, project


@pytest.fixture
def compat(tmp_path: Path, full_sandbox: None) -> Compat:
    return Compat(tmp_path)


# ------------------------------------------------------------------ the same as a sequential run

COMPARED = {
    "conftest.py": """
        import pytest

        @pytest.fixture(scope="session")
        def sess():
            print("session setup")
            return "S"
    """,
    "test_1.py": """
        import os, time, warnings, pytest

        @pytest.fixture(scope="module")
        def mod():
            print("module setup")
            yield "M"
            print("module teardown")

        @pytest.mark.parametrize("i", range(6))
        def test_sleepy(sess, mod, i):
            time.sleep((6 - i) * 0.04)  # the later ones end first
            print("out", i)
            assert i != 2

        @pytest.mark.filterwarnings("error::UserWarning")
        def test_strict():
            pass

        @pytest.fixture(scope="module")
        def warns():
            # set up in pytest's process, maybe while test_strict runs: the
            # warning is still this fixture's user's, under its filters
            warnings.warn(UserWarning("from a module fixture"))
            return 1

        def test_fixture_warns(warns):
            warnings.warn(DeprecationWarning("from the test"))

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert 0

        @pytest.mark.skip(reason="not today")
        def test_skipped():
            pass

        def test_props(record_property):
            record_property("k", "v")

        def test_crash():
            os._exit(3)

        def test_last():
            print("last")
    """,
    "test_2.py": """
        import pytest

        @pytest.fixture(scope="module")
        def broken():
            raise RuntimeError("module fixture broken")

        def test_a(broken):
            pass

        def test_b(broken):
            pass

        class TestC:
            @pytest.fixture(scope="class")
            def cls(self):
                print("class setup")
                yield "C"

            @pytest.mark.parametrize("i", range(4))
            def test_m(self, cls, i):
                print("method", i)
                assert i != 3
    """,
}

_VERBOSE = re.compile(r"^(test_\S+::\S+) (\w+)")


def verbose_lines(run: Run) -> List[Tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in map(_VERBOSE.match, run.stdout.splitlines()) if m]


def junit_cases(path: Path) -> List[Tuple[Any, ...]]:
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        out.append((case.get("classname"), case.get("name"),
                    tuple((child.tag, (child.get("message") or "")[:60]) for child in case)))
    return out


def json_records(path: Path) -> List[Tuple[Any, ...]]:
    return [(r["nodeid"], r["outcome"], r["status"]) for r in json.loads(path.read_text())["tests"]]


def _run(compat: Compat, name: str, jobs: int, *args: str, fresh: bool = True) -> Tuple[Run, Path, Path]:
    # in the project (so that the paths read the same), left out of its files
    run = compat.run(f"{name}-jobs{jobs}", *ISOLATED, "-v", "--isolate-jobs", str(jobs), "--junitxml=out/r.xml",
                     "--isolate-json=out/r.json", *args, fresh=fresh)
    return run, run.project / "out" / "r.xml", run.project / "out" / "r.json"


@pytest.mark.parametrize("args", [(), ("--sw",), ("--maxfail=2",)], ids=["default", "stepwise", "maxfail"])
def test_a_run_reads_as_with_one_job(compat: Compat, args: Tuple[str, ...]) -> None:
    compat.write(COMPARED)
    one, one_xml, one_json = _run(compat, "r", 1, *args)
    four, four_xml, four_json = _run(compat, "r", 4, *args)
    assert "isolate: jobs: 4 isolated tests at once (from --isolate-jobs)" in four.stdout, four
    if not args:
        counts = dict(one.outcomes)
        # pytest 7.4 leaves out one of the warnings pytest 8 and later show
        assert counts.pop("warnings") in (3, 4), one
        assert counts == {"failed": 3, "passed": 12, "skipped": 1, "xfailed": 1, "errors": 2}, one
    # (--sw's cache entry holds the time it was written)
    assert differences(one, four, ignore_files=("out", ".pytest_cache/v/cache/stepwise")) == {}, (one, four)
    assert verbose_lines(one) == verbose_lines(four)
    assert junit_cases(one_xml) == junit_cases(four_xml)
    assert json_records(one_json) == json_records(four_json)
    if not args:
        # the next run's --lf picks the same failures
        one_lf, _, _ = _run(compat, "r", 1, "--lf", fresh=False)
        four_lf, _, _ = _run(compat, "r", 4, "--lf", fresh=False)
        assert one_lf.reports == four_lf.reports and one_lf.summary == four_lf.summary
        assert one_lf.summary.startswith("3 failed, 3 deselected"), one_lf


# ------------------------------------------------------------------ scopes

SCOPES_CONFTEST = """
import pytest, marks

@pytest.fixture(scope="session")
def sess():
    marks.log("setup session")
    yield
    marks.log("teardown session")
"""

SCOPED_MODULE = """
import pytest, marks

@pytest.fixture(scope="module")
def mod():
    marks.log("setup {name}")
    yield
    marks.log("teardown {name}")

@pytest.mark.parametrize("i", range(4))
def test_t(sess, mod, i):
    marks.log("start {name}-%d" % i)
    pair = [i - i % 2, i - i % 2 + 1]  # 0 and 1 meet, then 2 and 3
    marks.together(*["{name}-%d" % k for k in pair], me="{name}-%d" % i)
    marks.log("end {name}-%d" % i)
"""

# No module fixture: nothing to tear down between them, so the last test of
# one and the first of the next may meet.
PLAIN_MODULE = """
import marks

def test_{name}(sess):
    marks.together("{name}", "{other}", me="{name}")
"""


# A parametrized module fixture: its next parameter's value is set up after
# the previous one's teardown, which waits for the tests using it.
PARAM_MODULE = """
import pytest, marks

@pytest.fixture(scope="module", params=["x", "y"])
def p(request):
    marks.log("setup p-" + request.param)
    yield request.param
    marks.log("teardown p-" + request.param)

@pytest.mark.parametrize("i", range(2))
def test_p(sess, p, i):
    marks.log("start p-%s-%d" % (p, i))
    marks.together("p-%s-0" % p, "p-%s-1" % p, me="p-%s-%d" % (p, i))
    marks.log("end p-%s-%d" % (p, i))
"""


def test_a_scope_is_torn_down_after_its_last_test_and_before_the_next_scope(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None) -> None:
    marks = project(pytester, monkeypatch)
    pytester.makeconftest(SCOPES_CONFTEST)
    pytester.makepyfile(test_m1=SCOPED_MODULE.format(name="m1"), test_m2=SCOPED_MODULE.format(name="m2"),
                        test_m3=PLAIN_MODULE.format(name="m3", other="m4"),
                        test_m4=PLAIN_MODULE.format(name="m4", other="m3"), test_m5=PARAM_MODULE)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "2", "-p", "no:cacheprovider",
                                           timeout=180)
    result.assert_outcomes(passed=14)
    log = events(marks)
    parent = [e for e in log if e.startswith(("setup", "teardown"))]
    # pytest's own order: a scope set up before its first test and torn
    # down after its last one, before the next module's scope is set up
    assert parent == ["setup session", "setup m1", "teardown m1", "setup m2", "teardown m2",
                      "setup p-x", "teardown p-x", "setup p-y", "teardown p-y", "teardown session"]
    for name in ("m1", "m2", "p-x", "p-y"):
        ran = [n for n, e in enumerate(log) if e.startswith(("start " + name, "end " + name))]
        assert log.index(f"setup {name}") < min(ran) and max(ran) < log.index(f"teardown {name}"), log


# ------------------------------------------------------------------ -x and --maxfail

STOPPING = """
import marks

def test_a():
    marks.together("a", "b", "c", "d", me="a")
    marks.wait_for("failed-b", "failed-c")

def test_b():
    marks.together("a", "b", "c", "d", me="b")
    marks.mark("failed-b")
    assert 0, "b"

def test_c():
    marks.together("a", "b", "c", "d", me="c")
    marks.mark("failed-c")
    assert 0, "c"

def test_d():
    marks.together("a", "b", "c", "d", me="d")
    marks.heartbeat("d", 120)

def test_e():
    marks.mark("started-e")
    marks.heartbeat("e", 120)
"""


@pytest.mark.parametrize("stop, reported", [("-x", "ab"), ("--maxfail=2", "abc")], ids=["x", "maxfail"])
def test_tests_running_after_the_stopping_failure_are_killed_unreported(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None, stop: str,
        reported: str) -> None:
    marks = project(pytester, monkeypatch)
    pytester.makepyfile(test_stop=STOPPING)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "4", stop, "-v",
                                           "-p", "no:cacheprovider", timeout=180)
    ran = [line.split("::")[1].split()[0] for line in result.outlines if line.startswith("test_stop.py::")]
    assert ran == [f"test_{x}" for x in reported], result.outlines
    result.assert_outcomes(passed=1, failed=len(reported) - 1)
    assert (marks / "started-d").exists()  # it did run beside them ...
    beats = {p.name: p.read_text() for p in marks.glob("alive-*")}
    assert "alive-d" in beats
    time.sleep(0.5)
    # ... and no longer does: killed when the failure that stops the session was reported
    assert {p.name: p.read_text() for p in marks.glob("alive-*")} == beats


# ------------------------------------------------------------------ what runs alone

MIXED = """
import pytest, marks

@pytest.mark.isolated
@pytest.mark.parametrize("i", range(2))
def test_iso_a(i):
    with marks.running("a%d" % i):
        marks.together("a0", "a1", me="a%d" % i)

def test_here():
    assert marks.running_now() == []  # in pytest's process, with nothing in flight

@pytest.fixture(scope="module")
def broken():
    raise RuntimeError("broken in pytest's process")

@pytest.mark.isolated
def test_iso_broken(broken):
    pass

@pytest.mark.isolated
@pytest.mark.parametrize("i", range(2))
def test_iso_b(i):
    with marks.running("b%d" % i):
        marks.together("b0", "b1", me="b%d" % i)

@pytest.mark.isolated
@pytest.mark.skip(reason="skipped")
def test_iso_skipped():
    pass

def test_here_again():
    assert marks.running_now() == []
"""


def test_in_process_tests_run_with_nothing_in_flight(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                      full_sandbox: None) -> None:
    project(pytester, monkeypatch)
    pytester.makepyfile(test_mixed=MIXED)
    result = pytester.runpytest_subprocess("--isolate-jobs", "2", "-v", "-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=6, errors=1, skipped=1)
    result.stdout.fnmatch_lines(["test_mixed.py::test_iso_a[[]0[]] PASSED*", "test_mixed.py::test_iso_a[[]1[]] PASSED*",
                                 "test_mixed.py::test_here PASSED*", "test_mixed.py::test_iso_broken ERROR*",
                                 "test_mixed.py::test_iso_b[[]0[]] PASSED*", "test_mixed.py::test_iso_b[[]1[]] PASSED*",
                                 "test_mixed.py::test_iso_skipped SKIPPED*", "test_mixed.py::test_here_again PASSED*"])


EXCLUSIVE = """
import time, pytest, marks

@pytest.mark.parametrize("i", range(2))
def test_before(i):
    with marks.running("x%d" % i):
        marks.together("x0", "x1", me="x%d" % i)

@pytest.mark.isolated(exclusive=True)
def test_alone():
    assert marks.running_now() == []
    with marks.running("alone"):
        time.sleep(0.5)

@pytest.mark.parametrize("i", range(2))
def test_after(i):
    assert "alone" not in marks.running_now()
    with marks.running("y%d" % i):
        marks.together("y0", "y1", me="y%d" % i)
"""


def test_an_exclusive_test_runs_with_nothing_else_in_flight(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             full_sandbox: None) -> None:
    project(pytester, monkeypatch)
    pytester.makepyfile(test_ex=EXCLUSIVE)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "3", "-p", "no:cacheprovider",
                                           "-W", "error", timeout=180)
    result.assert_outcomes(passed=5)


# ------------------------------------------------------------------ one test's end does not disturb the others

NEIGHBOURS_CONFTEST = """
import json, marks

def pytest_runtest_logreport(report):
    marks.log(json.dumps([report.nodeid.split("::")[-1], report.when, report.outcome,
                          getattr(report, "isolate_status", None), report.sections]))
"""

NEIGHBOURS = """
import os, signal, time, pytest, marks

ALL = ("crash", "timeout", "oom", "pass", "fail")

def test_crash():
    print("crash says hi")
    marks.together(*ALL, me="crash")
    os.kill(os.getpid(), signal.SIGSEGV)

@pytest.mark.isolated(timeout=3)
def test_timeout():
    print("timeout says hi")
    marks.together(*ALL, me="timeout")
    time.sleep(120)

@pytest.mark.isolated(memory="64M")
def test_oom():
    print("oom says hi")
    marks.together(*ALL, me="oom")
    hog = b"x" * (512 << 20)

def test_pass():
    print("pass says hi")
    marks.together(*ALL, me="pass")

def test_fail():
    print("fail says hi")
    marks.together(*ALL, me="fail")
    assert 0, "fail"
"""


def test_a_crash_timeout_or_oom_leaves_the_neighbours_reports_alone(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None) -> None:
    marks = project(pytester, monkeypatch)
    pytester.makeconftest(NEIGHBOURS_CONFTEST)
    pytester.makepyfile(test_n=NEIGHBOURS)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "5", "-p", "no:cacheprovider",
                                           timeout=180)
    result.assert_outcomes(passed=1, failed=4)
    calls = {name: (outcome, status, sections) for name, when, outcome, status, sections
             in (json.loads(line) for line in events(marks)) if when == "call"}
    assert calls["test_pass"] == ("passed", None, [["Captured stdout call", "pass says hi\n"]])
    assert calls["test_fail"] == ("failed", None, [["Captured stdout call", "fail says hi\n"]])
    for name, status in (("test_crash", "crashed"), ("test_timeout", "timeout"), ("test_oom", "oom")):
        outcome, got, sections = calls[name]
        assert (outcome, got) == ("failed", status), calls[name]
        assert [s[1] for s in sections if "stdout" in s[0]] == [f"{name[5:]} says hi\n"], calls[name]
    result.stdout.fnmatch_lines(["*CRASHED: the test process was killed by SIGSEGV during call*",
                                 "*TIMEOUT: the test exceeded its time limit (limit 3s) during call*",
                                 "*OOM: the sandbox ran out of memory and was killed during call*"])


# ------------------------------------------------------------------ timeouts while pytest's process is busy

BUSY_FIRST = """
import time, pytest, marks

@pytest.mark.isolated(timeout=1)
def test_slow():
    marks.mark("slow-started")
    time.sleep(2.5)  # past its timeout, but done before pytest's process looks again
    marks.mark("slow-finished")
"""

BUSY_SECOND = """
import time, pytest, marks

@pytest.fixture(scope="module")
def slow_setup():
    # set up in pytest's process while test_slow runs: busy until test_slow
    # is done one way or the other (killed at its timeout, or finished)
    marks.wait_for("slow-started")
    end = time.monotonic() + 4
    while not marks.seen("slow-finished") and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.3)

def test_next(slow_setup):
    pass
"""


def test_a_timeout_passing_while_pytest_sets_up_a_fixture_is_met(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None) -> None:
    marks = project(pytester, monkeypatch)
    pytester.makepyfile(test_1=BUSY_FIRST, test_2=BUSY_SECOND)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "2", "-v", "-p", "no:cacheprovider",
                                           timeout=180)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_1.py::test_slow TIMEOUT*", "*isolate: peak*, wall 1.*s, pids*",
                                 "*test_2.py::test_next PASSED*",
                                 "*TIMEOUT: the test exceeded its time limit (limit 1s) during call*"])
    # its stacks were asked for at the deadline, as when pytest's process watches it
    result.stdout.fnmatch_lines(["*in test_slow*"])
    assert not (marks / "slow-finished").exists(), "killed at its timeout, not left to finish"


BIG_REPORT = """
import pytest

@pytest.mark.isolated(timeout=2)
def test_big_failure():
    # a report far larger than the pipe holds: it waits for pytest's process
    pytest.fail("y" * 200_000)
"""

SLOW_MODULE = """
import time, pytest

@pytest.fixture(scope="module")
def slow_setup():
    time.sleep(4)  # in pytest's process, while test_big_failure waits to send its report

def test_next(slow_setup):
    pass
"""


def test_waiting_on_a_busy_pytest_does_not_count_against_a_timeout(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None) -> None:
    project(pytester, monkeypatch)
    pytester.makepyfile(test_1=BIG_REPORT, test_2=SLOW_MODULE)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "2", "-v", "-p", "no:cacheprovider",
                                           timeout=180)
    result.stdout.fnmatch_lines(["*test_1.py::test_big_failure FAILED*", "*test_2.py::test_next PASSED*"])
    result.stdout.no_fnmatch_line("*TIMEOUT*")
    result.assert_outcomes(passed=1, failed=1)


KEEPS_ITS_PIPE_FULL = """
import time, pytest

@pytest.mark.isolated(timeout=1)
def test_runs_long(request):
    # nearly a pipe's worth for pytest to read, then it runs on: while
    # pytest is busy, the keeper reads the channel, and meets the deadline
    request.config.cache.set("x/a", "x" * 62000)
    end = time.monotonic() + 4
    while time.monotonic() < end:
        pass

@pytest.mark.isolated  # no timeout: watched for its end all the same
def test_quick():
    time.sleep(0.3)
"""


def test_a_full_pipe_buys_no_time_and_an_early_end_keeps_its_wall_time(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None) -> None:
    project(pytester, monkeypatch)
    pytester.makepyfile(test_1=KEEPS_ITS_PIPE_FULL, test_2=SLOW_MODULE)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "3", "-v", timeout=180)
    result.stdout.fnmatch_lines(["*test_1.py::test_runs_long TIMEOUT*", "*isolate: peak*, wall 1.*s, pids*",
                                 "*test_1.py::test_quick PASSED*", "*isolate: peak*, wall 0.*s, pids*",
                                 "*test_2.py::test_next PASSED*"])
    result.assert_outcomes(passed=2, failed=1)


MANY_IN_FLIGHT = """
import time, pytest

@pytest.mark.parametrize("i", range(45))
@pytest.mark.isolated(timeout=1)
def test_sleeps(i):
    time.sleep(2.5)  # past its timeout, done before pytest's process looks again
"""

SHORT_SLOW_MODULE = """
import time, pytest

@pytest.fixture(scope="module")
def slow_setup():
    time.sleep(4)

def test_next(slow_setup):
    pass
"""


def test_more_tests_in_flight_than_one_message_carries_all_keep_their_timeouts(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None) -> None:
    """Six descriptors each: 45 sandboxes are more than one message to the
    keeper can carry (253)."""
    project(pytester, monkeypatch)
    pytester.makepyfile(test_1=MANY_IN_FLIGHT, test_2=SHORT_SLOW_MODULE)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "46", "-p", "no:cacheprovider",
                                           timeout=300)
    result.assert_outcomes(passed=1, failed=45)
    # each one's failure, first line (the short summary may repeat it)
    timed_out = [line for line in result.stdout.lines
                 if line.startswith("TIMEOUT: the test exceeded its time limit (limit 1s) during call")]
    assert len(timed_out) == 45, result.stdout.str()[-3000:]


# ------------------------------------------------------------------ a stale copy

STALE_CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def box():
    return ["old"]

def pytest_runtest_logreport(report):
    # in pytest's process, after the next tests' sandboxes were forked
    if report.when == "teardown" and report.nodeid.endswith("test_t[0]"):
        fixturedef = FIXTUREDEF[0]
        fixturedef.cached_result = (["new"], fixturedef.cached_result[1], None)

FIXTUREDEF = []

def pytest_collection_modifyitems(items):
    FIXTUREDEF.append(items[0]._fixtureinfo.name2fixturedefs["box"][-1])
"""


def test_a_test_whose_copy_went_stale_runs_again(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(STALE_CONFTEST)
    pytester.makepyfile(test_s="""
        import time, pytest

        @pytest.mark.parametrize("i", range(4))
        def test_t(box, i):
            if i == 0:
                time.sleep(0.5)  # the others start before it is reported
            assert box == (["old"] if i == 0 else ["new"])
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "3", "-p", "no:cacheprovider",
                                           timeout=180)
    result.assert_outcomes(passed=4)


# ------------------------------------------------------------------ settings and header

@pytest.mark.parametrize("where, value, source", [
    ("cli", "0", "--isolate-jobs"), ("env", "many", "environment PYTEST_ISOLATE_JOBS"),
    ("ini", "-2", "ini isolate_jobs (pytest.ini)")])
def test_a_bad_jobs_value_names_its_source(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                           where: str, value: str, source: str) -> None:
    pytester.makepyfile("def test_a(): pass")
    args: Tuple[str, ...] = ()
    if where == "cli":
        args = ("--isolate-jobs", value)
    elif where == "env":
        monkeypatch.setenv("PYTEST_ISOLATE_JOBS", value)
    else:
        pytester.makefile(".ini", pytest=f"[pytest]\nisolate_jobs = {value}\n")
    result = pytester.runpytest_subprocess(*args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-isolate: invalid jobs '{value}' from {source}: expected a number "
                                 "of sandboxes like 4, or auto"])


def test_a_bad_jobs_memory_value_names_its_source(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess("--isolate-jobs-memory", "12x", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-isolate: invalid jobs-memory '12x' from --isolate-jobs-memory: *"])


def test_the_header_says_how_many_and_why(pytester: pytest.Pytester) -> None:
    from isolate_runtime import available_cpus

    from pytest_isolate.admission import jobs_for

    cpus = available_cpus()
    pytester.makepyfile("def test_a(): pass")
    # (the header is printed when a test is isolated)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "auto", "--isolate-jobs-memory", "1G",
                                           timeout=60)
    jobs = jobs_for(cpus)
    why = f"{cpus.value:g} CPUs" if cpus.source.startswith("affinity") else cpus.source
    result.stdout.fnmatch_lines([f"isolate: jobs: {jobs} isolated tests at once (auto: {why}); each starts while "
                                 f"the memory limits in flight fit in 1.0 GiB (from --isolate-jobs-memory) and "
                                 f"their cpus= in {cpus.value:g} CPUs"])
    quiet = pytester.runpytest_subprocess("--isolate-all", timeout=60)
    assert "jobs:" not in quiet.stdout.str()  # the default, one: nothing to say


def test_xdist_workers_share_auto(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess("--isolate-all", "-n", "2", "--isolate-jobs", "auto", timeout=120)
    result.stdout.fnmatch_lines(["isolate: jobs: * isolated tests at once per xdist worker (auto: * / 2 xdist "
                                 "workers); *"])
    assert os.cpu_count()
