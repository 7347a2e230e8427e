"""The cgroup backend contract (strategy + null object + one selector).

The launcher talks to cgroups only through :class:`CgroupBackend` and
:class:`SandboxCgroup`; the one ``if`` on the hierarchy kind lives in
:func:`isolate_runtime.cgroups.select_backend`.

Life of one sandbox's cgroup, as the launcher drives it::

    cg = backend.create(label, limits)   # parent, before fork
    cg.join_self()                       # child, right after fork, before unshare
    ... while waiting: cg.poll()         # parent, every few ms; CPU budget / sampling
    cg.kill()                            # parent, on timeout/budget/cleanup: whole tree
    stats = cg.read_stats()              # parent, after the payload exited
    cg.close()                           # parent: remove (EBUSY retries) or return to pool
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..result import Figure
from ..spec import Limits


@dataclass(frozen=True)
class Planned:
    """The directories of a sandbox's cgroup, named but not made yet (see
    :meth:`CgroupBackend.plan`)."""

    #: role (hierarchy) -> directory
    dirs: Dict[str, str]
    #: the directories to make, in order (co-mounted roles share one)
    to_make: Tuple[str, ...]


@dataclass(frozen=True)
class CgroupStats:
    """Figures read from (or sampled for) one sandbox's cgroup."""

    cpu_user_seconds: Figure
    cpu_system_seconds: Figure
    peak_memory_bytes: Figure
    oom_kills: Figure
    throttled_seconds: Figure
    pids_peak: Figure
    pids_limit_hits: Figure
    io_read_bytes: Figure
    io_write_bytes: Figure
    #: The CPU figures were sampled (no cgroup counts them): the caller's
    #: wait4() rusage is then the better figure.
    cpu_sampled: bool = False


class SandboxCgroup(abc.ABC):
    """One sandbox's cgroup (or its stand-in when there are no cgroups)."""

    #: Limits actually in force, JSON-primitive (``{"memory_bytes": ...}``).
    applied_limits: Dict[str, Any]
    #: Limit name -> why it is not (fully) enforced, e.g. ``{"pids": "no pids
    #: controller ..."}``; empty when every requested limit is in force.
    unapplied: Dict[str, str] = {}

    def set_root_pid(self, pid: int) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called by the parent right after fork with the sandbox's first
        process (backends that find the sandbox by its process tree need it)."""

    def join_files(self) -> Optional[Sequence[str]]:
        """The files :meth:`join_self` writes ``0`` to, for a child that joins
        without the interpreter (the C accelerator); ``None`` if joining is
        more than that."""
        return None

    @abc.abstractmethod
    def join_self(self) -> None:
        """Move the calling process into the cgroup (runs in the forked child,
        before it unshares anything; must not allocate much or take locks)."""

    @abc.abstractmethod
    def child_rlimits(self) -> Sequence[Tuple[int, int]]:
        """``(resource, limit)`` pairs the child sets on itself (the fallback
        when there is no controller for a limit). Never applied to the caller."""

    @abc.abstractmethod
    def poll(self) -> Optional[str]:
        """Called by the parent while the sandbox runs (every ~20 ms).
        Samples what must be sampled; returns a reason when the CPU-time
        budget is spent (the launcher then kills with outcome CPU_BUDGET)."""

    @abc.abstractmethod
    def procs(self) -> List[int]:
        """PIDs (in the caller's pid namespace) still in the cgroup."""

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL every process in the cgroup, including ones that left the
        sandbox's pid namespace view or ignore signals; returns when empty
        (bounded wait)."""

    def doom(self) -> None:
        """SIGKILL every process in the cgroup now and return at once: they
        are dying (their exit, e.g. the teardown of a large address space,
        goes on beside the caller), none runs another instruction of its own."""
        from . import _fs

        _fs.kill_members(self.procs(), self.procs)

    @abc.abstractmethod
    def read_stats(self) -> CgroupStats:
        """Read every figure before removal, each labelled with its source."""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove the cgroup (retrying EBUSY) or return it to a pool."""

    def directories(self) -> Sequence[str]:
        """The cgroup's directories, for a removal done elsewhere (the
        keeper); empty when there are none."""
        return ()


class CgroupBackend(abc.ABC):
    """A kind of hierarchy: ``unified`` (v2), ``legacy`` (v1/hybrid), ``none``."""

    name: str
    #: Whether it creates a cgroup per sandbox (worth creating one ahead).
    makes_cgroups: bool = True

    @abc.abstractmethod
    def create(self, label: str, limits: Limits) -> SandboxCgroup:
        """A fresh cgroup for one sandbox with ``limits`` applied."""

    def plan(self, label: str, limits: Limits) -> Optional[Planned]:
        """Name the next sandbox's cgroup directories without making them
        (the keeper makes them beside the caller); ``None`` when this
        backend creates its cgroups only through :meth:`create`."""
        return None

    def adopt(self, planned: Planned, limits: Limits) -> SandboxCgroup:
        """The sandbox cgroup for directories made from :meth:`plan`, with
        ``limits`` applied."""
        raise NotImplementedError

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the pytest header / probe, e.g. where cgroups live."""

    def cleanup_stale(self) -> int:
        """Remove cgroups left by crashed earlier runs (dead owner pid).
        Returns how many were removed."""
        return 0

    def shutdown(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Remove everything this backend created in this process."""

    def weigh(self, at_once: int) -> None:  # noqa: B027 - optional hook, a no-op by default
        """The caller keeps ``at_once`` sandboxes running: give their cgroups
        together the CPU weight of that many processes.  A cgroup competes
        for CPU with its siblings as *one* entity, so without this all the
        sandboxes in flight would share what a single process gets (on a
        cgroup v1 host, beside every process in the hierarchy's root)."""


def unavailable(why: str) -> Figure:
    """A figure that could not be obtained, saying why (never a silent 0)."""
    return Figure(None, f"unavailable: {why}")
