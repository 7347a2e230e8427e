"""Fault matrix: each misbehaving test gets the right outcome; the session, junitxml and host survive."""
from __future__ import annotations

import os
import signal
import textwrap

import pytest

from .harness import Hostile, mountinfo, no_tagged_processes, our_cgroup_runs, wait_until

OK = "test_zz_canary_after_the_hostile_test"


def test_sigkill_of_pytest_mid_test_leaves_nothing_and_the_next_run_cleans_up(hostile: Hostile) -> None:
    hostile.write("""
        import subprocess, sys, time
        import hostile as h

        def test_busy_with_children():
            for _ in range(3):
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "leak-" + h.TAG],
                                 start_new_session=True)
            time.sleep(0.3)
            h.record("started", h.tagged_alive())
            time.sleep(300)
    """)
    before = mountinfo()
    proc = hostile.start()
    assert wait_until(lambda: hostile.evidence("started") is not None, 30), "the hostile test never started"
    assert len(hostile.evidence("started")) == 3, f"its children never started: {hostile.all_evidence()}"
    dead = proc.pid
    os.kill(dead, signal.SIGKILL)  # pytest only, not its session: the sandbox must follow by itself
    proc.communicate(timeout=30)
    survivors = no_tagged_processes(hostile.tag, seconds=5)
    assert not survivors, f"sandbox processes outlived the SIGKILLed pytest: {survivors}"
    assert mountinfo() == before
    stale = our_cgroup_runs(dead)
    # The dead run's cgroups are stale now; the next run of the plugin removes them.
    hostile.write("def test_next_run(): pass\n", name="test_hostile.py", canary=False)
    (hostile.results / "reports.jsonl").unlink(missing_ok=True)
    nxt = hostile.run()
    nxt.assert_healthy({"test_next_run": "passed"})
    assert not our_cgroup_runs(dead), f"stale cgroups of the killed run survived the next run: {stale}"
    from isolate_runtime.cgroups import probe_cgroups

    if probe_cgroups().available:
        assert stale, "the killed run left no cgroups, so the cleanup of the next run was not exercised"


OOM_PHASES = """
    import pytest

    @pytest.fixture
    def phase_fixture():
        if PHASE == "setup":
            hog = [bytearray(10 << 20) for _ in range(60)]
        yield
        if PHASE == "teardown":
            hog = [bytearray(10 << 20) for _ in range(60)]

    @pytest.mark.isolated(memory="100M")
    def test_oom(phase_fixture):
        if PHASE == "call":
            hog = [bytearray(10 << 20) for _ in range(60)]
"""


@pytest.mark.cgroup
@pytest.mark.parametrize("phase", ["setup", "call", "teardown"])
def test_oom_in_each_phase(hostile: Hostile, cgroups: None, phase: str) -> None:
    hostile.write(f"PHASE = {phase!r}\n" + textwrap.dedent(OOM_PHASES))
    inner = hostile.run(timeout=60)
    inner.assert_healthy({"test_oom": "OOM", OK: "passed"})
    assert f"during {phase}" in inner.message("test_oom")


#: Misbehaviour in the call phase -> the status it must get.
FAULTS = {
    "os-exit-0": ("os._exit(0)", "", "CRASHED"),
    "close-inherited-fds": ("os.closerange(3, 65536)", "", "CRASHED"),
    "garbage-to-inherited-fds": ("""
        for fd in range(3, 1024):
            try:
                os.write(fd, os.urandom(4096) + b"\\xff" * 64)
            except OSError:
                pass
    """, "", "CRASHED"),
    "ignores-sigterm-and-dump-signal": ("""
        for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, range(1, 65))
        time.sleep(300)
    """, "timeout=1", "TIMEOUT"),
    "stops-itself": ("os.kill(os.getpid(), signal.SIGSTOP)", "timeout=1", "TIMEOUT"),
    "fork-returns-into-pytest": ("""
        pid = os.fork()
        if pid == 0:
            return  # a forked copy of pytest carries on with the session
        os.waitpid(pid, 0)
    """, "", "passed"),
    "exhausts-fds": ("""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
    """, "", "passed"),
}

FAULT_MODULE = """
import os, signal, sys, time
import pytest

@pytest.mark.isolated({kwargs})
def test_fault():
{body}

def test_after():
    pass
"""


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_matrix(hostile: Hostile, fault: str) -> None:
    body, kwargs, expected = FAULTS[fault]
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    hostile.write(FAULT_MODULE.format(kwargs=kwargs, body=body), canary=True)
    inner = hostile.run(timeout=60)
    inner.assert_healthy({"test_fault": expected, "test_after": "passed", OK: "passed"})
    assert inner.seconds < 30, f"the run took {inner.seconds:.1f}s"
    assert len(inner.junit_cases()) == 3, f"junitxml has {inner.junit_cases()}"


UNSHARE_ITSELF = """
    import os
    import hostile as h

    def test_fault():
        for ns in ("user", "mnt", "net", "uts", "ipc", "pid", "cgroup"):
            # PID 1 is not dumpable: its namespaces are not the test's to open
            if h.attempt("open-" + ns, os.open, f"/proc/1/ns/{ns}", os.O_RDONLY) != "ok":
                continue
            fd = os.open(f"/proc/1/ns/{ns}", os.O_RDONLY)
            h.attempt("setns-" + ns, h.setns, fd)
            os.close(fd)
        h.attempt("unshare-user", h.unshare, h.CLONE_NEWUSER)
        h.attempt("unshare", h.unshare, h.CLONE_NEWNS | h.CLONE_NEWNET | h.CLONE_NEWUTS | h.CLONE_NEWIPC
                  | h.CLONE_NEWPID)
        h.attempt("unshare-cgroup", h.unshare, h.CLONE_NEWCGROUP)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, str(os.getpid()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        h.record("child-pid", int(os.read(r, 16)))

    def test_after():
        pass
"""


def test_a_test_that_moves_itself_into_namespaces_of_its_own(ordinary_user: Hostile) -> None:
    """The test's process leaves every namespace the sandbox made for new
    ones of its own (as an ordinary user: a root run's sandbox refuses a user
    namespace, and without one every other unshare): its reports still
    arrive and the session goes on."""
    case = ordinary_user
    case.write(UNSHARE_ITSELF, canary=True)
    inner = case.run(timeout=60)
    inner.assert_healthy({"test_fault": "passed", "test_after": "passed", OK: "passed"})
    assert len(inner.junit_cases()) == 3, f"junitxml has {inner.junit_cases()}"
    assert case.evidence("unshare-user") == "ok" and case.evidence("unshare") == "ok", case.all_evidence()
    assert case.evidence("child-pid") == 1, f"the fork did not start a PID namespace: {case.all_evidence()}"
    # seccomp: no cgroup namespace of a sandbox's own
    assert case.evidence("unshare-cgroup") == "EPERM", case.all_evidence()


def test_200_megabytes_of_output(hostile: Hostile) -> None:
    hostile.write("""
        import os, sys

        def test_loud():
            chunk = "x" * 1023 + "\\n"
            for _ in range(100 * 1024):  # 100 MiB on each of stdout and stderr
                sys.stdout.write(chunk)
                sys.stderr.write(chunk)
            os.write(1, b"raw fd write\\n")

        def test_loud_and_failing():
            sys.stdout.write("y" * (1 << 20))
            assert False, "fails after 1 MiB"
    """)
    inner = hostile.run("--tb=line", "-o", "junit_logging=no", timeout=120)
    inner.assert_healthy({"test_loud": "passed", "test_loud_and_failing": "failed", OK: "passed"})
    assert inner.seconds < 90
