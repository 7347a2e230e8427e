"""The legacy backend: cgroup v1 controllers (pure v1 or hybrid hosts).

Where the sandboxes live, and why there
---------------------------------------
cgroup v1 has no delegation protocol: a cgroup created inside a subtree that
another manager (systemd, a container engine, a job scheduler) maintains
gets in that manager's way (it cannot remove or reconfigure the subtree
while our cgroups sit in it).  So, like Docker's ``cgroupfs`` driver, this
backend creates its tree in a directory the project owns at the top of each
hierarchy *mount*::

    <mount>/pytest-isolate/run-<pid>-<start>/sb-<n>

Inside a container the top of the mount is the container's own cgroup, so
the tree still nests under the container's limits.  On a host, the caller's
own cgroups (possibly with limits) are elsewhere in the hierarchy; to keep
outer budgets applying *in value*, the caller's effective limits (the
minimum over its cgroup and every ancestor of ``memory.limit_in_bytes``,
``memory.memsw.limit_in_bytes``, the CFS quota/period ratio and
``pids.max``) are copied onto the per-run directory.  Those outer cgroups
are only read, never written, and nothing outside ``pytest-isolate`` is
created, moved or removed.

Hierarchies used: memory (required), cpu, cpuacct, pids, blkio, and for
killing either the cgroup2 hierarchy of a hybrid host (``cgroup.kill``,
atomic) or the freezer (freeze, SIGKILL every pid, thaw, until empty).

v1 has no ``memory.oom.group``: the OOM killer picks one victim.  To give
the same "OOM kills the whole group" semantics as v2, :meth:`poll` kills the
whole sandbox as soon as ``oom_kill`` in its ``memory.oom_control`` rises.
"""
from __future__ import annotations

import atexit
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..result import Figure
from ..spec import Limits
from . import _fs
from .base import CgroupBackend, CgroupStats, Planned, SandboxCgroup, unavailable

#: Controllers this backend uses, in the order a sandbox joins them.
ROLES = ("memory", "pids", "cpu", "cpuacct", "blkio", "freezer")
CFS_PERIOD_US = 100_000
#: v1 memory counters read this (PAGE_COUNTER_MAX) when unlimited.
#: cgroup v1's default cpu.shares, the weight of one process.
CPU_SHARES = 1024
_UNLIMITED = 1 << 62


class LegacyBackend(CgroupBackend):
    """Sandboxes in v1 hierarchies under ``<mount>/pytest-isolate``."""

    name = "legacy"

    def __init__(self, mounts: Dict[str, str], unified: Optional[str] = None,
                 proc_root: str = "/proc") -> None:
        #: role -> mount point of the hierarchy holding that controller.
        self.mounts = dict(mounts)
        #: cgroup2 mount of a hybrid host (used for ``cgroup.kill`` only).
        self.unified = unified
        self.proc_root = proc_root
        self.outer_limits: Dict[str, Any] = {}
        self._run: Dict[str, str] = {}
        self._owner = 0
        self._n = 0
        self._use_unified_kill = False
        self._atexit = False
        self._at_once = 1

    # ------------------------------------------------------------ layout

    def _tops(self) -> Dict[str, str]:
        tops = {role: os.path.join(m, _fs.TOP) for role, m in self.mounts.items()}
        if self.unified is not None:
            tops["unified"] = os.path.join(self.unified, _fs.TOP)
        return tops

    def _ensure_run(self) -> Dict[str, str]:
        pid = os.getpid()
        if self._run and self._owner == pid:
            return self._run
        self.cleanup_stale()
        name = _fs.run_name(pid, self.proc_root)
        run: Dict[str, str] = {}
        made: List[str] = []
        tops = self._tops()
        try:
            if "unified" in tops:
                d = os.path.join(tops.pop("unified"), name)
                _fs.make_run_dir(os.path.dirname(d), d)
                made.append(d)
                if _fs.exists(os.path.join(d, "cgroup.kill")):
                    run["unified"] = d
                    tops.pop("freezer", None)  # cgroup.kill is atomic: one migration fewer per sandbox
                else:  # kernel < 5.14: the freezer it is
                    _fs.rmdir_retry(made.pop())
            for role, top in tops.items():
                d = os.path.join(top, name)
                if d not in made:
                    _fs.make_run_dir(top, d)
                    made.append(d)
                run[role] = d
        except OSError:
            for d in reversed(made):
                _fs.rmdir_retry(d, timeout=0.5)
            raise
        self._use_unified_kill = "unified" in run
        self._copy_outer_limits(run)
        self._run, self._owner, self._n = run, pid, 0
        self._apply_weight()
        if not self._atexit:
            atexit.register(self.shutdown)
            self._atexit = True
        return run

    def weigh(self, at_once: int) -> None:
        self._at_once = max(1, at_once)
        if self._run and self._owner == os.getpid():
            self._apply_weight()

    def _apply_weight(self) -> None:
        """``cpu.shares``: the run directory weighs as many processes as run
        at once; the top one, shared by every run on the host and a child
        of the hierarchy's root, as many as the host has CPUs (what that
        many sandboxes could use)."""
        run = self._run.get("cpu")
        if run is None or self._at_once == 1:
            return
        for d, weight in ((os.path.dirname(run), os.cpu_count() or 1), (run, self._at_once)):
            try:
                _fs.write(os.path.join(d, "cpu.shares"), str(CPU_SHARES * max(weight, self._at_once)))
            except OSError:  # a read-only or foreign top: the default weight, as before
                pass

    def _ancestors(self, role: str) -> List[str]:
        """The caller's cgroup in ``role``'s hierarchy and its ancestors, as
        directories under the mount (empty when the caller's path is not
        below the mount's root)."""
        own = _fs.own_cgroups(self.proc_root).get(role)
        mount = self.mounts.get(role)
        if own is None or mount is None:
            return []
        rel = os.path.normpath(own).lstrip("/")
        if rel.startswith(".."):
            return []
        out = []
        d = os.path.join(mount, rel) if rel and rel != "." else mount
        while True:
            out.append(d)
            if d == mount or len(d) <= len(mount):
                break
            d = os.path.dirname(d)
        return out

    def _min_over_ancestors(self, role: str, file: str) -> Optional[int]:
        vals = [v for v in (_fs.read_int(os.path.join(d, file)) for d in self._ancestors(role)) if v is not None]
        return min(vals) if vals else None

    def _copy_outer_limits(self, run: Dict[str, str]) -> None:
        """Copy the caller's effective limits onto the run directory (read
        from the caller's cgroups, written only to our own)."""
        outer: Dict[str, Any] = {}
        if "memory" in run:
            for file, key in (("memory.limit_in_bytes", "memory_bytes"), ("memory.memsw.limit_in_bytes",
                                                                             "memory_swap_bytes")):
                v = self._min_over_ancestors("memory", file)
                if v is not None and v < _UNLIMITED:
                    _fs.write(os.path.join(run["memory"], file), str(v))
                    outer[key] = v
        if "cpu" in run:
            ratios = []
            for d in self._ancestors("cpu"):
                q = _fs.read_int(os.path.join(d, "cpu.cfs_quota_us"))
                p = _fs.read_int(os.path.join(d, "cpu.cfs_period_us"))
                if q is not None and q > 0 and p:
                    ratios.append(q / p)
            if ratios:
                _fs.write(os.path.join(run["cpu"], "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                _fs.write(os.path.join(run["cpu"], "cpu.cfs_quota_us"),
                          str(max(1000, math.ceil(min(ratios) * CFS_PERIOD_US))))
                outer["cpus"] = min(ratios)
        if "pids" in run:
            v = self._min_over_ancestors("pids", "pids.max")
            if v is not None:
                _fs.write(os.path.join(run["pids"], "pids.max"), str(v))
                outer["pids"] = v
        self.outer_limits = outer

    # ------------------------------------------------------------ contract

    def create(self, label: str, limits: Limits) -> SandboxCgroup:
        run = self._ensure_run()
        self._n += 1
        dirs: Dict[str, str] = {}
        made: List[str] = []
        try:
            for role, rd in run.items():
                d = os.path.join(rd, f"sb-{self._n}")
                if d not in made:
                    os.mkdir(d, 0o755)
                    made.append(d)
                dirs[role] = d
            return LegacyCgroup(dirs, limits, self._use_unified_kill)
        except BaseException:
            for d in reversed(made):
                _fs.rmdir_retry(d, timeout=0.5)
            raise

    def plan(self, label: str, limits: Limits) -> Optional[Planned]:
        run = self._ensure_run()
        self._n += 1
        dirs = {role: os.path.join(rd, f"sb-{self._n}") for role, rd in run.items()}
        return Planned(dirs, tuple(dict.fromkeys(dirs.values())))

    def adopt(self, planned: Planned, limits: Limits) -> SandboxCgroup:
        return LegacyCgroup(dict(planned.dirs), limits, self._use_unified_kill)

    def describe(self) -> str:
        where = os.path.join(self.mounts.get("memory", next(iter(self.mounts.values()), "?")), _fs.TOP)
        where = f"<each hierarchy's mount>/{_fs.TOP} (e.g. {where})"
        ctrls = ",".join(r for r in ROLES if r in self.mounts)
        kill = "cgroup2 cgroup.kill" if self.unified else ("freezer" if "freezer" in self.mounts else "signals")
        text = f"legacy (cgroup v1{', hybrid' if self.unified else ''}): {ctrls}; sandboxes in {where}; kill via {kill}"
        if self.outer_limits:
            text += "; outer limits copied: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outer_limits.items()))
        return text

    def cleanup_stale(self) -> int:
        removed = 0
        for role, top in self._tops().items():
            kill = _fs.kill_with_cgroup_kill if role == "unified" else _kill_dir_plain
            removed += _fs.remove_stale_runs(top, kill, self.proc_root)
        return removed

    def shutdown(self) -> None:
        if not self._run or self._owner != os.getpid():
            return
        for role, d in self._run.items():
            _fs.remove_tree(d, _fs.kill_with_cgroup_kill if role == "unified" else _kill_dir_plain)
            _fs.rmdir_if_empty(os.path.dirname(d))
        self._run = {}


def _kill_dir_plain(d: str) -> None:
    _fs.kill_loop(lambda: _fs.procs(d))


class LegacyCgroup(SandboxCgroup):
    """One sandbox: a directory per hierarchy (co-mounted ones shared)."""

    def __init__(self, dirs: Dict[str, str], limits: Limits, unified_kill: bool) -> None:
        self.dirs = dirs
        self._unified_kill = unified_kill
        self.applied_limits: Dict[str, Any] = {}
        self.unapplied: Dict[str, str] = {}
        seen: List[str] = []
        for role in ("unified",) + ROLES:
            d = dirs.get(role)
            if d is not None and d not in seen:
                seen.append(d)
        #: Precomputed so that the forked child only does open/write/close.
        self._join = [os.path.join(d, "cgroup.procs") for d in seen]
        self._distinct = seen
        self._budget_ns = (None if limits.cpu_time_seconds is None
                           else int(limits.cpu_time_seconds * 1e9))
        self._budget = limits.cpu_time_seconds
        self._oom_seen = 0
        self._pids_sampled = 0
        self._has_pids_peak = "pids" in dirs and _fs.exists(self._f("pids", "pids.peak"))
        self._apply(limits)

    def _f(self, role: str, name: str) -> str:
        return os.path.join(self.dirs[role], name)

    def _apply(self, limits: Limits) -> None:
        if "memory" in self.dirs:
            if limits.memory_bytes is not None:
                _fs.write(self._f("memory", "memory.limit_in_bytes"), str(limits.memory_bytes))
                self.applied_limits["memory_bytes"] = limits.memory_bytes
                if _fs.exists(self._f("memory", "memory.memsw.limit_in_bytes")):
                    # memory+swap == memory: no swap at all; with swap the
                    # limit alone lets a test page out and run on, far
                    # slower, instead of being OOM-killed at its cap.
                    _fs.write(self._f("memory", "memory.memsw.limit_in_bytes"), str(limits.memory_bytes))
                    self.applied_limits["swap_bytes"] = 0
                else:
                    try:
                        _fs.write(self._f("memory", "memory.swappiness"), "0")
                        self.applied_limits["swappiness"] = 0
                    except OSError:
                        self.unapplied["swap"] = "no memory.memsw.limit_in_bytes (swapaccount=0): swap not limited"
            # The OOM killer acts inside the group (never pause it).
            _fs.write(self._f("memory", "memory.oom_control"), "0")
        elif limits.memory_bytes is not None:
            self.unapplied["memory_bytes"] = "no v1 memory hierarchy"
        if limits.cpus is not None:
            if "cpu" in self.dirs:
                _fs.write(self._f("cpu", "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                _fs.write(self._f("cpu", "cpu.cfs_quota_us"), str(max(1000, round(limits.cpus * CFS_PERIOD_US))))
                self.applied_limits["cpus"] = limits.cpus
            else:
                self.unapplied["cpus"] = "no v1 cpu hierarchy"
        if limits.pids is not None:
            if "pids" in self.dirs:
                _fs.write(self._f("pids", "pids.max"), str(limits.pids))
                self.applied_limits["pids"] = limits.pids
            else:
                self.unapplied["pids"] = "no v1 pids hierarchy"
        if limits.cpu_time_seconds is not None:
            if "cpuacct" in self.dirs or "unified" in self.dirs:
                self.applied_limits["cpu_time_seconds"] = limits.cpu_time_seconds
            else:
                self.unapplied["cpu_time_seconds"] = "no cpuacct hierarchy to measure CPU time"

    # ------------------------------------------------------------ child side

    def join_files(self) -> Optional[Sequence[str]]:
        return self._join

    def join_self(self) -> None:
        for path in self._join:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def child_rlimits(self) -> Sequence[Tuple[int, int]]:
        return ()

    # ------------------------------------------------------------ parent side

    def _cpu_used_ns(self) -> Tuple[Optional[int], str]:
        if "cpuacct" in self.dirs:
            v = _fs.read_int(self._f("cpuacct", "cpuacct.usage"))
            if v is not None:
                return v, "cgroup1:cpuacct.usage"
        if "unified" in self.dirs:
            st = _fs.read_keyed(self._f("unified", "cpu.stat"))
            if st and "usage_usec" in st:
                return st["usage_usec"] * 1000, "cgroup2:cpu.stat"
        return None, "unavailable"

    def poll(self) -> Optional[str]:
        if "memory" in self.dirs:
            oc = _fs.read_keyed(self._f("memory", "memory.oom_control"))
            n = (oc or {}).get("oom_kill", 0)
            if n > self._oom_seen:
                # v1 killed one victim; make it the whole group, like v2's memory.oom.group.
                self._oom_seen = n
                self.kill()
        if "pids" in self.dirs and not self._has_pids_peak:
            cur = _fs.read_int(self._f("pids", "pids.current"))
            if cur is not None:
                self._pids_sampled = max(self._pids_sampled, cur)
        if self._budget_ns is not None:
            used, source = self._cpu_used_ns()
            if used is not None and used >= self._budget_ns:
                return (f"CPU-time budget of {self._budget:g} s spent: {used / 1e9:.2f} s of CPU "
                        f"by the sandbox's processes ({source})")
        return None

    def procs(self) -> List[int]:
        seen: List[int] = []
        for d in self._distinct:
            for p in _fs.procs(d):
                if p not in seen:
                    seen.append(p)
        return seen

    def _freeze(self, on: bool) -> None:
        path = self._f("freezer", "freezer.state")
        _fs.write(path, "FROZEN" if on else "THAWED")
        if on:
            _fs.wait_empty(lambda: [1] if _fs.read(path).strip() == "FREEZING" else [], timeout=1.0)

    def doom(self) -> None:
        if self._unified_kill:
            try:
                _fs.write(self._f("unified", "cgroup.kill"), "1")
                return
            except OSError:
                pass
        super().doom()

    def kill(self) -> None:
        if self._unified_kill:
            try:
                _fs.write(self._f("unified", "cgroup.kill"), "1")
            except OSError:
                pass
            if _fs.wait_empty(self.procs, timeout=1.0):
                return
        _fs.kill_loop(self.procs, self._freeze if "freezer" in self.dirs else None)

    def read_stats(self) -> CgroupStats:
        na = "no v1 {} hierarchy"
        user = system = unavailable(na.format("cpuacct"))
        if "cpuacct" in self.dirs:
            # cpuacct.usage is the scheduler's exact runtime; usage_user and
            # usage_sys are charged per tick and sum to less (1.55-1.79 s for
            # 2.0 s of four busy processes on a 6.x kernel).  So the total is
            # usage's, split in usage_user:usage_sys proportion.
            total = _fs.read_int(self._f("cpuacct", "cpuacct.usage"))
            u = _fs.read_int(self._f("cpuacct", "cpuacct.usage_user"))
            s = _fs.read_int(self._f("cpuacct", "cpuacct.usage_sys"))
            if total is not None and u is not None and s is not None:
                share = u / (u + s) if u + s > 0 else 1.0
                user = Figure(total * share / 1e9, "cgroup1:cpuacct.usage x usage_user share")
                system = Figure(total * (1 - share) / 1e9, "cgroup1:cpuacct.usage x usage_sys share")
        if user.value is None and "unified" in self.dirs:
            ust = _fs.read_keyed(self._f("unified", "cpu.stat")) or {}
            if "user_usec" in ust:
                user = Figure(ust["user_usec"] / 1e6, "cgroup2:cpu.stat user_usec")
                system = Figure(ust.get("system_usec", 0) / 1e6, "cgroup2:cpu.stat system_usec")
        peak = ooms = unavailable(na.format("memory"))
        if "memory" in self.dirs:
            v = _fs.read_int(self._f("memory", "memory.max_usage_in_bytes"))
            if v is not None:
                peak = Figure(v, "cgroup1:memory.max_usage_in_bytes")
            oc = _fs.read_keyed(self._f("memory", "memory.oom_control"))
            if oc is not None and "oom_kill" in oc:
                ooms = Figure(oc["oom_kill"], "cgroup1:memory.oom_control oom_kill")
            else:
                ooms = unavailable("memory.oom_control has no oom_kill line (kernel < 4.13)")
        throttled = unavailable(na.format("cpu"))
        if "cpu" in self.dirs:
            st = _fs.read_keyed(self._f("cpu", "cpu.stat"))
            if st is not None and "throttled_time" in st:
                throttled = Figure(st["throttled_time"] / 1e9, "cgroup1:cpu.stat throttled_time")
        pids_peak = hits = unavailable(na.format("pids"))
        if "pids" in self.dirs:
            if self._has_pids_peak:
                v = _fs.read_int(self._f("pids", "pids.peak"))
                pids_peak = Figure(v, "cgroup1:pids.peak") if v is not None else unavailable("pids.peak unreadable")
            else:
                cur = _fs.read_int(self._f("pids", "pids.current")) or 0
                pids_peak = Figure(max(self._pids_sampled, cur), "sampled:pids.current")
            ev = _fs.read_keyed(self._f("pids", "pids.events"))
            hits = Figure(ev["max"], "cgroup1:pids.events max") if ev and "max" in ev else \
                unavailable("no pids.events (kernel < 4.7)")
        io_r, io_w = self._io()
        return CgroupStats(user, system, peak, ooms, throttled, pids_peak, hits, io_r, io_w)

    def _io(self) -> Tuple[Figure, Figure]:
        """Block-device reads; and what the sandbox wrote to disk-backed
        files.  v1 charges writeback to the root blkio cgroup, so blkio sees
        only the sandbox's direct I/O; the page cache it dirtied and that was
        not yet written back when it ended (memory.stat total_dirty +
        total_writeback) is added.  Pages the kernel wrote back while the
        sandbox still ran (fsync, or past vm.dirty_background_*) are missing."""
        rw = None
        io_r = unavailable("no v1 blkio hierarchy")
        src = "cgroup1:blkio.throttle.io_service_bytes_recursive"
        if "blkio" in self.dirs:
            rw = _blkio_bytes(self._f("blkio", "blkio.throttle.io_service_bytes_recursive"))
            io_r = Figure(rw[0], src) if rw is not None else unavailable(f"no {src.split(':')[1]}")
        mem = (_fs.read_keyed(self._f("memory", "memory.stat")) or {}) if "memory" in self.dirs else {}
        dirty = None
        if "total_dirty" in mem:
            dirty = mem["total_dirty"] + mem.get("total_writeback", 0)
        if rw is not None and dirty is not None:
            io_w = Figure(rw[1] + dirty, "cgroup1:blkio Write + memory.stat total_dirty + total_writeback")
        elif rw is not None:
            io_w = Figure(rw[1], f"{src} Write (no memory.stat: buffered writes are not counted)")
        elif dirty is not None:
            io_w = Figure(dirty, "cgroup1:memory.stat total_dirty + total_writeback (no blkio hierarchy: direct "
                                 "I/O is not counted)")
        else:
            io_w = unavailable("no v1 blkio or memory hierarchy")
        return io_r, io_w

    def close(self) -> None:
        if self.procs():
            self.kill()
        for d in reversed(self._distinct):
            _fs.rmdir_retry(d)

    def directories(self) -> Sequence[str]:
        return tuple(reversed(self._distinct))


def _blkio_bytes(path: str) -> Optional[Tuple[int, int]]:
    try:
        text = _fs.read(path)
    except OSError:
        return None
    r = w = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("Read", "Write"):
            if parts[1] == "Read":
                r += int(parts[2])
            else:
                w += int(parts[2])
    return r, w
