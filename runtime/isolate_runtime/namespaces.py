"""User namespace id maps, privileges, and the order namespaces are created in."""
from __future__ import annotations

import os
import signal
from typing import Dict

from . import _syscalls as sc
from .cgroups._fs import write as _write  # one open/write/close, no io stack

FLAGS: Dict[str, int] = {
    "user": sc.CLONE_NEWUSER,
    "mount": sc.CLONE_NEWNS,
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "cgroup": sc.CLONE_NEWCGROUP,
}


def write_id_maps(inside_uid: int, outside_uid: int, inside_gid: int, outside_gid: int, proc: str = "/proc") -> None:
    """Single-line self maps: the only ones a process may write for itself
    (it has no capability in the parent namespace after unsharing)."""
    _write(f"{proc}/self/uid_map", f"{inside_uid} {outside_uid} 1\n")
    try:
        _write(f"{proc}/self/setgroups", "deny\n")
    except FileNotFoundError:  # pragma: no cover - kernels before 3.19
        pass
    _write(f"{proc}/self/gid_map", f"{inside_gid} {outside_gid} 1\n")


def die_with_parent() -> None:
    import prctl

    prctl.set_pdeathsig(signal.SIGKILL)


def drop_privileges() -> None:
    """No capabilities (effective, permitted, inheritable, bounding, ambient)
    and no_new_privs: the payload behaves like an ordinary process of the
    caller's user."""
    import prctl

    prctl.set_no_new_privs(1)
    prctl.capbset.limit()
    prctl.cap_inheritable.limit()
    prctl.cap_effective.limit()
    prctl.cap_permitted.limit()


def maps_host_root() -> bool:
    """Is this user namespace's uid 0 the host's uid 0?"""
    try:
        with open("/proc/self/uid_map") as f:
            return any(line.split()[:2] == ["0", "0"] for line in f)
    except OSError:
        return False


def sethostname(name: str) -> None:
    sc.sethostname(name)


def current_ids() -> "tuple[int, int]":
    return os.geteuid(), os.getegid()
