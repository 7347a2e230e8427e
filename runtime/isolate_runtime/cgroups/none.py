"""The fallback when there are no usable cgroups (no delegation, read-only
cgroupfs, another OS, or switched off).

Limits fall back to resource limits that the sandbox's payload process sets
on itself (never on the caller), and figures to sampling the sandbox's
process tree with psutil; every figure says how it was obtained:

* memory: ``RLIMIT_DATA`` (not ``RLIMIT_AS``, which breaks JIT runtimes and
  sanitizers), **per process**, on top of the data segment the payload
  inherited from the caller, so only new allocations count.  Exceeding it
  makes the allocation fail (``MemoryError``) instead of an OOM kill.
* CPU time: the tree's CPU time sampled in :meth:`_SampledSandbox.poll` (the
  launcher kills with outcome CPU_BUDGET), plus ``RLIMIT_CPU`` one second
  later per process as a backstop.
* pids: not enforceable (``RLIMIT_NPROC`` counts every process of the user,
  the caller's included).
* CPU bandwidth (``cpus``): not enforceable.
* peak memory: the largest sampled sum of USS (pages private to an address
  space, so pages inherited copy-on-write from the caller do not count),
  each address space once: the sandbox's PID 1 and the test share one
  (``clone(CLONE_VM)``), and so may processes the test starts; the kernel
  says which do (``kcmp(KCMP_VM)``).  Once a process's memory map could not
  be read (not dumpable, and no ``CAP_SYS_PTRACE``) the figure is
  unavailable, never 0 and never the sum of the others: a test that makes
  itself not dumpable after the first samples would otherwise hide what it
  allocates from then on.
* kill: SIGKILL to the sampled tree, repeated until it is empty; a process
  that left the tree (re-parented to the host's init) cannot be found.
"""
from __future__ import annotations

import math
import os
import signal
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..result import Figure
from ..spec import Limits
from .base import CgroupBackend, CgroupStats, SandboxCgroup, unavailable

try:  # resource is POSIX-only
    import resource

    _RLIMIT_DATA: Optional[int] = resource.RLIMIT_DATA
    _RLIMIT_CPU: Optional[int] = resource.RLIMIT_CPU
except ImportError:  # pragma: no cover - Windows
    _RLIMIT_DATA = _RLIMIT_CPU = None


def _vm_data_bytes() -> int:
    """This process's data segment as RLIMIT_DATA counts it (VmData)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _same_address_space(pid: int, other: int) -> bool:
    """Does the kernel say the two share one address space?  (No when it
    cannot say: counted twice rather than not at all.)"""
    from .._syscalls import KCMP_VM, kcmp

    try:
        return kcmp(pid, other, KCMP_VM)
    except OSError:
        return False


#: The memory figure's source.
MEMORY_SOURCE = "sampled:uss-per-address-space"


def _uss_bytes(pid: int) -> Optional[int]:
    """Private (unshared) resident bytes of ``pid`` from ``smaps_rollup``
    (one cheap read; psutil's ``memory_full_info`` walks all of ``smaps``).
    ``None``: this user may not read it.  A process that is gone raises
    ProcessLookupError."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(pid) from None
    except OSError:
        return None
    total = 0
    for line in data.splitlines():
        if line.startswith((b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")):
            total += int(line.split()[1]) * 1024
    return total


class _SampledSandbox(SandboxCgroup):
    """A sandbox without a cgroup: rlimits in the child, sampling in the parent."""

    def __init__(self, limits: Limits, reason: str) -> None:
        self.reason = reason
        self.limits = limits
        self.applied_limits: Dict[str, Any] = {}
        self.unapplied: Dict[str, str] = {}
        self.root_pid: Optional[int] = None
        self._roots: List[int] = []
        self._known: Dict[int, Any] = {}  # pid -> psutil.Process (create time pinned)
        self._mem_peak = 0
        #: Samples in which some process's memory was read; processes whose
        #: memory could not be read.
        self._mem_samples = 0
        self._mem_unreadable = 0
        self._pids_peak = 0
        self._cpu = (0.0, 0.0)
        self._io = (0, 0)
        self._io_ok = True
        self._sampled = False
        self._budget = limits.cpu_time_seconds
        why = f"no cgroups ({reason})"
        if limits.memory_bytes is not None:
            if _RLIMIT_DATA is not None:
                self.applied_limits["memory_bytes"] = limits.memory_bytes
                self.unapplied["memory_bytes"] = (f"{why}: enforced per process by RLIMIT_DATA on new "
                                                  "allocations (MemoryError, not an OOM kill)")
            else:
                self.unapplied["memory_bytes"] = f"{why}: no RLIMIT_DATA on this platform"
        if limits.cpu_time_seconds is not None:
            self.applied_limits["cpu_time_seconds"] = limits.cpu_time_seconds
            self.unapplied["cpu_time_seconds"] = (f"{why}: the process tree's CPU time is sampled "
                                                  "(RLIMIT_CPU per process as a backstop)")
        if limits.pids is not None:
            self.unapplied["pids"] = f"{why}: not enforceable (RLIMIT_NPROC counts every process of the user)"
        if limits.cpus is not None:
            self.unapplied["cpus"] = f"{why}: a CPU bandwidth cap needs the cpu controller"

    def set_root_pid(self, pid: int) -> None:
        # Called for each process the sandbox's tree hangs from (A, then S
        # and P, which are the caller's children with the C executor).
        if self.root_pid is None:
            self.root_pid = pid
        if pid not in self._roots:
            self._roots.append(pid)

    def join_files(self) -> Optional[Sequence[str]]:
        return ()

    def join_self(self) -> None:
        pass

    def child_rlimits(self) -> Sequence[Tuple[int, int]]:
        # Runs in the payload process itself (the launcher applies the pairs
        # there), so VmData is the payload's inherited data segment.
        out: List[Tuple[int, int]] = []
        if self.limits.memory_bytes is not None and _RLIMIT_DATA is not None:
            out.append((_RLIMIT_DATA, _vm_data_bytes() + self.limits.memory_bytes))
        if self.limits.cpu_time_seconds is not None and _RLIMIT_CPU is not None:
            # Whole seconds only; one second after the tree budget so that the
            # sampled budget (outcome CPU_BUDGET) normally fires first.
            out.append((_RLIMIT_CPU, math.ceil(self.limits.cpu_time_seconds) + 1))
        return out

    # ------------------------------------------------------------ sampling

    def _tree(self) -> List[Any]:
        import psutil

        tree: List[Any] = []
        seen = set()
        for pid in self._roots:
            try:
                root = self._known.get(pid) or psutil.Process(pid)
                self._known[pid] = root
                if not root.is_running() or root.status() == psutil.STATUS_ZOMBIE:
                    continue
                for p in [root, *root.children(recursive=True)]:
                    if p.pid not in seen:
                        seen.add(p.pid)
                        tree.append(p)
            except psutil.Error:
                continue
        for p in tree:
            self._known.setdefault(p.pid, p)
        return tree

    def _sample(self) -> float:
        import psutil

        tree = self._tree()
        if not tree:
            return self._cpu[0] + self._cpu[1]
        self._sampled = True
        mem = user = system = 0.0
        rd = wr = 0
        spaces: List[int] = []  # one pid per address space counted
        for p in tree:
            try:
                with p.oneshot():
                    zombie = p.status() == psutil.STATUS_ZOMBIE  # its memory is gone
                    t = p.cpu_times()
                    user += t.user + t.children_user
                    system += t.system + t.children_system
                    if self._io_ok:
                        try:
                            io = p.io_counters()
                            rd += io.read_bytes
                            wr += io.write_bytes
                        except (psutil.AccessDenied, AttributeError, NotImplementedError):
                            self._io_ok = False
            except psutil.Error:
                continue
            if zombie:
                continue
            try:
                uss = _uss_bytes(p.pid)
            except ProcessLookupError:  # it ended between the listing and the read
                continue
            if uss is None:
                self._mem_unreadable += 1
            elif not any(_same_address_space(p.pid, q) for q in spaces):
                spaces.append(p.pid)
                mem += uss
        if spaces:
            self._mem_samples += 1
            self._mem_peak = max(self._mem_peak, int(mem))
        self._pids_peak = max(self._pids_peak, len(tree))
        self._cpu = (max(self._cpu[0], user), max(self._cpu[1], system))
        self._io = (max(self._io[0], rd), max(self._io[1], wr))
        return self._cpu[0] + self._cpu[1]

    def poll(self) -> Optional[str]:
        used = self._sample()
        if self._budget is not None and used >= self._budget:
            return (f"CPU-time budget of {self._budget:g} s spent: {used:.2f} s of CPU by the sandbox's "
                    f"processes (psutil:sampled-cpu-times; no cgroups: {self.reason})")
        return None

    def procs(self) -> List[int]:
        return [p.pid for p in self._tree()]

    def kill(self) -> None:
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            tree = self._tree()
            if not tree:
                return
            for p in reversed(tree):  # leaves first: fewer re-parentings
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.005)

    def read_stats(self) -> CgroupStats:
        self._sample()
        why = f"no cgroups ({self.reason})"
        if not self._sampled:
            nothing = unavailable(f"{why}; the sandbox ended before it was sampled")
            cpu_u = cpu_s = mem = pids = io_r = io_w = nothing
        else:
            cpu_u = Figure(self._cpu[0], "psutil:sampled-cpu-times")
            cpu_s = Figure(self._cpu[1], "psutil:sampled-cpu-times")
            mem = self._memory(why)
            pids = Figure(self._pids_peak, "psutil:sampled-count")
            if self._io_ok:
                io_r = Figure(self._io[0], "psutil:sampled-io")
                io_w = Figure(self._io[1], "psutil:sampled-io")
            else:
                io_r = io_w = unavailable(f"{why}; per-process I/O counters not readable")
        return CgroupStats(
            cpu_user_seconds=cpu_u,
            cpu_system_seconds=cpu_s,
            peak_memory_bytes=mem,
            oom_kills=unavailable(f"{why}: no memory cgroup to record OOM kills"),
            throttled_seconds=unavailable(f"{why}: no CPU bandwidth cap"),
            pids_peak=pids,
            pids_limit_hits=unavailable(f"{why}: no pids limit"),
            io_read_bytes=io_r,
            io_write_bytes=io_w,
            cpu_sampled=self._sampled,
        )

    def _memory(self, why: str) -> Figure:
        if self._mem_unreadable:  # what the others held is not the sandbox's peak
            return unavailable(f"{why}; the memory maps of the sandbox's processes are not readable by uid "
                               f"{os.geteuid()} (they are not dumpable)")
        if self._mem_samples:
            return Figure(self._mem_peak, MEMORY_SOURCE)
        return unavailable(f"{why}; the sandbox ended before its memory was sampled")

    def close(self) -> None:
        if self.procs():
            self.kill()
        self._known.clear()


class NoCgroupBackend(CgroupBackend):
    """The null backend: says why there are no cgroups, falls back to
    rlimits and sampling."""

    name = "none"
    makes_cgroups = False

    def __init__(self, reason: str, fix: str = "") -> None:
        self.reason = reason
        self.fix = fix

    def create(self, label: str, limits: Limits) -> SandboxCgroup:
        return _SampledSandbox(limits, self.reason)

    def describe(self) -> str:
        text = f"none ({self.reason}); limits by rlimits in the sandbox, figures sampled with psutil"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text
