"""cgroupfs plumbing shared by the backends: mounts, naming, small file I/O,
stale-run detection, removal with EBUSY retries and the freeze/kill loop.

Everything the project creates is named so that it can be found again and
attributed to its owner::

    <anchor>/pytest-isolate/run-<owner pid>-<owner start time>[-<k>]/sb-<n>

``<owner start time>`` is field 22 of ``/proc/<pid>/stat`` (clock ticks since
boot), so a recycled pid does not make a dead run look alive; ``-<k>``
tells apart a second backend instance in the same process.  Nothing
outside a ``pytest-isolate`` directory is ever removed.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

#: Directory the project owns at the anchor of every hierarchy it uses.
TOP = "pytest-isolate"
#: One per running caller (pytest process / xdist worker).
RUN_RE = re.compile(r"^run-(ns\d+-)?(\d+)-(\d+)(?:-\d+)?$")
#: Inode of the initial PID namespace (PROC_PID_INIT_INO in the kernel).
INIT_PIDNS_INO = 0xEFFFFFFC
#: One per sandbox.
SB_RE = re.compile(r"^sb-(\d+)$")
#: Bound on every wait for the kernel (kill, rmdir).
KILL_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Mount:
    """One cgroup filesystem mount from ``/proc/<pid>/mountinfo``."""

    path: str
    #: ``"cgroup"`` (v1) or ``"cgroup2"``.
    fstype: str
    #: v1 controllers bound to the hierarchy (``name=`` hierarchies excluded).
    controllers: Tuple[str, ...]
    #: The cgroup this mount shows at its top (``/`` unless bind-mounted).
    root: str
    read_only: bool


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def cgroup_mounts(proc_root: str = "/proc") -> List[Mount]:
    out: List[Mount] = []
    try:
        with open(f"{proc_root}/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 6 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        mount_opts = fields[5].split(",")
        super_opts = rfields[2].split(",")
        ctrls: Tuple[str, ...] = ()
        if rfields[0] == "cgroup":
            ctrls = tuple(o for o in super_opts if o not in ("rw", "ro") and "=" not in o
                          and o not in ("noprefix", "xattr", "clone_children", "cpuset_v2_mode",
                                        "favordynmods", "nsdelegate", "memory_recursiveprot"))
            if not ctrls:  # name=systemd and friends: no controller, not ours to use
                continue
        out.append(Mount(_unescape(fields[4]), rfields[0], ctrls, _unescape(fields[3]),
                         "ro" in mount_opts or "ro" in super_opts))
    return out


def own_cgroups(proc_root: str = "/proc", pid: str = "self") -> Dict[str, str]:
    """``/proc/<pid>/cgroup`` as ``{controller: path}``; the unified entry is ``""``."""
    out: Dict[str, str] = {}
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if ctrls == "":
            out[""] = path
        for c in ctrls.split(","):
            if c and not c.startswith("name="):
                out[c] = path
    return out


def start_time(pid: int, proc_root: str = "/proc") -> Optional[int]:
    """Field 22 of ``/proc/<pid>/stat`` (None when the process is gone)."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


_instances = 0


def pidns_tag(proc_root: str = "/proc") -> str:
    """``""`` in the initial PID namespace, ``ns<inode>-`` in any other: a pid
    means something only in the namespace it was read in (a session in a
    container, or one that is PID 1 of a namespace of its own, must not take
    the host's sessions for dead ones, nor they it)."""
    try:
        ino = os.stat(f"{proc_root}/self/ns/pid").st_ino
    except OSError:
        return ""
    return "" if ino == INIT_PIDNS_INO else f"ns{ino}-"


def run_name(pid: int, proc_root: str = "/proc") -> str:
    """A fresh run name for this process (each call, a new one)."""
    global _instances
    _instances += 1
    suffix = f"-{_instances}" if _instances > 1 else ""
    return f"run-{pidns_tag(proc_root)}{pid}-{start_time(pid, proc_root) or 0}{suffix}"


def owner_alive(run: str, proc_root: str = "/proc") -> bool:
    m = RUN_RE.match(run)
    if m is None:
        return True  # not a name we gave: never treat as stale
    if (m.group(1) or "") != pidns_tag(proc_root):
        return True  # made in another PID namespace: its pid cannot be checked from here
    pid, started = int(m.group(2)), int(m.group(3))
    return start_time(pid, proc_root) == started


# ------------------------------------------------------------------ file I/O

def write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_int(path: str) -> Optional[int]:
    """An integer file (``max`` reads as None); None when it is missing."""
    try:
        text = read(path).strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read_keyed(path: str) -> Optional[Dict[str, int]]:
    """A ``key value`` per line file (``cpu.stat``, ``memory.events``, ...)."""
    try:
        text = read(path)
    except OSError:
        return None
    out: Dict[str, int] = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def procs(cgroup_dir: str) -> List[int]:
    try:
        return [int(x) for x in read(os.path.join(cgroup_dir, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return []


def exists(path: str) -> bool:
    return os.path.exists(path)


# ----------------------------------------------------------------- killing

def kill_members(pids: List[int], list_procs: Callable[[], List[int]]) -> None:
    """SIGKILL each of ``pids`` (read from a cgroup's member list) that is
    still a member.  Each one's pidfd is opened first and the list read
    again: a pid that was reused in between by a process outside the
    cgroup (its own one exited) is never signalled."""
    opener = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if opener is None or send is None:  # pragma: no cover - Linux < 5.3
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return
    fds: Dict[int, int] = {}
    for pid in pids:
        try:
            fds[pid] = opener(pid)
        except OSError:  # gone
            continue
    try:
        members = set(list_procs()) if fds else set()
        for pid, fd in fds.items():
            if pid in members:
                try:
                    send(fd, signal.SIGKILL)
                except OSError:
                    pass
    finally:
        for fd in fds.values():
            os.close(fd)


def kill_loop(list_procs: Callable[[], List[int]], freeze: Optional[Callable[[bool], None]] = None,
              timeout: float = KILL_TIMEOUT_SECONDS) -> bool:
    """SIGKILL every pid ``list_procs()`` returns until it returns none.

    With ``freeze`` the group is frozen around each pass, so nothing forks
    between reading the list and killing it (crun's ``cgroup_killall_path``);
    a frozen process still receives SIGKILL once thawed.  Returns whether
    the group became empty within ``timeout``.
    """
    end = time.monotonic() + timeout
    delay = 0.001
    while True:
        pids = list_procs()
        if not pids:
            return True
        if time.monotonic() >= end:
            return False
        if freeze is not None:
            try:
                freeze(True)
            except OSError:
                pass
            pids = list_procs()
        kill_members(pids, list_procs)
        if freeze is not None:
            try:
                freeze(False)
            except OSError:
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def wait_empty(list_procs: Callable[[], List[int]], timeout: float = KILL_TIMEOUT_SECONDS) -> bool:
    end = time.monotonic() + timeout
    delay = 0.0005
    while list_procs():
        if time.monotonic() >= end:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


# ----------------------------------------------------------------- removal

def rmdir_retry(path: str, timeout: float = KILL_TIMEOUT_SECONDS) -> bool:
    """``rmdir`` a cgroup, retrying EBUSY (exiting tasks still being
    uncharged, like crun's 500 x 10 ms).  Missing counts as removed."""
    end = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.EAGAIN) or time.monotonic() >= end:
                return False
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def subdirs(path: str, pattern: "re.Pattern[str]") -> Iterator[str]:
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if pattern.match(name) and os.path.isdir(os.path.join(path, name)):
            yield name


def remove_tree(run_dir: str, kill: Callable[[str], None]) -> bool:
    """Remove a run directory of ours: ``kill`` then rmdir every ``sb-*``
    below it, then the run directory itself.  Only our names are touched."""
    ok = True
    for sb in subdirs(run_dir, SB_RE):
        d = os.path.join(run_dir, sb)
        kill(d)
        ok = rmdir_retry(d) and ok
    return rmdir_retry(run_dir) and ok


def remove_stale_runs(top_dir: str, kill: Callable[[str], None], proc_root: str = "/proc") -> int:
    """Remove every ``run-*`` under ``top_dir`` whose owner is dead."""
    removed = 0
    for run in subdirs(top_dir, RUN_RE):
        if owner_alive(run, proc_root):
            continue
        if remove_tree(os.path.join(top_dir, run), kill):
            removed += 1
    return removed


def rmdir_if_empty(path: str) -> None:
    """One attempt: a cgroup with children or members answers EBUSY, and
    then it is somebody else's to remove (a concurrent run)."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def mkdir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass


def make_run_dir(top: str, run_dir: str) -> None:
    """``mkdir -p top/run``; a concurrent run may remove an empty ``top``
    between the two steps, so retry a few times."""
    for _ in range(5):
        mkdir(top)
        try:
            mkdir(run_dir)
            return
        except FileNotFoundError:
            continue
    mkdir(run_dir)


def kill_with_cgroup_kill(d: str) -> None:
    """v2 (or hybrid's unified) cgroup ``d``: ``cgroup.kill`` where the kernel
    has it, then the kill loop until it is empty."""
    try:
        write(os.path.join(d, "cgroup.kill"), "1")
    except OSError:
        pass
    kill_loop(lambda: procs(d))
