"""Drive a cgroup backend the way the launcher does, with plain ``os.fork``.

Every forked child ends with ``os._exit``; every wait is bounded.
"""
from __future__ import annotations

import os
import resource
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence

from isolate_runtime.cgroups import SandboxCgroup, _fs
from isolate_runtime.cgroups.base import CgroupStats

MiB = 1 << 20
#: Exit status of a payload that raised (the traceback goes to stderr).
RAISED = 70


@dataclass(frozen=True)
class Ran:
    """How one payload ended, seen from the parent."""

    status: int
    #: What ``poll()`` returned (the CPU budget), if anything.
    reason: Optional[str]
    stats: CgroupStats
    wall_seconds: float

    @property
    def signal(self) -> Optional[int]:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None

    @property
    def exit_code(self) -> Optional[int]:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None


def touch(n: int) -> bytes:
    """``n`` bytes actually written (``bytearray(n)`` would stay unfaulted)."""
    return b"\x01" * n


def fork_payload(cg: SandboxCgroup, payload: Callable[[], int], rlimits: bool = True) -> int:
    """Fork a child that joins ``cg``, applies its rlimits, runs ``payload``
    and exits with its return value."""
    pid = os.fork()
    if pid == 0:
        code = RAISED
        try:
            cg.join_self()
            if rlimits:
                for res, limit in cg.child_rlimits():
                    resource.setrlimit(res, (limit, limit))
            code = payload()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    cg.set_root_pid(pid)
    return pid


def reap(pid: int, timeout: float) -> Optional[int]:
    end = time.monotonic() + timeout
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return status
        if time.monotonic() >= end:
            return None
        time.sleep(0.005)


def run_in(cg: SandboxCgroup, payload: Callable[[], int], timeout: float = 120.0,
           poll_every: float = 0.02) -> Ran:
    """Run ``payload`` in ``cg`` like the launcher: poll while waiting, kill
    on a budget reason or on timeout, kill leftovers, read the stats."""
    t0 = time.monotonic()
    pid = fork_payload(cg, payload)
    reason: Optional[str] = None
    status: Optional[int] = None
    try:
        end = t0 + timeout
        while status is None:
            got = cg.poll()
            if got and reason is None:
                reason = got
                cg.kill()
            status = reap(pid, poll_every)
            if status is None and time.monotonic() >= end:
                cg.kill()
                os.kill(pid, signal.SIGKILL)
                status = reap(pid, 10.0)
                raise AssertionError(f"payload still running after {timeout} s")
        wall = time.monotonic() - t0
        if cg.procs():
            cg.kill()
        return Ran(status, reason, cg.read_stats(), wall)
    finally:
        if status is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            reap(pid, 10.0)


def hold(seconds: float = 60.0) -> int:
    """Sleep until killed (bounded)."""
    time.sleep(seconds)
    return 0


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
    return True


def pid_gone(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2:].split()[0] in (b"Z", b"X")


def our_cgroups(pid: Optional[int] = None) -> List[str]:
    """Every run (and sandbox) directory of ours for ``pid`` (default: this
    process) on every cgroup mount, found by walking the hierarchies (only
    reading) down to the depth where an anchor can be."""
    pid = os.getpid() if pid is None else pid
    found: List[str] = []
    for m in _fs.cgroup_mounts():
        for top in _tops(m.path, depth=4):
            for run in _fs.subdirs(top, _fs.RUN_RE):
                if run.startswith(f"run-{pid}-"):
                    d = os.path.join(top, run)
                    found.append(d)
                    found.extend(os.path.join(d, sb) for sb in _fs.subdirs(d, _fs.SB_RE))
    return sorted(set(found))


def _tops(root: str, depth: int) -> Iterator[str]:
    top = os.path.join(root, _fs.TOP)
    if os.path.isdir(top):
        yield top
    if depth == 0:
        return
    try:
        entries = os.scandir(root)
    except OSError:
        return
    with entries:
        for e in entries:
            if e.is_dir(follow_symlinks=False) and e.name != _fs.TOP:
                yield from _tops(e.path, depth - 1)


# ------------------------------------------------------------------- block I/O

#: Filesystems whose writes never reach a block device of this machine.
NOT_BLOCK_BACKED = ("tmpfs", "ramfs", "hostfs", "9p", "virtiofs", "nfs", "nfs4", "cifs", "fuse")


def not_block_backed(path: str) -> Optional[str]:
    """Why writes to ``path`` would not reach a block device here (``None``:
    they would): the machine has none, or the filesystem is memory or remote."""
    try:
        with open("/proc/partitions") as f:
            if len(f.read().split("\n")) <= 3:  # the header and a blank line
                return "this machine has no block devices"
    except OSError:
        return "no /proc/partitions"
    best, fstype = "", ""
    with open("/proc/self/mountinfo") as f:
        mounts = f.read().splitlines()
    for m in mounts:
        left, _, right = m.partition(" - ")
        point = left.split()[4].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, right.split()[0]
    if fstype.split(".")[0] in NOT_BLOCK_BACKED:
        return f"{path} is on {fstype}"
    return None


# ------------------------------------------------- delegation to an ordinary user

#: The ordinary user the delegation tests run as (nobody).
NOBODY = 65534
#: What systemd hands to the user with Delegate=yes (systemd.io/CGROUP_DELEGATION).
DELEGATED_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")


def delegate_subtree(mount: str, path: str, uid: int, controllers: Sequence[str]) -> str:
    """Make the cgroup ``mount/path`` and delegate it to ``uid`` as systemd's
    ``Delegate=yes`` does: ``controllers`` enabled in every ancestor's
    ``cgroup.subtree_control`` (so the directory gets exactly those), the
    directory and its ``cgroup.procs``, ``cgroup.subtree_control`` and
    ``cgroup.threads`` owned by ``uid``; everything above stays root's.
    Needs root."""
    parts = [p for p in path.strip("/").split("/") if p]
    d = mount
    for name in parts:
        for c in controllers:
            if c not in _fs.read(os.path.join(d, "cgroup.subtree_control")).split():
                _fs.write(os.path.join(d, "cgroup.subtree_control"), "+" + c)
        d = os.path.join(d, name)
        _fs.mkdir(d)
    os.chown(d, uid, uid)
    for name in DELEGATED_FILES:
        os.chown(os.path.join(d, name), uid, uid)
    return d


def remove_subtree(top: str) -> None:
    """Kill whatever is left in the cgroup ``top`` and below, then remove it all (bottom up)."""
    if not os.path.isdir(top):
        return
    for d, _dirs, _files in os.walk(top, topdown=False):
        _fs.kill_with_cgroup_kill(d)
        assert _fs.rmdir_retry(d), f"cannot remove {d}"
