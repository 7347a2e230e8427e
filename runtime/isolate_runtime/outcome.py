"""From what was observed to how the sandbox ended: one pure function.

Like pytest's ``TestReport.from_item_and_call``: everything the decision
rests on is passed in, nothing is read here.  The order of the rules is the
order of the evidence's strength: the caller's own verdicts (it killed the
sandbox for a timeout, a CPU budget or a protocol violation), then the
kernel's (an OOM kill recorded in the sandbox's own cgroup, the payload's
wait status), and only then what the payload sent (its result) — which
counts only together with a clean exit.
"""
from __future__ import annotations

import os
import signal
from typing import Any, Dict, Mapping, Optional, Tuple

from .cgroups.base import CgroupStats
from .errors import SetupError
from .result import FIGURES, Figure, Outcome, ResourceStats, SandboxResult
from .spec import CommandPayload, SandboxSpec
from .watch import Observation


def resource_stats(wall: float, cg: CgroupStats, rusage: Any) -> ResourceStats:
    """The figures: the cgroup's, or without cgroups the caller's wait4()
    rusage (every reaped descendant), which beats sampling (it misses the
    last interval)."""
    figures: Dict[str, Figure] = {name: getattr(cg, name) for name in FIGURES}

    def pick(fig: Figure, fallback: Optional[float]) -> Figure:
        if fallback is not None and (fig.value is None or cg.cpu_sampled):
            return Figure(fallback, "rusage")
        return fig

    if rusage is not None:
        figures["cpu_user_seconds"] = pick(figures["cpu_user_seconds"], rusage.ru_utime)
        figures["cpu_system_seconds"] = pick(figures["cpu_system_seconds"], rusage.ru_stime)
    return ResourceStats(wall_seconds=wall, **figures)


def _exit(status: Optional[int]) -> Tuple[Optional[int], Optional[int]]:
    """(exit code, signal) from a wait status."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


def _mib(n: float) -> str:
    return f"{n / 1048576:.0f} MiB"


def decide(spec: SandboxSpec, obs: Observation, ready: bool, stats: ResourceStats, limits: Mapping[str, Any],
           layers: Mapping[str, str], written_paths: Tuple[str, ...],
           network: Tuple[Tuple[str, ...], Tuple[str, ...]] = ((), ())) -> SandboxResult:
    """How the sandbox ended.  ``ready``: its setup completed (the payload
    was started); ``network``: (services forwarded, the relay's notes)."""
    common: Dict[str, Any] = dict(stats=stats, limits=dict(limits), layers=dict(layers),
                                  written_paths=written_paths, stack_dump=obs.dump, forwarded=network[0],
                                  network_notes=network[1])
    code, sig = _exit(obs.status)
    if obs.setup_error is not None:
        return SandboxResult(Outcome.SETUP_FAILED, error=obs.setup_error, **common)
    if obs.forced is Outcome.TIMEOUT:
        ev = f"limit {spec.timeout_seconds:g}s"
        thr = stats.throttled_seconds.value
        if thr:
            ev += f", throttled {thr:.2f}s by the CPU cap"
        return SandboxResult(Outcome.TIMEOUT, exit_code=code, signal=sig, evidence=ev, **common)
    if obs.forced is Outcome.CPU_BUDGET:
        return SandboxResult(Outcome.CPU_BUDGET, exit_code=code, signal=sig, evidence=obs.reason, **common)
    if obs.forced is Outcome.REJECTED:
        return SandboxResult(Outcome.REJECTED, exit_code=code, signal=sig, evidence=obs.reason, **common)
    if not ready:
        detail = "the sandbox's setup ended before the payload started"
        if obs.status is not None:
            detail += f" ({'signal ' + str(sig) if sig is not None else 'status ' + str(code)})"
        return SandboxResult(Outcome.SETUP_FAILED, error=SetupError("sandbox", 0, detail), **common)
    budget = limits.get("cpu_time_seconds") or spec.limits.cpu_time_seconds
    if sig == signal.SIGXCPU and budget:
        # RLIMIT_CPU, the per-process backstop when there are no cgroups
        return SandboxResult(Outcome.CPU_BUDGET, signal=sig, evidence=f"SIGXCPU after the {budget:g} s CPU-time "
                             "budget (RLIMIT_CPU: per process, no cgroups here)", **common)
    if (stats.oom_kills.value or 0) > 0:
        peak = stats.peak_memory_bytes
        ev = f"oom_kill={int(stats.oom_kills.value or 0)} in the sandbox's own memory cgroup"
        mem_limit = limits.get("memory_bytes")
        if mem_limit:
            ev += f", limit {_mib(mem_limit)}"
        if peak.value is not None:
            ev += f", peak {_mib(peak.value)} ({peak.source})"
        return SandboxResult(Outcome.OOM, exit_code=code, signal=sig, evidence=ev, **common)
    if obs.has_value and code == 0:
        return SandboxResult(Outcome.OK, exit_code=0, _value=obs.value, **common)
    if obs.raised is not None and code is not None:
        return SandboxResult(Outcome.RAISED, exit_code=code, error=obs.raised, traceback=obs.raised.traceback,
                             **common)
    if sig is not None:
        return SandboxResult(Outcome.CRASHED, signal=sig, **common)
    if isinstance(spec.payload, CommandPayload) and code == 0:
        return SandboxResult(Outcome.OK, exit_code=0, **common)
    return SandboxResult(Outcome.EXITED, exit_code=code if code is not None else -1, **common)
