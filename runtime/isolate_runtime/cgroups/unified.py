"""The unified backend: cgroup v2.

Sandboxes nest under the caller's own cgroup (the ``0::`` line of
``/proc/self/cgroup``), so every limit Docker, systemd or CI put on the
caller keeps applying::

    <own>/pytest-isolate/run-<pid>-<start>/sb-<n>
    <own>/pytest-isolate-leaf          (only if <own> had to be emptied)

The "no internal processes" rule: a non-root cgroup with processes cannot
enable controllers for its children.  If enabling them on ``<own>`` answers
EBUSY, every process of ``<own>`` (the caller and whoever shares its cgroup)
is moved into the leaf ``pytest-isolate-leaf`` first.  The leaf has no
limits, so the limits that apply to those processes do not change; a later
caller that finds itself in the leaf anchors at the leaf's parent.  The
leaf is left in place: it holds the caller until the caller exits.

Per sandbox: ``memory.max`` with ``memory.swap.max=0`` and
``memory.oom.group=1`` (an OOM kills the whole sandbox), ``cpu.max``,
``pids.max``; the CPU-time budget is checked from ``cpu.stat`` in
:meth:`UnifiedCgroup.poll`; kill is ``cgroup.kill`` (kernel >= 5.14) with
a freeze-and-kill fallback.
"""
from __future__ import annotations

import atexit
import errno
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..result import Figure
from ..spec import Limits
from . import _fs
from .base import CgroupBackend, CgroupStats, Planned, SandboxCgroup, unavailable

LEAF = "pytest-isolate-leaf"
#: Controllers this backend enables for its subtree when they are available.
WANTED = ("memory", "cpu", "pids", "io")
CPU_PERIOD_US = 100_000
#: cgroup v2's default cpu.weight (one process's), and its maximum.
CPU_WEIGHT, CPU_WEIGHT_MAX = 100, 10_000


def anchor_of(mount: str, own: str) -> str:
    """The directory our tree goes under: the caller's cgroup, or the
    parent of the leaf an earlier run moved the caller into."""
    rel = os.path.normpath(own).lstrip("/")
    d = os.path.join(mount, rel) if rel and rel != "." else mount
    if os.path.basename(d) == LEAF:
        d = os.path.dirname(d)
    return d


class UnifiedBackend(CgroupBackend):
    """Sandboxes under ``<caller's cgroup>/pytest-isolate``."""

    name = "unified"

    def __init__(self, mount: str, own: str, proc_root: str = "/proc") -> None:
        self.mount = mount
        self.anchor = anchor_of(mount, own)
        self.proc_root = proc_root
        #: Controllers enabled for our sandboxes (known after the first create).
        self.controllers: Tuple[str, ...] = ()
        self.moved_to_leaf = False
        self._run = ""
        self._owner = 0
        self._n = 0
        self._atexit = False
        self._at_once = 1

    @property
    def top(self) -> str:
        return os.path.join(self.anchor, _fs.TOP)

    # ------------------------------------------------------------ setup

    def _enable(self, d: str, ctrls: Sequence[str]) -> List[str]:
        """Enable ``ctrls`` (those available) for ``d``'s children; returns
        the ones now enabled.  Raises OSError(EBUSY) for the no-internal-
        processes rule."""
        avail = _fs.read(os.path.join(d, "cgroup.controllers")).split()
        on = _fs.read(os.path.join(d, "cgroup.subtree_control")).split()
        for c in ctrls:
            if c in avail and c not in on:
                _fs.write(os.path.join(d, "cgroup.subtree_control"), "+" + c)
                on.append(c)
        return [c for c in ctrls if c in on]

    def _empty_into_leaf(self) -> None:
        leaf = os.path.join(self.anchor, LEAF)
        _fs.mkdir(leaf)
        for _ in range(100):  # processes may fork while we move them
            pids = _fs.procs(self.anchor)
            if not pids:
                break
            for pid in pids:
                try:
                    _fs.write(os.path.join(leaf, "cgroup.procs"), str(pid))
                except ProcessLookupError:
                    pass
        self.moved_to_leaf = True

    def _prepare_anchor(self) -> List[str]:
        try:
            return self._enable(self.anchor, WANTED)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
        self._empty_into_leaf()
        return self._enable(self.anchor, WANTED)

    def _ensure_run(self) -> str:
        pid = os.getpid()
        if self._run and self._owner == pid:
            return self._run
        self.cleanup_stale()
        ctrls = self._prepare_anchor()
        run = os.path.join(self.top, _fs.run_name(pid, self.proc_root))
        _fs.make_run_dir(self.top, run)
        try:
            ctrls = self._enable(self.top, ctrls)
            ctrls = self._enable(run, ctrls)
        except OSError:
            _fs.rmdir_retry(run, timeout=0.5)
            raise
        self.controllers = tuple(ctrls)
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
        """``cpu.weight``: the run directory weighs as many processes as run
        at once, the top one (beside the caller's own processes) as many as
        the host has CPUs, at least."""
        if "cpu" not in self.controllers or self._at_once == 1:
            return
        for d, weight in ((self.top, max(os.cpu_count() or 1, self._at_once)), (self._run, self._at_once)):
            try:
                _fs.write(os.path.join(d, "cpu.weight"), str(min(CPU_WEIGHT_MAX, CPU_WEIGHT * weight)))
            except OSError:  # the default weight, as before
                pass

    # ------------------------------------------------------------ contract

    def create(self, label: str, limits: Limits) -> SandboxCgroup:
        run = self._ensure_run()
        self._n += 1
        d = os.path.join(run, f"sb-{self._n}")
        os.mkdir(d, 0o755)
        try:
            return UnifiedCgroup(d, limits, self.controllers)
        except BaseException:
            _fs.rmdir_retry(d, timeout=0.5)
            raise

    def plan(self, label: str, limits: Limits) -> Optional[Planned]:
        run = self._ensure_run()
        self._n += 1
        d = os.path.join(run, f"sb-{self._n}")
        return Planned({"": d}, (d,))

    def adopt(self, planned: Planned, limits: Limits) -> SandboxCgroup:
        return UnifiedCgroup(planned.dirs[""], limits, self.controllers)

    def describe(self) -> str:
        ctrls = ",".join(self.controllers) if self.controllers else "controllers enabled on first use"
        text = f"unified (cgroup v2): sandboxes in {self.top}; {ctrls}"
        if self.moved_to_leaf:
            text += f"; the caller's cgroup was emptied into {LEAF} (no-internal-processes rule)"
        return text

    def cleanup_stale(self) -> int:
        return _fs.remove_stale_runs(self.top, _fs.kill_with_cgroup_kill, self.proc_root)

    def shutdown(self) -> None:
        if not self._run or self._owner != os.getpid():
            return
        _fs.remove_tree(self._run, _fs.kill_with_cgroup_kill)
        _fs.rmdir_if_empty(self.top)
        self._run = ""


class UnifiedCgroup(SandboxCgroup):
    """One sandbox's v2 cgroup."""

    def __init__(self, path: str, limits: Limits, controllers: Sequence[str]) -> None:
        self.path = path
        self.controllers = tuple(controllers)
        self.applied_limits: Dict[str, Any] = {}
        self.unapplied: Dict[str, str] = {}
        self._procs_file = os.path.join(path, "cgroup.procs")
        self._budget_us = None if limits.cpu_time_seconds is None else int(limits.cpu_time_seconds * 1e6)
        self._budget = limits.cpu_time_seconds
        self._has_peak = "memory" in self.controllers and _fs.exists(self._f("memory.peak"))
        self._has_pids_peak = "pids" in self.controllers and _fs.exists(self._f("pids.peak"))
        self._mem_sampled = 0
        self._pids_sampled = 0
        self._apply(limits)

    def _f(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _missing(self, ctrl: str) -> str:
        return (f"the {ctrl} controller is not available in this cgroup (not delegated, or not enabled "
                f"in a parent's cgroup.subtree_control)")

    def _apply(self, limits: Limits) -> None:
        if "memory" in self.controllers:
            if limits.memory_bytes is not None:
                _fs.write(self._f("memory.max"), str(limits.memory_bytes))
                self.applied_limits["memory_bytes"] = limits.memory_bytes
                if _fs.exists(self._f("memory.swap.max")):
                    _fs.write(self._f("memory.swap.max"), "0")
                    self.applied_limits["swap_bytes"] = 0
                else:
                    self.unapplied["swap"] = "no memory.swap.max (kernel without swap accounting)"
            if _fs.exists(self._f("memory.oom.group")):
                _fs.write(self._f("memory.oom.group"), "1")
        elif limits.memory_bytes is not None:
            self.unapplied["memory_bytes"] = self._missing("memory")
        if limits.cpus is not None:
            if "cpu" in self.controllers:
                quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
                _fs.write(self._f("cpu.max"), f"{quota} {CPU_PERIOD_US}")
                self.applied_limits["cpus"] = limits.cpus
            else:
                self.unapplied["cpus"] = self._missing("cpu")
        if limits.pids is not None:
            if "pids" in self.controllers:
                _fs.write(self._f("pids.max"), str(limits.pids))
                self.applied_limits["pids"] = limits.pids
            else:
                self.unapplied["pids"] = self._missing("pids")
        if limits.cpu_time_seconds is not None:
            # cpu.stat usage_usec is always there (core, no controller needed).
            self.applied_limits["cpu_time_seconds"] = limits.cpu_time_seconds

    # ------------------------------------------------------------ child side

    def join_files(self) -> Optional[Sequence[str]]:
        return (self._procs_file,)

    def join_self(self) -> None:
        fd = os.open(self._procs_file, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def child_rlimits(self) -> Sequence[Tuple[int, int]]:
        return ()

    # ------------------------------------------------------------ parent side

    def _sample(self) -> None:
        if "memory" in self.controllers and not self._has_peak:
            cur = _fs.read_int(self._f("memory.current"))
            if cur is not None:
                self._mem_sampled = max(self._mem_sampled, cur)
        if "pids" in self.controllers and not self._has_pids_peak:
            cur = _fs.read_int(self._f("pids.current"))
            if cur is not None:
                self._pids_sampled = max(self._pids_sampled, cur)

    def poll(self) -> Optional[str]:
        self._sample()
        if self._budget_us is not None:
            st = _fs.read_keyed(self._f("cpu.stat")) or {}
            used = st.get("usage_usec")
            if used is not None and used >= self._budget_us:
                return (f"CPU-time budget of {self._budget:g} s spent: {used / 1e6:.2f} s of CPU "
                        f"by the sandbox's processes (cgroup2:cpu.stat usage_usec)")
        return None

    def procs(self) -> List[int]:
        return _fs.procs(self.path)

    def _freeze(self, on: bool) -> None:
        _fs.write(self._f("cgroup.freeze"), "1" if on else "0")
        if on:
            _fs.wait_empty(lambda: [] if (_fs.read_keyed(self._f("cgroup.events")) or {}).get("frozen") else [1],
                           timeout=1.0)

    def doom(self) -> None:
        try:
            _fs.write(self._f("cgroup.kill"), "1")
        except OSError:  # kernel < 5.14
            super().doom()

    def kill(self) -> None:
        try:
            _fs.write(self._f("cgroup.kill"), "1")
            if _fs.wait_empty(self.procs, timeout=1.0):
                return
        except OSError:  # kernel < 5.14
            pass
        _fs.kill_loop(self.procs, self._freeze if _fs.exists(self._f("cgroup.freeze")) else None)

    def read_stats(self) -> CgroupStats:
        self._sample()
        cpu = _fs.read_keyed(self._f("cpu.stat")) or {}
        user = Figure(cpu["user_usec"] / 1e6, "cgroup2:cpu.stat user_usec") if "user_usec" in cpu \
            else unavailable("no cpu.stat user_usec")
        system = Figure(cpu["system_usec"] / 1e6, "cgroup2:cpu.stat system_usec") if "system_usec" in cpu \
            else unavailable("no cpu.stat system_usec")
        if "cpu" in self.controllers and "throttled_usec" in cpu:
            throttled = Figure(cpu["throttled_usec"] / 1e6, "cgroup2:cpu.stat throttled_usec")
        else:
            throttled = unavailable(self._missing("cpu"))
        if "memory" not in self.controllers:
            peak = ooms = unavailable(self._missing("memory"))
        else:
            v = _fs.read_int(self._f("memory.peak")) if self._has_peak else None
            peak = Figure(v, "cgroup2:memory.peak") if v is not None else \
                Figure(self._mem_sampled, "sampled:memory.current")
            ev = _fs.read_keyed(self._f("memory.events")) or {}
            n = max(ev.get("oom_kill", 0), ev.get("oom_group_kill", 0))
            ooms = Figure(n, "cgroup2:memory.events oom_kill") if "oom_kill" in ev else \
                unavailable("memory.events has no oom_kill")
        if "pids" not in self.controllers:
            pids_peak = hits = unavailable(self._missing("pids"))
        else:
            v = _fs.read_int(self._f("pids.peak")) if self._has_pids_peak else None
            pids_peak = Figure(v, "cgroup2:pids.peak") if v is not None else \
                Figure(self._pids_sampled, "sampled:pids.current")
            pev = _fs.read_keyed(self._f("pids.events")) or {}
            hits = Figure(pev["max"], "cgroup2:pids.events max") if "max" in pev else \
                unavailable("no pids.events")
        io_r, io_w = self._io()
        return CgroupStats(user, system, peak, ooms, throttled, pids_peak, hits, io_r, io_w)

    def _io(self) -> Tuple[Figure, Figure]:
        """Block-device reads; and what the sandbox wrote to disk-backed
        files: its block-device writes plus the page cache it dirtied that
        was still to be written back when it ended.  Buffered writes reach
        the block layer seconds after the test (vm.dirty_expire_centisecs),
        so io.stat alone said 0 for a test that wrote 10 MiB.  With cgroup
        writeback (v2, memory and io enabled) pages written back while the
        sandbox ran are charged to it, in ``wbytes``; pages under writeback
        are in ``wbytes`` already, so only ``file_dirty`` is added."""
        rw = _io_bytes(self._f("io.stat")) if "io" in self.controllers else None
        mem = (_fs.read_keyed(self._f("memory.stat")) or {}) if "memory" in self.controllers else {}
        if "io" not in self.controllers:
            io_r = unavailable(self._missing("io"))
        else:
            io_r = Figure(rw[0], "cgroup2:io.stat rbytes") if rw else unavailable("io.stat unreadable")
        if rw is not None and "file_dirty" in mem:
            io_w = Figure(rw[1] + mem["file_dirty"], "cgroup2:io.stat wbytes + memory.stat file_dirty")
        elif rw is not None:
            io_w = Figure(rw[1], "cgroup2:io.stat wbytes (no memory.stat: writes still in the page cache are "
                                 "not counted)")
        elif "file_dirty" in mem:
            io_w = Figure(mem["file_dirty"] + mem.get("file_writeback", 0),
                          "cgroup2:memory.stat file_dirty + file_writeback (no io controller: pages written back "
                          "before the sandbox ended are not counted)")
        else:
            io_w = unavailable(self._missing("io"))
        return io_r, io_w

    def close(self) -> None:
        if self.procs():
            self.kill()
        _fs.rmdir_retry(self.path)

    def directories(self) -> Sequence[str]:
        return (self.path,)


def _io_bytes(path: str) -> Optional[Tuple[int, int]]:
    try:
        text = _fs.read(path)
    except OSError:
        return None
    r = w = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            k, _, v = field.partition("=")
            if k == "rbytes":
                r += int(v)
            elif k == "wbytes":
                w += int(v)
    return r, w
