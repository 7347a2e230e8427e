"""--isolate-jobs with budgets, pytest-xdist and pytest-cov; and what
isolation buys: tests that would collide side by side do not."""
from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from .jobs_helpers import project
from .test_integrations import COVERED_PKG, COVERED_TESTS, _missing, need

# ------------------------------------------------------------------ memory and CPU admission

MEMORY = """
import time, pytest, marks

@pytest.mark.isolated(memory="200M")
def test_a():
    with marks.running("a"):
        marks.together("a", "c", me="a")  # 200M + 50M fit in 300M
        time.sleep(0.3)

@pytest.mark.isolated(memory="50M")
def test_c():
    with marks.running("c"):
        marks.together("a", "c", me="c")

@pytest.mark.isolated(memory="200M")
def test_b():
    # 200M more would not fit beside test_a: it started once test_a ended
    assert "a" not in marks.running_now()

@pytest.mark.isolated(memory="400M")
def test_d():
    # over the budget on its own: it runs alone
    assert marks.running_now() == []
    with marks.running("d"):
        time.sleep(0.3)

@pytest.mark.isolated(memory="50M")
def test_e():
    assert "d" not in marks.running_now()

def test_f():
    # no limit, but 1 GiB at its peak in the last run: alone too
    assert marks.running_now() == []
    with marks.running("f"):
        time.sleep(0.3)

@pytest.mark.isolated(memory="50M")
def test_g():
    assert "f" not in marks.running_now()
"""


def test_memory_admission(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None) -> None:
    project(pytester, monkeypatch)
    pytester.makepyfile(test_mem=MEMORY)
    baseline = pytester.path / ".pytest_cache" / "v" / "pytest-isolate" / "stats-v1"
    baseline.parent.mkdir(parents=True)
    baseline.write_text(json.dumps({"test_mem.py::test_f": {"peak_memory_bytes": 1 << 30, "cpu_seconds": 0.1}}))
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "3", "--isolate-jobs-memory", "300M",
                                           timeout=180)
    result.assert_outcomes(passed=7, warnings=2)
    result.stdout.fnmatch_lines([
        "*IsolateJobsWarning: pytest-isolate: test_mem.py::test_d ran with no other test in flight: its memory "
        "limit of 400.0 MiB is over the memory budget of 300.0 MiB (from --isolate-jobs-memory)",
        "*IsolateJobsWarning: pytest-isolate: test_mem.py::test_f ran with no other test in flight: its peak in "
        "the last run of 1.0 GiB is over the memory budget of 300.0 MiB (from --isolate-jobs-memory)",
    ])


CPUS = """
import time, pytest, marks

@pytest.mark.isolated(cpus={cpus})
def test_h():
    with marks.running("h"):
        time.sleep(0.3)

@pytest.mark.isolated(cpus={cpus})
def test_i():
    assert "h" not in marks.running_now()  # two caps would be over the CPUs

def test_j():
    marks.together("j", "k", me="j")  # no cap: no CPU counted

def test_k():
    marks.together("j", "k", me="k")
"""


def test_cpu_caps_are_admitted_against_the_cpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                full_sandbox: None) -> None:
    from isolate_runtime import available_cpus

    cpus = available_cpus().value or 1.0
    project(pytester, monkeypatch)
    pytester.makepyfile(test_cpu=CPUS.format(cpus=round(cpus * 0.6, 2)))
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "3", "-p", "no:cacheprovider",
                                           "-W", "error", timeout=180)
    result.assert_outcomes(passed=4)


# ------------------------------------------------------------------ pytest-xdist

XDIST = """
import pytest, marks

@pytest.mark.parametrize("i", range(4))
def test_r(i):
    with marks.running(str(i)):
        marks.together("0", "1", "2", "3", me=str(i))  # four at once: two workers, two each
        marks.mark("seen-%d" % i, str(len(marks.running_now())))
"""


def test_xdist_workers_each_keep_their_jobs_in_flight(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                      full_sandbox: None) -> None:
    need("xdist")
    marks = project(pytester, monkeypatch)
    pytester.makepyfile(test_x=XDIST)
    result = pytester.runpytest_subprocess("-n", "2", "--isolate-all", "--isolate-jobs", "2", "-v",
                                           "-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=4)
    assert all(int((marks / f"seen-{i}").read_text()) <= 4 for i in range(4))
    # every test reported once, by the worker that ran it
    assert sorted(line.split()[-1] for line in result.outlines if " PASSED " in line and "test_x.py" in line) == \
        ["test_x.py::test_r[0]", "test_x.py::test_r[1]", "test_x.py::test_r[2]", "test_x.py::test_r[3]"]


XDIST_CRASH_CONFTEST = """
import os

def pytest_runtest_logreport(report):
    # pytest's own process dies (the worker, not a sandbox) while the test
    # after this one is in flight beside it
    if os.environ.get("PYTEST_XDIST_WORKER") and report.nodeid.endswith("test_r[0]") and report.when == "call":
        os._exit(1)
"""

XDIST_CRASH = """
import os, pytest, marks

@pytest.mark.parametrize("i", range(4))
def test_r(i):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    if i == 0:
        marks.wait_for("started-1-" + worker)  # the next one runs beside it
    if i == 1:
        first = not any(name.startswith("started-1-") for name in os.listdir(marks.DIR))
        marks.mark("started-1-" + worker)
        if first:  # beside test_r[0], on the worker that dies: it must die too
            marks.heartbeat("1-" + worker, 120)
"""


def test_an_xdist_worker_that_dies_with_tests_in_flight(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                         full_sandbox: None) -> None:
    """xdist's bookkeeping holds: the test being reported is the one that
    crashed the worker, the one started beside it runs again on another
    worker, and the sandboxes of the dead worker die with it."""
    need("xdist")
    marks = project(pytester, monkeypatch)
    pytester.makeconftest(XDIST_CRASH_CONFTEST)
    pytester.makepyfile(test_x=XDIST_CRASH)
    result = pytester.runpytest_subprocess("-n", "2", "--isolate-all", "--isolate-jobs", "2", "-p", "no:cacheprovider",
                                           timeout=180)
    # (test_r[0]'s call report may have reached the controller before the crash, as without jobs)
    assert result.parseoutcomes()["failed"] == 1 and result.parseoutcomes()["passed"] >= 3, result.outlines
    crash = next(line for line in result.outlines if "crashed while running" in line)
    dead = crash.split("worker '")[1].split("'")[0]
    assert "test_x.py::test_r[0]" in crash, crash
    started = sorted(p.name for p in marks.glob("started-1-*"))
    assert f"started-1-{dead}" in started and len(started) == 2, started  # there, and again on another worker
    beat = (marks / f"alive-1-{dead}").read_text()
    time.sleep(0.5)
    assert (marks / f"alive-1-{dead}").read_text() == beat  # killed with its worker


# ------------------------------------------------------------------ pytest-cov

@pytest.mark.parametrize("extra", [("--isolate-jobs", "3"), ("-n", "2", "--isolate-jobs", "2")],
                         ids=["jobs", "xdist"])
def test_every_sandboxs_coverage_is_merged(pytester: pytest.Pytester, full_sandbox: None,
                                           extra: "tuple[str, ...]") -> None:
    need("pytest_cov")
    if "-n" in extra:
        need("xdist")
    pytester.makepyfile(covpkg=COVERED_PKG, test_cov=COVERED_TESTS.replace("    os._exit(0)", "    pass"))
    common = ("--cov=covpkg", "--cov-report=term-missing", "-p", "no:cacheprovider")
    one = pytester.runpytest_subprocess("--isolate-all", *common, timeout=120)
    many = pytester.runpytest_subprocess("--isolate-all", *common, *extra, timeout=120)
    many.assert_outcomes(passed=4)
    assert _missing(many.stdout.str()) == _missing(one.stdout.str()) == "covpkg.py 11 1 91% 15"
    assert not list(pytester.path.glob(".coverage.*"))


def test_a_crashed_tests_coverage_is_lost_not_its_neighbours(pytester: pytest.Pytester, full_sandbox: None) -> None:
    need("pytest_cov")
    pytester.makepyfile(covpkg=COVERED_PKG, test_cov=COVERED_TESTS)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "4", "--cov=covpkg",
                                           "--cov-report=term-missing", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3, failed=1)
    assert _missing(result.stdout.str()) == "covpkg.py 11 2 82% 6, 15"


# ------------------------------------------------------------------ what would collide side by side

SAME = """
import os, socket, time, pytest, marks

PORT, NAME = int(os.environ["JOBS_PORT"]), os.environ["JOBS_NAME"]

@pytest.mark.isolated{marker}
@pytest.mark.parametrize("i", range(16))
def test_bind_and_create(i):
    group = [str(k) for k in range(i - i % 4, i - i % 4 + 4)]  # four at a time
    marks.together(*group, me=str(i))
    try:
        s = socket.socket()
        s.bind(("127.0.0.1", PORT))
        s.listen()
        fd = os.open(NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        time.sleep(0.3)
    finally:
        marks.mark("done-%d" % i)
        marks.wait_for(*["done-" + k for k in group])  # held until the whole group has tried
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("shared", [None, "network", "tmp"])
def test_tests_that_bind_one_port_and_create_one_file_run_side_by_side(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, full_sandbox: None, shared: "str | None") -> None:
    """The isolated run passes; the negative controls (the port on the
    host's network, /tmp shared) show that the same tests fail when they
    do collide."""
    project(pytester, monkeypatch)
    name = f"/tmp/same-name-{uuid.uuid4().hex}"  # not on the host: a sandbox may see the host's /tmp
    monkeypatch.setenv("JOBS_NAME", name)
    monkeypatch.setenv("JOBS_PORT", "8765" if shared is None else str(_free_port()))
    marker = {None: "", "network": "(network='host')", "tmp": "(writable=['/tmp'])"}[shared]
    pytester.makepyfile(test_same=SAME.format(marker=marker))
    try:
        result = pytester.runpytest_subprocess("--isolate-jobs", "4", "-p", "no:cacheprovider", timeout=180)
    finally:
        Path(name).unlink(missing_ok=True)
    if shared is None:
        result.assert_outcomes(passed=16)
        return
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 12, result.outlines  # in each group of four, only one got it
    result.stdout.fnmatch_lines(["*Error: *[[]Errno *[]] Address already in use*" if shared == "network"
                                 else "*FileExistsError: *[[]Errno 17[]] File exists*"])


# ------------------------------------------------------------------ the figures stay each test's own

def test_fail_on_increase_with_jobs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                    full_sandbox: None) -> None:
    """Each test's figures are its own cgroup's, beside other sandboxes too:
    the one that grew fails, its neighbours do not."""
    pytester.makepyfile(test_it="""
        import os, pytest

        def test_grows():
            hog = b"x" * (int(os.environ["ALLOC_MIB"]) << 20)

        @pytest.mark.parametrize("i", range(3))
        def test_steady(i):
            hog = b"x" * (20 << 20)
    """)
    monkeypatch.setenv("ALLOC_MIB", "40")
    args = ("--isolate-all", "--isolate-jobs", "4", "--isolate-fail-on-increase", "20", "-p", "no:randomly")
    pytester.runpytest_subprocess(*args, "--isolate-json", "base.json", timeout=120).assert_outcomes(passed=4)
    monkeypatch.setenv("ALLOC_MIB", "64")
    second = pytester.runpytest_subprocess(*args, "--isolate-json", "new.json", timeout=120)
    second.assert_outcomes(passed=4, errors=1)
    second.stdout.fnmatch_lines(["*ERROR at teardown of test_grows*",
                                 "pytest-isolate: peak memory grew *% (more than --isolate-fail-on-increase 20%)*"])
    records = {r["nodeid"]: r for r in json.loads((pytester.path / "new.json").read_text())["tests"]}
    assert [r["outcome"] for r in records.values()] == ["error", "passed", "passed", "passed"]
