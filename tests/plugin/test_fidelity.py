"""An isolated run reads exactly like an unisolated one; the host is untouched."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from ..conftest import skip_unless

SUITE = """
import logging, sys, warnings, pytest

@pytest.fixture
def noisy():
    print("fixture setup out")
    sys.stderr.write("fixture setup err\\n")
    yield
    print("fixture teardown out")

def test_pass_with_output(noisy, record_property):
    record_property("answer", 42)
    print("call out")
    logging.getLogger("suite").warning("a log line")
    warnings.warn(UserWarning("a user warning"))
    warnings.warn(DeprecationWarning("a deprecation"))

def test_fail_with_output(noisy, request):
    request.node.user_properties.append(("stage", "call"))
    print("about to fail")
    assert 1 + 1 == 3, "arithmetic"

@pytest.mark.skip(reason="skipped by mark")
def test_skip_mark():
    pass

def test_skip_inside():
    pytest.skip("skipped inside")

@pytest.mark.xfail(reason="expected to fail")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="unexpectedly passes")
def test_xpass():
    pass

@pytest.mark.xfail(reason="strict xpass", strict=True)
def test_xpass_strict():
    pass

def test_xfail_inside():
    pytest.xfail("xfailed inside")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_teardown_error(broken_teardown):
    pass

@pytest.mark.filterwarnings("error::UserWarning")
def test_warning_as_error():
    warnings.warn(UserWarning("now an error"))

@pytest.mark.parametrize("x", [1, 2])
def test_param(x):
    assert x
"""

REPORTER = """
import json

def pytest_runtest_logreport(report):
    with open("reports.jsonl", "a") as f:
        f.write(json.dumps([report.nodeid, str(getattr(report, "id", report.nodeid)), report.when,
                            report.outcome,
                            # the one intended difference: the isolate.* resource figures
                            [p for p in report.user_properties if not p[0].startswith("isolate.")],
                            getattr(report, "wasxfail", None),
                            [s[0] for s in report.sections]]) + "\\n")
"""

TIMES = re.compile(r"\d+\.\d+s|time=\"[\d.]+\"|timestamp=\"[^\"]+\"|hostname=\"[^\"]+\"")


def _normalized(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith(("isolate:", "rootdir:", "platform "))]
    return TIMES.sub("T", "\n".join(lines))


def test_isolated_run_reads_like_an_unisolated_one(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(REPORTER)
    pytester.makepyfile(test_suite=SUITE)
    common = ("-rA", "-p", "no:cacheprovider", "-W", "always::DeprecationWarning", "-o", "junit_family=xunit1")
    plain = pytester.runpytest_subprocess("--no-isolate", "--junitxml=plain.xml", *common, timeout=120)
    plain_reports = (pytester.path / "reports.jsonl").read_text()
    (pytester.path / "reports.jsonl").unlink()
    iso = pytester.runpytest_subprocess("--isolate-all", "--junitxml=iso.xml", *common, timeout=120)
    iso_reports = (pytester.path / "reports.jsonl").read_text()
    assert iso.ret == plain.ret == 1
    assert _normalized(iso.stdout.str()).replace("iso.xml", "X") == _normalized(plain.stdout.str()).replace(
        "plain.xml", "X")
    assert iso_reports == plain_reports
    assert _normalized((pytester.path / "iso.xml").read_text()) == _normalized(
        (pytester.path / "plain.xml").read_text())
    # The comparison is only worth something if the run really was isolated.
    assert "isolate: sandbox layers:" in iso.stdout.str()
    assert "Captured stdout setup" in iso.stdout.str() and "a user warning" in iso.stdout.str()


@pytest.mark.parametrize("args", [(), ("--reruns", "1")], ids=["own-protocol", "phased"])
def test_higher_scoped_setup_and_teardown_count_in_the_tests_durations(pytester: pytest.Pytester,
                                                                       full_sandbox: None,
                                                                       args: Tuple[str, ...]) -> None:
    # pytest counts a module fixture's setup in its first test's setup phase
    # and its teardown in its last test's teardown: so do --durations and junitxml
    if args:
        pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile("""
        import time, pytest
        @pytest.fixture(scope="module")
        def slow():
            time.sleep(0.4)
            yield
            time.sleep(0.3)
        def test_a(slow): pass
        def test_b(slow): pass
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "--durations=0",
                                           "--durations-min=0.25", *args, timeout=60)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    setup = re.search(r"^(\d+\.\d+)s setup\s+test_higher\S*::test_a$", out, re.M)
    teardown = re.search(r"^(\d+\.\d+)s teardown\s+test_higher\S*::test_b$", out, re.M)
    assert setup and float(setup.group(1)) >= 0.4, out
    assert teardown and float(teardown.group(1)) >= 0.3, out


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_faulthandler_timeout_dumps_the_tests_stack(pytester: pytest.Pytester, full_sandbox: None,
                                                    jobs: str) -> None:
    pytester.makeini("[pytest]\nfaulthandler_timeout = 0.3\n")
    pytester.makepyfile("""
        import time
        def test_slow_one():
            time.sleep(0.8)
        def test_quick():
            pass
        def test_slow_two():
            time.sleep(0.8)
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-p", "no:rerunfailures",
                                           "--isolate-jobs", jobs, timeout=60)
    result.assert_outcomes(passed=3)
    err = result.stderr.str()
    dumps = err.split("Timeout (0:00:00.300000)!")[1:]
    assert len(dumps) == 2, err
    assert [re.findall(r"line \d+ in (test_\w+)", d) for d in dumps] == [["test_slow_one"], ["test_slow_two"]], err
    # not pytest's process waiting for its sandbox
    assert not re.search(r"(launcher\.py\", line \d+ in wait(_any)?|protocol\.py\", line \d+ in result)$", err,
                         re.M), err


JUNIT_RECORDS = """
    import pytest
    @pytest.fixture(scope="session", autouse=True)
    def suite(record_testsuite_property):
        record_testsuite_property("FROM_SESSION", 1)
    def test_a(record_xml_attribute, record_testsuite_property, record_property):
        record_xml_attribute("myattr", "<val>")
        record_testsuite_property("SUITE_PROP", "yes")
        record_property("p", 2)
    def test_b(record_testsuite_property):
        with pytest.raises(TypeError):
            record_testsuite_property(3, "not a name")
"""


def test_junitxml_records_made_in_a_sandbox_reach_the_report(pytester: pytest.Pytester, full_sandbox: None) -> None:
    # record_xml_attribute and record_testsuite_property write into pytest's
    # junitxml writer: the sandbox's copy of it is never written out
    pytester.makepyfile(test_junit=JUNIT_RECORDS)
    common = ("-p", "no:cacheprovider", "-o", "junit_family=xunit1")
    plain = pytester.runpytest_subprocess("--no-isolate", "--junitxml=plain.xml", *common, timeout=60)
    iso = pytester.runpytest_subprocess("--isolate-all", "--junitxml=iso.xml", *common, timeout=60)
    plain.assert_outcomes(passed=2, warnings=1)
    iso.assert_outcomes(passed=2, warnings=1)

    def xml(name: str) -> str:
        return re.sub(r'(time|timestamp|hostname)="[^"]*"', "", (pytester.path / name).read_text())

    assert 'myattr="&lt;val&gt;"' in xml("plain.xml") and 'name="SUITE_PROP"' in xml("plain.xml")
    assert xml("iso.xml") == xml("plain.xml")


HIGHER_SCOPED_LOGS = """
    import logging, pytest
    @pytest.fixture(scope="module")
    def modf():
        logging.getLogger("m").warning("module setup log")
        yield
        logging.getLogger("m").warning("module teardown log")
    @pytest.fixture
    def fn():
        logging.getLogger("m").warning("function setup log")
        yield
    def test_a(modf, fn):
        logging.getLogger("m").warning("call log")
        assert 0
    def test_b(modf):
        assert 0
"""


@pytest.mark.parametrize("live", [False, True], ids=["captured", "log_cli"])
def test_higher_scoped_fixtures_logs_land_where_pytest_puts_them(pytester: pytest.Pytester, full_sandbox: None,
                                                                 live: bool) -> None:
    # pytest's process sets the module fixture up and tears it down: its log
    # records belong in the tests' "Captured log setup/teardown" (and under
    # the "live log setup/teardown" headings), with the sandbox's own
    pytester.makepyfile(test_logs=HIGHER_SCOPED_LOGS)
    args = ["-p", "no:cacheprovider", "-p", "no:rerunfailures", "-p", "no:benchmark", "-rA"]
    if live:
        args += ["-o", "log_cli=true"]
    plain = pytester.runpytest_subprocess("--no-isolate", *args, timeout=60)
    iso = pytester.runpytest_subprocess("--isolate-all", *args, timeout=60)
    assert "module teardown log" in plain.stdout.str()

    def lines(result: pytest.RunResult) -> List[str]:
        return [line for line in _normalized(result.stdout.str()).splitlines() if not line.startswith("    isolate:")]

    assert lines(iso) == lines(plain)


def test_s_shows_live_output_of_isolated_tests(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.isolated
        def test_a():
            print("LIVE FROM THE SANDBOX")
    """)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=60)
    result.stdout.fnmatch_lines(["*LIVE FROM THE SANDBOX*"])
    result.assert_outcomes(passed=1)


def _procs_with(token: str) -> "list[int]":
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if token in " ".join(p.info["cmdline"] or []):
            found.append(p.pid)
    return found


def test_daemons_and_project_writes_leave_nothing_on_the_host(pytester: pytest.Pytester,
                                                              full_sandbox: None) -> None:
    token = f"4242.{time.time_ns() % 10**6}"
    pytester.makepyfile(test_escape=f"""
        import os, subprocess, pytest

        @pytest.mark.isolated
        def test_leave_daemon():
            # setsid + double fork: re-parented away from the test process
            subprocess.Popen(["sh", "-c", "sleep {token} &"], start_new_session=True)
            subprocess.Popen(["sleep", "{token}"], start_new_session=True)

        @pytest.mark.isolated
        def test_write_project(tmp_path):
            with open("new_file.txt", "w") as f:
                f.write("should vanish")
            with open("data.txt", "a") as f:
                f.write("appended")
            os.remove("keep.txt")
            (tmp_path / "kept.txt").write_text("tmp_path survives")
    """)
    (pytester.path / "data.txt").write_text("original")
    (pytester.path / "keep.txt").write_text("keep")
    before = sorted(p.name for p in pytester.path.iterdir())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--basetemp={pytester.path}/bt",
                                           timeout=60)
    result.assert_outcomes(passed=2)
    assert _procs_with(token) == []
    # ours, pytester's, and pytest-benchmark's (installed with the test extra, it makes
    # .benchmarks in every run, isolated or not)
    artifacts = ("bt", "__pycache__", "stdout", "stderr", ".benchmarks")
    after = sorted(p.name for p in pytester.path.iterdir()
                   if p.name not in artifacts and not p.name.startswith("runpytest"))
    assert after == [n for n in before if n not in artifacts]
    assert (pytester.path / "data.txt").read_text() == "original"
    assert (pytester.path / "keep.txt").read_text() == "keep"
    kept = {p.resolve() for p in (pytester.path / "bt").glob("*/kept.txt")}
    assert [p.read_text() for p in kept] == ["tmp_path survives"]


def test_runs_under_xdist(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile("""
        import os, pytest

        @pytest.fixture(scope="session")
        def sess():
            return os.getpid()

        @pytest.mark.parametrize("i", range(6))
        def test_a(sess, i):
            assert os.getpid() == 2 and sess != 2

        def test_crash():
            os._exit(5)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["CRASHED: the test process exited with status 5 during call*"])


def test_launcher_hook_swaps_the_runtime_and_result_hook_sees_stats(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        from isolate_runtime import Outcome, SandboxResult

        def pytest_isolate_launcher(item):
            def fake(spec, on_message=None):
                print("FAKE LAUNCHER", spec.label, spec.timeout_seconds, spec.limits.memory_bytes)
                return SandboxResult(Outcome.CRASHED, signal=9)
            return fake

        def pytest_isolate_modify_spec(item, spec):
            return spec.replace(timeout_seconds=7.0)

        def pytest_isolate_result(item, result):
            print("RESULT", item.name, result.outcome.value)
    """)
    pytester.makepyfile("""
        import pytest
        @pytest.mark.isolated(memory="1M")
        def test_a(): pass
    """)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=60)
    result.stdout.fnmatch_lines(["*FAKE LAUNCHER test_launcher_hook_swaps_the_runtime_and_result_hook_sees_stats.py"
                                 "::test_a 7.0 1048576*", "*RESULT test_a crashed*"])
    result.stdout.fnmatch_lines(["CRASHED: the test process was killed by SIGKILL during setup"])


def test_child_setup_hook_runs_in_the_sandbox(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest("""
        import os
        def pytest_isolate_child_setup(item):
            os.environ["SEEN_IN_CHILD"] = str(os.getpid())
    """)
    pytester.makepyfile("""
        import os, pytest
        @pytest.mark.isolated
        def test_a():
            assert os.environ["SEEN_IN_CHILD"] == "2"
        def test_b():
            assert "SEEN_IN_CHILD" not in os.environ
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=2)


def test_nodeid_round_trips(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """pytest 9.2 keeps a structured NodeId behind report.nodeid."""
    pytester.makeconftest("""
        def pytest_runtest_logreport(report):
            nid = getattr(report, "id", None)
            print("ID", report.nodeid, type(nid).__name__, str(nid) if nid is not None else "-")
    """)
    pytester.makepyfile("""
        import pytest
        @pytest.mark.isolated
        @pytest.mark.parametrize("p", ["a::b[c]"])
        def test_x(p): pass
    """)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1)
    ids = ["ID " + line.split("ID ", 1)[1] for line in result.outlines if "ID " in line]
    assert len(ids) == 3
    node = "test_nodeid_round_trips.py::test_x[a::b[c]]"
    for line in ids:
        assert line.startswith(f"ID {node} ")
        if "NodeId" in line:
            assert line.endswith(node)




def test_discarded_writes_are_reported_with_the_test(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile(test_w="""
        def test_writes():
            with open("scratch.txt", "w") as f:
                f.write("gone after the test")

        def test_clean(tmp_path):
            (tmp_path / "kept.txt").write_text("tmp_path is a writable pass-through")
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-rP", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*- pytest-isolate: writes discarded at sandbox teardown -*",
        f"{pytester.path}/scratch.txt",
    ])
    assert result.stdout.str().count("writes discarded") == 1, "a test that wrote nothing outside tmp_path is listed"
    assert not (pytester.path / "scratch.txt").exists()


@pytest.mark.parametrize("capture", ["-s", "--capture=fd"])
def test_breakpoint_works_inside_the_sandbox(pytester: pytest.Pytester, full_sandbox: None, capture: str) -> None:
    pytester.makepyfile(test_bp="""
        import os, pytest

        @pytest.mark.isolated
        def test_debugged():
            x = 41
            breakpoint()
            assert x == 42
            assert os.getpid() < 10  # still inside the sandbox's PID namespace
    """)
    proc = pytester.popen([sys.executable, "-m", "pytest", capture, "-p", "no:cacheprovider", "-q"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(b"p x + 1\nx = 42\nc\n", timeout=60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "(Pdb) 42" in text and "1 passed" in text


HOOK_CONFTEST = """
import importlib.abc, importlib.util, sys

ROOT = {root!r}

class EditableFinder(importlib.abc.MetaPathFinder):
    # what setuptools' editable install does: the package is found through
    # an import hook, its checkout is not on sys.path
    def find_spec(self, name, path=None, target=None):
        if name != "hookpkg":
            return None
        return importlib.util.spec_from_file_location(
            name, ROOT + "/hookpkg/__init__.py", submodule_search_locations=[ROOT + "/hookpkg"])

sys.meta_path.append(EditableFinder())
import hookpkg
"""


def test_a_package_imported_from_under_tmp_through_an_import_hook_is_visible(pytester: pytest.Pytester,
                                                                             full_sandbox: None) -> None:
    # A checkout under /tmp installed in editable mode: the sandbox's private
    # /tmp must still show it (a submodule imported only by the test, a file
    # of the checkout), copy-on-write.
    checkout = Path("/tmp") / f"isolate-editable-{os.getpid()}-{time.monotonic_ns()}"
    (checkout / "hookpkg").mkdir(parents=True)
    try:
        (checkout / "hookpkg" / "__init__.py").write_text("")
        (checkout / "hookpkg" / "lazy.py").write_text("VALUE = 42\n")
        (checkout / "setup.cfg").write_text("[metadata]\n")
        pytester.makeconftest(HOOK_CONFTEST.format(root=str(checkout)))
        pytester.makepyfile(test_hook=f"""
            import os

            def test_lazy_submodule_and_checkout_files():
                import hookpkg.lazy
                assert hookpkg.lazy.VALUE == 42
                assert os.path.exists({str(checkout / "setup.cfg")!r})
                with open({str(checkout / "new.txt")!r}, "w") as f:
                    f.write("copy-on-write")
        """)
        result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=60)
        result.assert_outcomes(passed=1)
        assert sorted(p.name for p in checkout.iterdir()) == ["hookpkg", "setup.cfg"]
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


HIGHER_SCOPED_ERRORS_CONFTEST = """
import pytest

@pytest.fixture(scope="module")
def broken_setup():
    raise ValueError("module setup boom")

@pytest.fixture(scope="module")
def broken_teardown():
    yield
    raise RuntimeError("module teardown boom")
"""

HIGHER_SCOPED_ERRORS = {
    "test_plain_errors.py": """
def test_setup_error(broken_setup):
    pass

def test_teardown_error(broken_teardown):
    pass
""",
    "test_xfail_errors.py": """
import pytest

@pytest.mark.xfail(reason="known")
def test_xfail_setup_error(broken_setup):
    pass

@pytest.mark.xfail(reason="known")
def test_xfail_teardown_error(broken_teardown):
    pass
""",
}


@pytest.mark.parametrize("mode", [("--isolate-all",), ("--isolate-all", "--isolate-jobs", "2")],
                         ids=["isolated", "jobs-2"])
def test_a_higher_scoped_fixtures_errors_read_as_in_plain_pytest(pytester: pytest.Pytester, full_sandbox: None,
                                                                 mode: Tuple[str, ...]) -> None:
    """The fixture's own frames and nothing of the plugin's in the traceback
    (the fixture lives in a conftest: pytest cuts only the test module's
    neighbours), and an xfail test's setup or teardown error is XFAIL."""
    pytester.makeconftest(HIGHER_SCOPED_ERRORS_CONFTEST)
    pytester.makepyfile(**HIGHER_SCOPED_ERRORS)
    common = ("-rA", "-p", "no:cacheprovider")
    plain = pytester.runpytest_subprocess("--no-isolate", *common, timeout=120)
    iso = pytester.runpytest_subprocess(*mode, *common, timeout=120)
    assert iso.ret == plain.ret == 1
    assert _normalized(iso.stdout.str()) == _normalized(plain.stdout.str())
    assert "pytest_isolate" not in iso.stdout.str()
    plain.assert_outcomes(passed=1, xpassed=1, xfailed=2, errors=2)
    assert "isolate: sandbox layers:" in iso.stdout.str()


PARENT_LOG_AND_SANDBOX_OUTPUT = """
import logging
import sys
import pytest

@pytest.fixture(scope="module")
def logs_in_setup():
    logging.getLogger("mod").warning("the module fixture's log")

@pytest.fixture
def prints():
    print("the function fixture's stdout")
    print("the function fixture's stderr", file=sys.stderr)
    logging.getLogger("fn").warning("the function fixture's log")

def test_both(logs_in_setup, prints):
    pass
"""


@pytest.mark.parametrize("mode", [("--isolate-all",), ("--isolate-all", "--isolate-jobs", "2")],
                         ids=["isolated", "jobs-2"])
def test_a_phases_sections_keep_pytests_order_when_the_parent_logged_in_it(
        pytester: pytest.Pytester, full_sandbox: None, mode: Tuple[str, ...]) -> None:
    """The module fixture logs in pytest's process, the test's own fixture
    prints and logs in the sandbox: one setup phase, whose sections come in
    pytest's order (stdout, stderr, log), not the parent's log first."""
    pytester.makepyfile(test_sections=PARENT_LOG_AND_SANDBOX_OUTPUT)
    plain = pytester.runpytest_subprocess("--no-isolate", "-rA", "-p", "no:cacheprovider", timeout=120)
    iso = pytester.runpytest_subprocess(*mode, "-rA", "-p", "no:cacheprovider", timeout=120)
    titles = [line.strip("- ") for line in plain.stdout.lines if line.startswith("---") and "Captured" in line]
    assert titles == ["Captured stdout setup", "Captured stderr setup", "Captured log setup"]
    assert _normalized(iso.stdout.str()) == _normalized(plain.stdout.str())
    assert "isolate: sandbox layers:" in iso.stdout.str()


def test_an_xfail_tests_higher_scoped_setup_error_is_xfail_under_a_rerun_plugin_too(
        pytester: pytest.Pytester, full_sandbox: None) -> None:
    """With pytest-rerunfailures the test runs another plugin's protocol
    (phased): the parent's setup failure is raised there."""
    skip_unless(importlib.util.find_spec("pytest_rerunfailures") is not None, "pytest-rerunfailures is not installed")
    pytester.makeconftest(HIGHER_SCOPED_ERRORS_CONFTEST)
    pytester.makepyfile(test_x="""
import pytest

@pytest.mark.xfail(reason="known")
def test_xfail_setup_error(broken_setup):
    pass
""")
    xfails = {}
    for mode in ("--no-isolate", "--isolate-all"):
        got = pytester.runpytest_subprocess(mode, "--reruns", "1", "-rA", "-p", "no:cacheprovider", timeout=120)
        assert got.ret == 0, (mode, got.stdout.str())
        # pytest 9: "XFAIL at setup of test_x.py::...", before: "XFAIL test_x.py::..."
        xfails[mode] = [line for line in got.stdout.lines if line.startswith("XFAIL ")]
    assert xfails["--isolate-all"] == xfails["--no-isolate"] != [], xfails


BROKEN_XFAIL_CONDITION = """
import time
import pytest

def test_a():
    time.sleep(0.2)

@pytest.mark.xfail(condition="1 +", reason="a condition that does not compile")
def test_b():
    pass

def test_c():
    pass
"""


@pytest.mark.parametrize("mode", [("--isolate-all",), ("--isolate-all", "--isolate-jobs", "3")],
                         ids=["isolated", "jobs-3"])
def test_a_broken_xfail_condition_is_the_tests_error_as_in_plain_pytest(pytester: pytest.Pytester,
                                                                        full_sandbox: None,
                                                                        mode: Tuple[str, ...]) -> None:
    """pytest reports it with pytest.fail (a BaseException): looking at the
    next test's marks ahead of its turn must not end the session."""
    pytester.makepyfile(test_broken=BROKEN_XFAIL_CONDITION)
    plain = pytester.runpytest_subprocess("--no-isolate", "-rA", "-p", "no:cacheprovider", timeout=120)
    iso = pytester.runpytest_subprocess(*mode, "-rA", "-p", "no:cacheprovider", timeout=120)
    assert iso.ret == plain.ret == 1
    assert _normalized(iso.stdout.str()) == _normalized(plain.stdout.str())
    assert "INTERNALERROR" not in iso.stdout.str() + iso.stderr.str()
    plain.assert_outcomes(passed=2, errors=1)
