"""What the calling process may use: CPUs and memory, each with its source.

A caller that runs several sandboxes at once sizes itself by these (the
pytest plugin's ``--isolate-jobs auto`` and its memory budget).  They are
what the kernel will let this process and its children have, not what the
machine has:

- CPUs: the CPUs of this process's affinity mask, capped by the CPU
  bandwidth quota of every cgroup above it (cgroup v2 ``cpu.max``, v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the lowest wins, and a
  quota may be a fraction: ``1.5``);
- memory: ``MemAvailable`` of ``/proc/meminfo``, capped by the headroom of
  every cgroup above this process: its limit less what it uses, page cache
  it could reclaim not counted as used (``inactive_file``), as a container
  runtime judges a container's working set.

Every file is read below an injectable ``/proc`` (the cgroup mounts come
from its ``self/mountinfo``), so a test can describe any host.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

from .cgroups import _fs
from .result import Figure

#: A v1 memory limit at or above this is "no limit" (the kernel's
#: PAGE_COUNTER_MAX, rounded down to a page, is just under 2**63).
UNLIMITED_BYTES = 1 << 62


def _dirs(proc_root: str, controller: str) -> Iterator[Tuple[str, str]]:
    """``(directory, kind)`` of every cgroup above this process (itself
    first) in each hierarchy that has ``controller`` (``kind``: ``"v1"``
    or ``"v2"``)."""
    own = _fs.own_cgroups(proc_root)
    for mount in _fs.cgroup_mounts(proc_root):
        if mount.fstype == "cgroup2":
            path, kind = own.get(""), "v2"
        elif controller in mount.controllers:
            path, kind = own.get(controller), "v1"
        else:
            continue
        if path is None:
            continue
        root = mount.root.rstrip("/")
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root):]
        elif root:
            continue  # this mount shows another part of the tree
        here = os.path.normpath(mount.path + "/" + path.strip("/"))
        while True:
            yield here, kind
            if here == os.path.normpath(mount.path):
                break
            here = os.path.dirname(here)


def available_cpus(proc_root: str = "/proc", affinity: Optional[int] = None) -> Figure:
    """How many CPUs this process may keep busy (see the module docstring)."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = os.cpu_count() or 1
    best = Figure(float(affinity), f"affinity: {affinity} CPU{'s' if affinity != 1 else ''}")
    for here, kind in _dirs(proc_root, "cpu"):
        quota = _quota(here, kind)
        if quota is not None and quota < (best.value or 0):
            name = "cpu.max" if kind == "v2" else "cpu.cfs_quota_us"
            best = Figure(quota, f"cgroup CPU quota: {quota:g} CPUs ({here}/{name})")
    return best


def _quota(here: str, kind: str) -> Optional[float]:
    if kind == "v2":
        try:
            fields = _fs.read(here + "/cpu.max").split()
        except OSError:
            return None
        if len(fields) != 2 or fields[0] == "max":
            return None
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            return None
    else:
        q, p = _fs.read_int(here + "/cpu.cfs_quota_us"), _fs.read_int(here + "/cpu.cfs_period_us")
        if q is None or p is None:
            return None
        quota, period = q, p
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def available_memory(proc_root: str = "/proc") -> Figure:
    """How many bytes this process and its children may still take (see the
    module docstring); ``None`` when even ``/proc/meminfo`` is unreadable."""
    best = Figure(None, "unavailable")
    try:
        with open(f"{proc_root}/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    kib = int(line.split()[1])
                    best = Figure(float(kib * 1024), "MemAvailable (/proc/meminfo)")
                    break
    except (OSError, ValueError, IndexError):
        pass
    for here, kind in _dirs(proc_root, "memory"):
        room = _headroom(here, kind)
        if room is not None and (best.value is None or room < best.value):
            name = "memory.max" if kind == "v2" else "memory.limit_in_bytes"
            best = Figure(float(room), f"cgroup memory limit less usage ({here}/{name})")
    return best


def _headroom(here: str, kind: str) -> Optional[int]:
    if kind == "v2":
        limit, used = _fs.read_int(here + "/memory.max"), _fs.read_int(here + "/memory.current")
        reclaimable = (_fs.read_keyed(here + "/memory.stat") or {}).get("inactive_file", 0)
    else:
        limit, used = _fs.read_int(here + "/memory.limit_in_bytes"), _fs.read_int(here + "/memory.usage_in_bytes")
        stat = _fs.read_keyed(here + "/memory.stat") or {}
        reclaimable = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    if limit is None or limit >= UNLIMITED_BYTES or used is None:
        return None
    return max(0, limit - max(0, used - reclaimable))


__all__: List[str] = ["UNLIMITED_BYTES", "available_cpus", "available_memory"]
