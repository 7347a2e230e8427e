"""Hostile tests signal, trace and spy on host processes, and try to outlive the sandbox."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .harness import Hostile, no_tagged_processes, process_state

KILL_PARENT = """
    import os, signal, time
    import hostile as h

    def test_kill_the_pytest_parent():
        parent = int(h.env("PARENT"))
        for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):
            h.attempt(f"kill-{sig.name}", os.kill, parent, sig)
        h.attempt("pidfd", lambda: os.close(os.pidfd_open(parent)))
        time.sleep(0.2)
"""


def test_the_pytest_parent_cannot_be_signalled(hostile: Hostile) -> None:
    hostile.write(KILL_PARENT)
    inner = hostile.run(timeout=30)
    assert inner.finished is not None, f"the parent pytest was killed by its test\n{inner.describe()}"
    inner.assert_healthy({"test_kill_the_pytest_parent": "passed", "test_zz_canary_after_the_hostile_test": "passed"})


KILL_GROUP = """
    import os, signal, time
    import hostile as h

    def test_signal_the_process_group_and_session():
        # pid 0 = "my process group": the kernel resolves the group itself,
        # not a pid number, so a PID namespace alone does not hide it.
        h.attempt("killpg-0", os.killpg, 0, signal.SIGTERM)
        time.sleep(0.3)
"""


# Found by this test: the sandbox stayed in pytest's process group, so
# os.killpg(0, sig) in an isolated test killed the parent pytest. The sandbox
# now has a session and process group of its own: the signal reaches only the
# test's own processes (which it kills, as it would kill pytest unisolated).
def test_the_parents_process_group_cannot_be_signalled(hostile: Hostile) -> None:
    hostile.write(KILL_GROUP)
    inner = hostile.run(timeout=30)
    assert inner.finished is not None, f"the parent pytest was killed via its process group\n{inner.describe()}"
    inner.assert_healthy({"test_signal_the_process_group_and_session": "CRASHED",
                          "test_zz_canary_after_the_hostile_test": "passed"})
    assert "SIGTERM" in inner.stdout, inner.describe()


KILL_EVERYTHING = """
    import os, signal, subprocess
    import hostile as h

    def test_kill_minus_one():
        # Only ever inside a PID namespace: as root on the host this would
        # signal every process of the machine.
        if os.getpid() > 64:
            h.record("kill-1", "not run: no PID namespace")
            return
        inside = subprocess.Popen(["sleep", "30"])
        h.attempt("kill-1", os.kill, -1, signal.SIGTERM)
        h.record("sandbox-child", inside.wait(timeout=10))
"""


def test_kill_minus_one_reaches_only_the_sandbox(hostile: Hostile, host_global: None) -> None:
    sleeper = hostile.sleeper()
    hostile.write(KILL_EVERYTHING)
    inner = hostile.run(timeout=30)
    assert sleeper.poll() is None, "kill(-1) from the sandbox killed a host process"
    assert hostile.evidence("kill-1") == "ok" and hostile.evidence("sandbox-child") == -15, hostile.all_evidence()
    inner.assert_healthy({"test_kill_minus_one": "passed", "test_zz_canary_after_the_hostile_test": "passed"})


SIGNAL_SIBLING = """
    import os, signal, time
    import hostile as h

    def test_signal_a_host_process():
        pid = int(h.env("VICTIM"))
        h.attempt("stop", os.kill, pid, signal.SIGSTOP)
        h.attempt("killpg", os.killpg, pid, signal.SIGKILL)  # the sleeper leads its own group
        h.attempt("kill", os.kill, pid, signal.SIGKILL)
        h.attempt("pidfd", lambda: os.close(os.pidfd_open(pid)))
        h.attempt("sigqueue", lambda: h.check(h.libc.kill(pid, signal.SIGTERM)))
        time.sleep(0.2)
"""


def test_host_processes_cannot_be_signalled(hostile: Hostile) -> None:
    sleeper = hostile.sleeper()
    hostile.write(SIGNAL_SIBLING)
    inner = hostile.run(env={"CONTAINMENT_VICTIM": str(sleeper.pid)}, timeout=30)
    state = process_state(sleeper.pid)
    assert sleeper.poll() is None and state not in ("T", "t", "Z", None), (
        f"the host process was signalled (state {state}); evidence {hostile.all_evidence()}")
    inner.assert_healthy({"test_signal_a_host_process": "passed", "test_zz_canary_after_the_hostile_test": "passed"})


SEE_PROCESSES = """
    import os
    import hostile as h

    def test_list_and_read_every_process():
        seen = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            entry = {}
            for what in ("cmdline", "environ", "status"):
                try:
                    with open(f"/proc/{pid}/{what}", "rb") as f:
                        entry[what] = f.read().decode("utf-8", "replace")
                except OSError as e:
                    entry[what] = f"<{e.strerror}>"
            seen[pid] = entry
        h.record("processes", seen)
        victim = h.env("VICTIM")
        h.attempt("victim-environ", lambda: open(f"/proc/{victim}/environ", "rb").read())
        h.attempt("victim-mem", lambda: open(f"/proc/{victim}/mem", "rb").close())
        h.attempt("parent-environ", lambda: open(f"/proc/{h.env('PARENT')}/environ", "rb").read())
"""


def test_host_processes_and_their_environment_are_invisible(hostile: Hostile) -> None:
    secret = f"s3cret-{hostile.tag}"
    sleeper = hostile.sleeper(secret=secret)
    hostile.write(SEE_PROCESSES)
    inner = hostile.run(env={"CONTAINMENT_VICTIM": str(sleeper.pid)}, timeout=30)
    seen = hostile.evidence("processes") or {}
    dumped = repr(seen)
    assert f"sleeper-{hostile.tag}" not in dumped, "the sandboxed test saw a host process"
    assert secret not in dumped, "the sandboxed test read a host process's environment"
    assert len(seen) < 10, f"the sandboxed test sees {len(seen)} processes: {sorted(seen)}"
    assert hostile.evidence("victim-environ") != "ok" and hostile.evidence("victim-mem") != "ok"
    inner.assert_healthy({"test_list_and_read_every_process": "passed",
                          "test_zz_canary_after_the_hostile_test": "passed"})


PTRACE = """
    import ctypes, os, signal, time
    import hostile as h

    PTRACE_ATTACH, PTRACE_KILL, PTRACE_SEIZE = 16, 8, 0x4206

    def test_ptrace_a_host_process():
        pid = int(h.env("VICTIM"))
        h.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        h.libc.ptrace.restype = ctypes.c_long
        if h.attempt("attach", lambda: h.check(h.libc.ptrace(PTRACE_ATTACH, pid, None, None))) == "ok":
            os.waitpid(pid, 0)
            h.libc.ptrace(PTRACE_KILL, pid, None, None)  # what an attached tracer can do
        h.attempt("seize", lambda: h.check(h.libc.ptrace(PTRACE_SEIZE, pid, None, None)))
        h.attempt("pid-0-attach", lambda: h.check(h.libc.ptrace(PTRACE_ATTACH, int(h.env("PARENT")), None, None)))
        time.sleep(0.2)
"""


def test_host_processes_cannot_be_traced(hostile: Hostile) -> None:
    sleeper = hostile.sleeper()
    hostile.write(PTRACE)
    inner = hostile.run(env={"CONTAINMENT_VICTIM": str(sleeper.pid)}, timeout=30)
    status = Path(f"/proc/{sleeper.pid}/status").read_text() if sleeper.poll() is None else ""
    assert sleeper.poll() is None and "TracerPid:\t0\n" in status, (
        f"the host process was traced or killed; evidence {hostile.all_evidence()}")
    assert hostile.evidence("attach") != "ok"
    inner.assert_healthy({"test_ptrace_a_host_process": "passed", "test_zz_canary_after_the_hostile_test": "passed"})


#: Ways to start a process meant to outlive the test; each carries the tag.
LEFTOVERS = {
    "double-fork-setsid": """
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", SLEEP, LEAK])
            os._exit(0)
        os.wait()
    """,
    "nohup-background": """
        subprocess.run(["sh", "-c", f"nohup {sys.executable} -c '{SLEEP}' {LEAK} >/dev/null 2>&1 &"], check=True)
    """,
    "ignores-sigterm-and-sighup": """
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(300)", LEAK],
                         start_new_session=True)
    """,
    "blocks-every-signal": """
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, range(1, 65)); "
                          "time.sleep(300)", LEAK])
    """,
    "forked-python-child-left-running": """
        pid = os.fork()
        if pid == 0:
            os.execv(sys.executable, [sys.executable, "-c", SLEEP, LEAK])
    """,
}

LEAVE_PROCESS = """
    import os, subprocess, sys, time
    import hostile as h

    SLEEP = "import time; time.sleep(300)"
    LEAK = "leak-" + h.TAG

    def test_leave_a_process_behind():
{body}
        time.sleep(0.3)
        h.record("alive", h.tagged_alive())
"""


@pytest.mark.parametrize("how", list(LEFTOVERS))
def test_no_process_outlives_its_sandbox(hostile: Hostile, how: str) -> None:
    body = textwrap.indent(textwrap.dedent(LEFTOVERS[how]).strip("\n"), "        ")
    hostile.write(LEAVE_PROCESS.format(body=body))
    inner = hostile.run(timeout=60)
    survivors = no_tagged_processes(hostile.tag)
    assert not survivors, f"processes outlived the sandbox ({how}): {survivors}"
    inner.assert_healthy({"test_leave_a_process_behind": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    assert hostile.evidence("alive"), f"the leftover process never started: {hostile.all_evidence()}"


OWN_PID_NAMESPACE = """
    import os, subprocess, sys, time
    import hostile as h

    def test_leave_a_process_behind():
        # (a user namespace first: the test has no capabilities of its own)
        leftover = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork",
                                     "--kill-child=SIGCONT", sys.executable, "-c", "import time; time.sleep(300)",
                                     "leak-" + h.TAG], stderr=subprocess.PIPE)
        time.sleep(0.3)
        h.record("unshare", "running" if leftover.poll() is None else leftover.stderr.read().decode())
        h.record("alive", h.tagged_alive())
"""


def test_no_process_outlives_its_sandbox_in_a_pid_namespace_of_its_own(ordinary_user: Hostile) -> None:
    case = ordinary_user
    case.write(OWN_PID_NAMESPACE)
    inner = case.run(timeout=60)
    survivors = no_tagged_processes(case.tag)
    assert not survivors, f"processes outlived the sandbox from a PID namespace of their own: {survivors}"
    inner.assert_healthy({"test_leave_a_process_behind": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    assert case.evidence("unshare") == "running", f"the leftover process never started: {case.all_evidence()}"
    # unshare and (seen from the sandbox) its child in the new PID namespace
    assert len(case.evidence("alive") or []) >= 2, case.all_evidence()


TIMEOUT_LEFTOVERS = """
    import os, signal, subprocess, sys, time
    import pytest
    import hostile as h

    @pytest.mark.isolated(timeout=1.5)
    def test_hang_with_stubborn_children():
        for _ in range(3):
            subprocess.Popen([sys.executable, "-c",
                              "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)",
                              "leak-" + h.TAG], start_new_session=True)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(0.3)
        h.record("alive", h.tagged_alive())
        time.sleep(300)
"""


def test_nothing_survives_a_timeout(hostile: Hostile) -> None:
    hostile.write(TIMEOUT_LEFTOVERS)
    inner = hostile.run(timeout=60)
    survivors = no_tagged_processes(hostile.tag)
    assert not survivors, f"processes outlived a timed-out sandbox: {survivors}"
    inner.assert_healthy({"test_hang_with_stubborn_children": "TIMEOUT",
                          "test_zz_canary_after_the_hostile_test": "passed"})
    assert inner.seconds < 30
    assert len(hostile.evidence("alive") or []) == 3, f"the children never started: {hostile.all_evidence()}"
