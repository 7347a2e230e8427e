"""The two executors of the sandbox setup build the same sandbox.

With the C accelerator, the forked child runs the compiled kernel calls
without the interpreter (``_fastspawn.sandbox``); without it (other
architectures, or ``ISOLATE_RUNTIME_SPAWN=fork``) the same calls run in
Python in the classic A → PID 1 → payload tree.  Both must give the payload
exactly the same view, and the Python executor must pass the whole sandbox
suite too.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from isolate_runtime import SandboxResult, spawn
from isolate_runtime.result import Outcome

from ..conftest import skip_unless

PROJECT = Path(__file__).resolve().parents[2]


def _view() -> Dict[str, Any]:
    with open("/proc/self/mountinfo") as f:
        mounts: List[Tuple[str, ...]] = []
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            # mount point, per-mount options, fs type, source, super options
            mounts.append((parts[4], parts[5], parts[sep + 1], parts[sep + 2], parts[sep + 3]))
    with open("/proc/self/status") as f:
        status = {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k in ("CapEff", "NoNewPrivs")}
    return {
        "mounts": mounts,
        "dev": sorted(os.listdir("/dev")),
        "root": sorted(os.listdir("/")),
        "proc pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "pid": os.getpid(),
        "ids": (os.getuid(), os.getgid(), os.getgroups()),
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
        "lo": socket.if_nameindex(),
        "status": status,
        "sid": os.getsid(0) == os.getpid(),
        "cgroup": open("/proc/self/cgroup").read().splitlines(),
        "oom_score_adj": open("/proc/self/oom_score_adj").read().strip(),
    }


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """Counts sandboxes started through the C executor."""
    accelerator: Any = getattr(spawn, "_fastspawn", None)
    skip_unless(accelerator is not None, "the C accelerator is not built for this platform")
    real = accelerator.sandbox
    started: List[int] = []

    class Counting:
        @staticmethod
        def sandbox(program: bytes, fd: int) -> int:
            out: int = real(program, fd)
            if out != 0:  # the caller's side
                started.append(out)
            return out

    monkeypatch.setattr(spawn, "_fastspawn", Counting)
    return started


@pytest.mark.parametrize("root", [False, True], ids=["own-ids", "root"])
def test_c_and_python_executors_build_the_same_sandbox(sandbox: Callable[..., SandboxResult], counted: List[int],
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       root: bool) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    fast = sandbox(_view, writable=(str(keep),), root=root)
    assert fast.outcome is Outcome.OK, fast
    assert len(counted) == 1
    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", "fork")
    slow = sandbox(_view, writable=(str(keep),), root=root)
    assert slow.outcome is Outcome.OK, slow
    assert len(counted) == 1, "ISOLATE_RUNTIME_SPAWN=fork must use the Python executor"
    for key in fast.value:
        assert fast.value[key] == slow.value[key], key
    # the OOM killer's first choice, before the caller (test_cgroups.py has the real OOM)
    assert fast.value["oom_score_adj"] == "1000"
    # the cgroup namespace is rooted at the sandbox's own cgroup
    assert fast.value["cgroup"] and all(line.endswith(":/") for line in fast.value["cgroup"]), fast.value["cgroup"]


def test_c_executor_names_the_failed_step(sandbox: Callable[..., SandboxResult], counted: List[int],
                                         tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    r = sandbox(int, writable=(str(missing),))
    assert len(counted) == 1
    assert r.outcome is Outcome.SETUP_FAILED, r
    assert r.setup_error is not None
    assert (r.setup_error.step, r.setup_error.errno) == ("root filesystem", errno.ENOENT)
    assert str(r.error).startswith(f"sandbox setup failed at root filesystem: bind /.oldroot{missing} ")
    assert "No such file or directory (ENOENT)" in str(r.error)


@pytest.mark.slow
def test_python_executor_passes_the_sandbox_suite(full_isolation: None) -> None:
    env = dict(os.environ, ISOLATE_RUNTIME_SPAWN="fork", PYTEST_ADDOPTS="")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:isolate", "-q",
                          "tests/runtime/test_sandbox.py", "tests/runtime/test_relay.py"], cwd=PROJECT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


def test_both_executors_know_every_call_by_the_same_number() -> None:
    """calls.py and _fastspawn.c each define the opcodes: the same names in
    the same order (a call the C executor numbers differently would run
    as another call, or fail as EINVAL)."""
    import re

    from isolate_runtime import calls

    source = (PROJECT / "runtime" / "isolate_runtime" / "_fastspawn.c").read_text()
    body = re.search(r"enum \{\s*(OP_PDEATHSIG = 1,.*?)\};", source, re.S)
    assert body is not None
    c_names = [name.strip().split("=")[0].strip()[3:] for name in body.group(1).split(",") if name.strip()]
    py_names = [name.upper().replace("-", "_") for _code, name in sorted(calls._NAMES.items())]
    assert c_names == py_names
    assert sorted(calls._NAMES) == list(range(1, len(py_names) + 1))
    assert f"#define MAX_LISTEN {calls.MAX_LISTEN}" in source


def test_a_bad_spawn_mode_is_a_setup_error_naming_it(sandbox: Callable[..., SandboxResult],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", "vfork")
    r = sandbox(int)
    assert r.outcome is Outcome.SETUP_FAILED, r
    assert str(r.error) == ("sandbox setup failed at spawn: ISOLATE_RUNTIME_SPAWN='vfork' (from the environment) "
                            "is not one of: auto, fork — unset ISOLATE_RUNTIME_SPAWN or set it to 'fork'")


_COLLIDE = r'''
import ctypes, os, struct, sys
from isolate_runtime import CallablePayload, SandboxSpec, run

def payload():
    return os.getpid()

assert run(SandboxSpec(CallablePayload(payload))).outcome.value == "ok"  # probe, plan: no forks after this
libc = ctypes.CDLL(None)
libc.pthread_self.restype = ctypes.c_void_p
vals = struct.unpack("<1024i", ctypes.string_at(libc.pthread_self(), 4096))
real = vals.index(os.getpid())
values = sorted({v for v in vals[:real] if 300 < v < 32768})
print("colliding", values)
for v in values[:3]:
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(v - 1))
    r = run(SandboxSpec(CallablePayload(payload)))
    print("sandbox with pid", v, r.outcome.value, r.describe())
'''


def test_a_sandbox_whose_pid_equals_half_a_pointer_in_the_thread_descriptor(full_isolation: None, counted: List[int],
                                                                            tmp_path: Path) -> None:
    """The C executor fixes glibc's cached thread id in PID 2 at an offset it
    looked up by value; the high half of a pointer (0x00007fxx) equals a pid
    below pid_max now and then.  Here the sandbox's first process is given
    exactly such a pid (ns_last_pid, in a PID namespace of our own)."""
    skip_unless(os.geteuid() == 0, "choosing the next pid (ns_last_pid) needs root")
    unshare = shutil.which("unshare")
    skip_unless(unshare is not None, "unshare (util-linux) is not installed")
    assert unshare is not None
    script = tmp_path / "collide.py"
    script.write_text(_COLLIDE)
    env = dict(os.environ, ISOLATE_RUNTIME_CGROUPS="none")
    out = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", sys.executable, str(script)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("sandbox with pid")]
    assert lines, out.stdout  # the descriptor holds at least one 0x00007fxx pointer on x86-64
    assert all(line.split()[4] == "ok" for line in lines), out.stdout


def _what_fd_is(fd: int) -> Tuple[str, str]:
    os.write(fd, b"written through the descriptor\n")
    return os.readlink(f"/proc/self/fd/{fd}"), os.read(fd, 100).decode()


@pytest.mark.parametrize("spawn_mode", ["auto", "fork"])
def test_a_withheld_descriptor_leads_nowhere_in_the_payload(sandbox: Callable[..., SandboxResult],
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           spawn_mode: str) -> None:
    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", spawn_mode)
    host_file = tmp_path / "the callers own output"
    fd = os.open(host_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"the caller's line\n")
        withheld = sandbox(_what_fd_is, fd, withhold_fds=(fd,))
        assert withheld.outcome is Outcome.OK, withheld
        assert withheld.value == ["/dev/null", ""]
        kept = sandbox(_what_fd_is, fd)  # the same, not withheld: the caller's file
        assert kept.outcome is Outcome.OK, kept
        assert kept.value[0] == str(host_file)
    finally:
        os.close(fd)
    # one line from the sandbox that kept it, none from the one it was withheld from
    assert host_file.read_bytes() == b"the caller's line\nwritten through the descriptor\n"


@pytest.mark.parametrize("bad", [(-1,), ("3",), (True,)])
def test_a_withheld_descriptor_that_is_not_one_is_a_spec_error(bad: Tuple[Any, ...]) -> None:
    from isolate_runtime import CallablePayload, SandboxSpec, SpecError

    with pytest.raises(SpecError) as got:
        SandboxSpec(CallablePayload(print), withhold_fds=bad)
    assert str(got.value) == (f"invalid withhold_fds {bad[0]!r}: expected file descriptor numbers "
                              "(whole numbers >= 0)")
