"""Crashes, timeouts and OOM kills in each phase become the right report."""
from __future__ import annotations

import pytest

ACTIONS = {
    "exit1": ("os._exit(1)", "",
              "CRASHED: the test process exited with status 1 during {phase} "
              "(os._exit or a C-level exit: the test did not finish)"),
    "segv": ("os.kill(os.getpid(), signal.SIGSEGV)", "",
             "CRASHED: the test process was killed by SIGSEGV during {phase}"),
    "kill": ("os.kill(os.getpid(), signal.SIGKILL)", "",
             "CRASHED: the test process was killed by SIGKILL during {phase}"),
    "loop": ("while True: pass", "timeout=1",
             "TIMEOUT: the test exceeded its time limit (limit 1s) during {phase}; the whole sandbox was killed"),
    "oom": ("hog = b'x' * (300 << 20)", "memory='100M'",
            "OOM: the sandbox ran out of memory and was killed during {phase} (oom_kill=*, limit 100 MiB*"),
}
WORD = {"exit1": "CRASHED", "segv": "CRASHED", "kill": "CRASHED", "loop": "TIMEOUT", "oom": "OOM"}
LETTER = {"CRASHED": "C", "TIMEOUT": "T", "OOM": "M"}

MODULE = """
import os, signal, pytest

@pytest.fixture
def phase_fixture():
    print("started {phase}")
    if "{phase}" == "setup":
        {action}
    yield
    if "{phase}" == "teardown":
        print("in teardown")
        {action}

@pytest.mark.isolated({kwargs})
def test_bad(phase_fixture):
    if "{phase}" == "call":
        print("in call")
        {action}

@pytest.mark.isolated
def test_next():
    pass

def test_plain_after():
    pass
"""


@pytest.mark.parametrize("phase", ["setup", "call", "teardown"])
@pytest.mark.parametrize("what", list(ACTIONS))
def test_abnormal_end(pytester: pytest.Pytester, full_sandbox: None, what: str, phase: str) -> None:
    action, kwargs, message = ACTIONS[what]
    pytester.makepyfile(test_it=MODULE.format(phase=phase, action=action, kwargs=kwargs))
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider", "-p", "no:faulthandler", timeout=120)
    word = WORD[what]
    if what == "oom" and "OOM" not in result.stdout.str() and "test_bad PASSED" in result.stdout.str():
        pytest.xfail("the memory limit is not enforced on this host (no cgroup memory backend)")
    if phase == "call":
        result.assert_outcomes(failed=1, passed=2)
        result.stdout.fnmatch_lines([f"test_it.py::test_bad {word}*"])
    elif phase == "setup":
        result.assert_outcomes(errors=1, passed=2)
        result.stdout.fnmatch_lines([f"test_it.py::test_bad {word}*"])
    else:
        result.assert_outcomes(errors=1, passed=3)
        result.stdout.fnmatch_lines(["test_it.py::test_bad PASSED*", f"test_it.py::test_bad {word}*"])
    result.stdout.fnmatch_lines([
        message.format(phase=phase),
        f"*Captured stdout {phase}*",
        "started setup" if phase == "setup" else f"in {phase}",
    ])
    heading = "__ test_bad __" if phase == "call" else f"__ ERROR at {phase} of test_bad __"
    result.stdout.fnmatch_lines([f"*{heading}*"])
    short = message.format(phase=phase).split(": ", 1)[1]
    result.stdout.fnmatch_lines([f"{word} test_it.py::test_bad - {short[:20]}*"])
    result.stdout.fnmatch_lines(["test_it.py::test_next PASSED*", "test_it.py::test_plain_after PASSED*"])
    if what == "loop":
        result.stdout.fnmatch_lines(["Stacks of all threads before the kill:", "*test_it.py*"])
    assert result.ret == 1


def test_progress_letters_and_junitxml(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile("""
        import os, signal, pytest

        @pytest.mark.isolated
        def test_segv():
            os.kill(os.getpid(), signal.SIGSEGV)

        @pytest.mark.isolated(timeout=0.5)
        def test_hang():
            while True: pass

        @pytest.fixture
        def dies():
            os._exit(0)

        @pytest.mark.isolated
        def test_setup_exit(dies):
            pass

        @pytest.mark.isolated
        def test_ok():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:faulthandler",
                                           "--junitxml=out.xml", timeout=60)
    result.stdout.fnmatch_lines(["test_progress_letters_and_junitxml.py CTC. *"])
    result.assert_outcomes(failed=2, errors=1, passed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert 'failures="2"' in xml and 'errors="1"' in xml
    assert '<failure message="the test process was killed by SIGSEGV during call"' in xml
    assert '<error message="failed on setup with &quot;the test process exited with status 0 during setup' in xml


def test_os_exit_zero_is_never_a_pass(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile("""
        import os, pytest
        @pytest.mark.isolated
        def test_exit0():
            os._exit(0)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["CRASHED: the test process exited with status 0 during call*",
                                 "CRASHED test_os_exit_zero_is_never_a_pass.py::test_exit0 - the test process*"])


@pytest.mark.parametrize("strict", [False, True])
def test_crash_in_xfail_test_honours_the_marker(pytester: pytest.Pytester, full_sandbox: None, strict: bool) -> None:
    pytester.makepyfile(f"""
        import os, signal, pytest

        @pytest.mark.isolated
        @pytest.mark.xfail(reason="known segfault", strict={strict})
        def test_xfail_crash():
            os.kill(os.getpid(), signal.SIGSEGV)

        @pytest.mark.isolated
        @pytest.mark.xfail(raises=ValueError, reason="only ValueError expected")
        def test_xfail_raises_other():
            os.kill(os.getpid(), signal.SIGSEGV)

        @pytest.mark.isolated
        @pytest.mark.xfail(False, reason="condition false")
        def test_xfail_condition_false():
            os.kill(os.getpid(), signal.SIGSEGV)
    """)
    result = pytester.runpytest_subprocess("-rxX", "-p", "no:cacheprovider", "-p", "no:faulthandler", timeout=60)
    result.assert_outcomes(xfailed=1, failed=2)
    result.stdout.fnmatch_lines(["XFAIL *test_xfail_crash - known segfault"])


def test_exit_and_keyboard_interrupt_stop_the_session(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="session", autouse=True)
        def sess():
            yield
            print("\\nSESSION TEARDOWN RAN")

        @pytest.mark.isolated
        def test_stop():
            pytest.exit("stopping here", returncode=3)

        def test_never():
            pass
    """)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=60)
    assert result.ret == 3
    result.stdout.fnmatch_lines(["*SESSION TEARDOWN RAN*"])
    result.stdout.fnmatch_lines(["*Exit: stopping here*"])
    assert "test_never" not in result.stdout.str()
    result.assert_outcomes()
    pytester.makepyfile(test_kbd="""
        import pytest

        @pytest.mark.isolated
        def test_interrupt():
            raise KeyboardInterrupt

        def test_never():
            pass
    """)
    result = pytester.runpytest_subprocess("test_kbd.py", "-p", "no:cacheprovider", timeout=60)
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    assert "test_never" not in result.stdout.str()


BIG = """
import pytest

@pytest.mark.isolated
def test_big():
    print("o" * 3_000_000)  # more captured output than a third of the limit
    pytest.fail("y" * 1_000_000)  # a message the report holds several times

@pytest.mark.isolated
def test_control_characters():
    # six bytes each as they are sent
    print("\\x01" * 3_000_000)
    pytest.fail("\\x1b" * 1_000_000)

@pytest.mark.isolated
def test_many_lines():
    # a line of the report each: far more values than a message may hold
    pytest.fail("\\n".join("line %d" % i for i in range(250_000)))

def test_after():
    pass
"""


def test_a_report_too_big_for_the_limit_is_cut_to_fit(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Plain pytest shows it whole; whole, it would be over the message limit
    and the test CRASHED: its output and failure text are cut, and say so."""
    pytester.makepyfile(test_big=BIG)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--isolate-message-limit", "4M", timeout=120)
    result.assert_outcomes(failed=3, passed=1)
    result.stdout.no_fnmatch_line("*CRASHED*")
    result.stdout.fnmatch_lines([
        "*[[]pytest-isolate: the last * characters of this text were cut: what one test sends back is limited by "
        "--isolate-message-limit[]]*",
        "*[[]pytest-isolate: the first * characters of this output were cut: what one test sends back is limited "
        "by --isolate-message-limit[]]*",
        "*[[]pytest-isolate: * more lines were cut: what one test sends back is limited by "
        "--isolate-message-limit[]]*"])
