"""The plugins users already run: pytest-xdist, pytest-cov, pytest-timeout."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from ..conftest import skip_unless


def need(module: str) -> None:
    """A test extra (``pip install -e '.[test]'``); CI turns the skip into a failure."""
    skip_unless(importlib.util.find_spec(module) is not None, f"{module} is not installed (install the test extras)")


# ------------------------------------------------------------------ coverage

COVERED_PKG = """
def branchy(x):
    if x > 0:
        return "positive"
    elif x < 0:
        return "negative"
    return "zero"


def only_in_sandbox():
    import os
    return os.getpid()


def never_called():
    return 1
"""

COVERED_TESTS = """
import os, pytest
import covpkg

def test_positive():
    assert covpkg.branchy(1) == "positive"

@pytest.mark.parametrize("x", [-1])
def test_negative(x):
    assert covpkg.branchy(x) == "negative"

def test_in_sandbox():
    assert covpkg.only_in_sandbox() > 0

def test_dies_after_covering():
    covpkg.branchy(0)
    os._exit(0)  # a crash: this test's lines are lost, the others' are not
"""


def _missing(stdout: str) -> str:
    """The ``covpkg`` row of the term-missing report, without the column widths."""
    rows = [line for line in stdout.splitlines() if re.match(r"^covpkg\S*\.py\s", line)]
    assert len(rows) == 1, stdout
    return " ".join(rows[0].split())


@pytest.mark.parametrize("extra", [(), ("--cov-branch",), ("-n", "2")], ids=["lines", "branches", "xdist"])
def test_coverage_is_identical_with_and_without_isolation(pytester: pytest.Pytester, full_sandbox: None,
                                                          extra: tuple[str, ...]) -> None:
    need("pytest_cov")
    if "-n" in extra:
        need("xdist")
    pytester.makepyfile(covpkg=COVERED_PKG, test_cov=COVERED_TESTS.replace("    os._exit(0)", "    pass"))
    common = ("--cov=covpkg", "--cov-report=term-missing", "-p", "no:cacheprovider", *extra)
    plain = pytester.runpytest_subprocess("--no-isolate", *common, timeout=120)
    plain.assert_outcomes(passed=4)
    iso = pytester.runpytest_subprocess("--isolate-all", *common, timeout=120)
    iso.assert_outcomes(passed=4)
    expected = "covpkg.py 11 1 91% 15" if not extra else None
    assert _missing(iso.stdout.str()) == _missing(plain.stdout.str())
    if expected is not None:
        assert _missing(iso.stdout.str()) == expected
    # The sandbox's data reached the report, not a leftover file nobody combines.
    assert not list(pytester.path.glob(".coverage.*"))


def test_coverage_of_a_crashed_test_is_lost_but_not_the_others(pytester: pytest.Pytester,
                                                                full_sandbox: None) -> None:
    need("pytest_cov")
    pytester.makepyfile(covpkg=COVERED_PKG, test_cov=COVERED_TESTS)
    result = pytester.runpytest_subprocess("--isolate-all", "--cov=covpkg", "--cov-report=term-missing",
                                           "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3, failed=1)
    assert _missing(result.stdout.str()) == "covpkg.py 11 2 82% 6, 15"


def test_coverage_contexts_name_the_isolated_test(pytester: pytest.Pytester, full_sandbox: None) -> None:
    need("pytest_cov")
    pytester.makepyfile(covpkg=COVERED_PKG, test_cov=COVERED_TESTS.replace("    os._exit(0)", "    pass"))
    result = pytester.runpytest_subprocess("--isolate-all", "--cov=covpkg", "--cov-context=test",
                                           "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=4)
    from coverage import CoverageData

    data = CoverageData(str(pytester.path / ".coverage"))
    data.read()
    [path] = [f for f in data.measured_files() if f.endswith("covpkg.py")]
    data.set_query_contexts([re.escape("test_cov.py::test_in_sandbox|run")])
    assert data.lines(path) == [10, 11]


SCOPED_COVERAGE = {
    "ctxpkg": """
def setup_helper():
    return 1

def teardown_helper():
    return 2
""",
    "test_ctx": """
import pytest
import ctxpkg

@pytest.fixture(scope="module")
def resource():
    ctxpkg.setup_helper()
    yield
    ctxpkg.teardown_helper()

def test_one(resource):
    pass
""",
}


@pytest.mark.parametrize("jobs", [None, "2"])
def test_higher_scoped_fixtures_are_covered_in_their_tests_contexts(pytester: pytest.Pytester,
                                                                      full_sandbox: None, jobs: str) -> None:
    """What pytest's process runs of a test's setup and teardown (its module
    fixture) is recorded under the test's setup and teardown contexts, as
    in plain pytest, not under the empty one."""
    need("pytest_cov")
    pytester.makepyfile(**SCOPED_COVERAGE)
    from coverage import CoverageData

    contexts = {}
    for mode in ("--no-isolate", "--isolate-all"):
        args = (mode, "--cov=ctxpkg", "--cov-context=test", "-p", "no:cacheprovider")
        result = pytester.runpytest_subprocess(*args, *(("--isolate-jobs", jobs) if jobs and "all" in mode else ()),
                                               timeout=120)
        result.assert_outcomes(passed=1)
        data = CoverageData(str(pytester.path / ".coverage"))
        data.read()
        [path] = [f for f in data.measured_files() if f.endswith("ctxpkg.py")]
        contexts[mode] = {line: sorted(c) for line, c in data.contexts_by_lineno(path).items()}
    assert contexts["--isolate-all"] == contexts["--no-isolate"]
    assert contexts["--no-isolate"][2] == ["test_ctx.py::test_one|setup"], contexts
    assert contexts["--no-isolate"][5] == ["test_ctx.py::test_one|teardown"], contexts


def test_merged_sandbox_data_survives_combine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two parallel data files (xdist workers) that measured the same lines
    themselves, each with another sandbox's lines merged in: ``combine``
    keeps both.  Coverage 7.14-7.16 skip a data file whose hash of added
    data they have seen already; the merge must count in that hash."""
    need("coverage")
    from types import SimpleNamespace

    from coverage import CoverageData
    from coverage.data import combine_parallel_data

    from pytest_isolate import cov

    src = str(tmp_path / "mod.py")
    for sandbox_lines in ([1, 2], [3, 4]):
        sandbox = CoverageData(no_disk=True)
        sandbox.add_lines({src: sandbox_lines})
        worker = CoverageData(str(tmp_path / ".coverage"), suffix=True)
        worker.add_lines({src: [10]})
        monkeypatch.setattr(cov, "_current", lambda w=worker: SimpleNamespace(_data=w))
        cov.merge({"arcs": False, "contexts": {"": {src: sandbox_lines}}, "tracers": {}})
        worker.write()
        sandbox.close(force=True)
        worker.close(force=True)
    combined = CoverageData(str(tmp_path / ".coverage"))
    combine_parallel_data(combined)
    try:
        assert sorted(combined.lines(src) or []) == [1, 2, 3, 4, 10]
    finally:
        combined.close(force=True)


# ------------------------------------------------------------------ xdist

def test_xdist_outcomes_match_a_serial_run(pytester: pytest.Pytester, full_sandbox: None) -> None:
    need("xdist")
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.parametrize("i", range(4))
        def test_ok(i):
            open("/etc/hostname", "a").write("scribble")  # thrown away with the sandbox

        def test_fail():
            assert False

        @pytest.mark.skip(reason="r")
        def test_skip():
            pass

        @pytest.mark.xfail(reason="x")
        def test_xfail():
            assert False

        @pytest.fixture
        def broken():
            raise RuntimeError("setup")

        def test_error(broken):
            pass

        def test_crash():
            os.kill(os.getpid(), 9)

        @pytest.mark.isolated(timeout=0.5)
        def test_hang():
            while True:
                pass
    """)
    args = ("--isolate-all", "-p", "no:cacheprovider", "-p", "no:randomly", "-rfE")
    serial = pytester.runpytest_subprocess(*args, timeout=120)
    parallel = pytester.runpytest_subprocess("-n", "2", *args, timeout=120)
    for result in (serial, parallel):
        result.assert_outcomes(passed=4, failed=3, skipped=1, xfailed=1, errors=1)
        result.stdout.fnmatch_lines(["*CRASHED*test_crash*", "*TIMEOUT*test_hang*"])


def test_xdist_fork_warning_never_reaches_users(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Python >= 3.12 warns on fork() in a multi-threaded process (xdist's
    execnet worker has threads); our own fork must not fail a ``-W error`` run
    nor appear in the warnings summary."""
    need("xdist")
    pytester.makepyfile("""
        import threading, time

        def test_threads_in_parent():
            assert True

        def test_more():
            assert True
    """)
    pytester.makeconftest("""
        import threading, time
        # A thread in every pytest process, as pytest-cov, xdist or a user's
        # session fixture would start: fork() now sees a multi-threaded process.
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
    """)
    for args in (("-n", "2"), ()):
        # pytest-benchmark 5.2 (the last for Python 3.9) warns at configure
        # that xdist disables it: under -W error, plain pytest stops there too
        result = pytester.runpytest_subprocess(*args, "--isolate-all", "-W", "error", "-p", "no:cacheprovider",
                                               "-p", "no:benchmark", timeout=120)
        result.assert_outcomes(passed=2)
        out = result.stdout.str() + result.stderr.str()
        assert "multi-threaded" not in out and "DeprecationWarning" not in out
        assert "warnings summary" not in out


def test_each_xdist_worker_has_its_own_cgroup_subtree(pytester: pytest.Pytester, full_sandbox: None,
                                                      caps: object) -> None:
    need("xdist")
    skip_unless(bool(getattr(caps, "cgroups", "")), "this host has no usable cgroups")
    pytester.makeconftest("""
        import glob, json, os, time

        def cgroups_of_running_sandboxes():
            found = []
            for top in glob.glob("/sys/fs/cgroup/**/pytest-isolate", recursive=True):
                for sb in glob.glob(os.path.join(top, "run-*", "sb-*")):
                    try:
                        procs = open(os.path.join(sb, "cgroup.procs")).read().split()
                    except OSError:
                        continue
                    if procs:
                        found.append(os.path.relpath(sb, top))
            return found

        def pytest_isolate_launcher(item):
            import isolate_runtime

            def launch(spec, on_message):
                seen = []

                def spy(msg):
                    if not seen:  # the sandbox is running: its cgroup is populated
                        seen.extend(cgroups_of_running_sandboxes())
                    on_message(msg)

                result = isolate_runtime.run(spec, on_message=spy)
                worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
                with open(f"cgroups-{worker}-{os.getpid()}.json", "a") as f:
                    f.write(json.dumps(seen) + "\\n")
                return result
            return launch
    """)
    pytester.makepyfile("""
        import pytest, time

        @pytest.mark.parametrize("i", range(6))
        def test_a(i):
            time.sleep(0.2)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=6)
    files = sorted(pytester.path.glob("cgroups-gw*.json"))
    assert len(files) == 2, files
    runs = {}
    for path in files:
        pid = path.stem.rsplit("-", 1)[1]
        seen = {sb for line in path.read_text().splitlines() for sb in json.loads(line)}
        own = {sb for sb in seen if sb.startswith(f"run-{pid}-")}
        assert own, (path.name, seen)  # the worker's sandbox ran in the worker's own run-<pid>-* subtree
        runs[pid] = {sb.split("/")[0] for sb in own}
    a, b = runs.values()
    assert len(a) == len(b) == 1 and a != b


# ------------------------------------------------------------------ pytest-timeout

def test_pytest_timeout_marker_becomes_a_sandbox_timeout(pytester: pytest.Pytester, full_sandbox: None) -> None:
    need("pytest_timeout")
    pytester.makepyfile("""
        import pytest, time

        @pytest.mark.timeout(1)
        def test_loop():
            while True:
                pass

        @pytest.mark.isolated(timeout=1)
        @pytest.mark.timeout(30)
        def test_ours_wins():
            time.sleep(60)

        def test_cli(request):
            time.sleep(60)

        def test_quick():
            pass

        @pytest.mark.timeout(0)
        def test_disabled():
            time.sleep(2.5)
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "--timeout", "2", "-p", "no:cacheprovider",
                                           timeout=120)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "Failed: Timeout" not in out
    result.assert_outcomes(passed=2, failed=3)
    # the header says so with -v only (one line by default)
    assert "pytest-timeout's timeouts apply" not in out
    verbose = pytester.runpytest_subprocess("--isolate-all", "--timeout", "2", "-v", "--co", timeout=60)
    verbose.stdout.fnmatch_lines(["isolate: pytest-timeout's timeouts apply to isolated tests as sandbox timeouts "
                                  "(stack dump, then the whole sandbox is killed)"])
    result.stdout.fnmatch_lines([
        "*_ test_loop _*", "TIMEOUT: *(limit 1s) during call*",
        "*_ test_ours_wins _*", "TIMEOUT: *(limit 1s) during call*",
        "*_ test_cli _*", "TIMEOUT: *(limit 2s) during call*",
    ])


def test_pytest_timeout_ini_and_unisolated_tests(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """The ini ``timeout`` reaches isolated tests; tests that are not isolated
    keep pytest-timeout's own behaviour."""
    need("pytest_timeout")
    pytester.makeini("[pytest]\ntimeout = 1\n")
    pytester.makepyfile("""
        import pytest, time

        @pytest.mark.isolated
        def test_isolated():
            time.sleep(60)

        def test_plain():
            time.sleep(60)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert "INTERNALERROR" not in result.stdout.str()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*_ test_isolated _*", "TIMEOUT: *(limit 1s) during call*",
                                 "*_ test_plain _*", "*Failed: Timeout*"])


def test_bad_pytest_timeout_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    need("pytest_timeout")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.timeout("soon")
        def test_x():
            pass
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid timeout 'soon' from marker timeout on test_*::test_x*"])


# ------------------------------------------------------------------ python -m pytest_isolate

def test_python_m_prints_the_capability_table(pytester: pytest.Pytester) -> None:
    result = pytester.run(sys.executable, "-m", "pytest_isolate", timeout=60)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["pytest-isolate: isolation layers on this host*", "*user*"])
