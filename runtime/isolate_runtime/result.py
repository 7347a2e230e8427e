"""The typed contract out of the runtime: a frozen result with resource stats."""
from __future__ import annotations

import dataclasses
import enum
import signal
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import SetupError


class Outcome(str, enum.Enum):
    """How the sandbox ended, from the most specific evidence available."""

    #: The callable returned / the command exited with status 0.
    OK = "ok"
    #: The callable raised; ``SandboxResult.error`` holds the exception.
    RAISED = "raised"
    #: The command (or the callable's process) exited with a non-zero status.
    EXITED = "exited"
    #: Killed by a signal nobody in the runtime sent (e.g. SIGSEGV).
    CRASHED = "crashed"
    #: The wall-clock limit expired; the sandbox was killed.
    TIMEOUT = "timeout"
    #: The sandbox's own memory cgroup recorded an OOM kill.
    OOM = "oom"
    #: The CPU-time budget was spent; the sandbox was killed.
    CPU_BUDGET = "cpu-budget"
    #: Building the sandbox failed before the payload ran.
    SETUP_FAILED = "setup-failed"
    #: The payload sent what the caller refused (not plain data, more than
    #: its size limit, or refused by ``on_message``); the sandbox was killed.
    REJECTED = "rejected"


@dataclass(frozen=True)
class Figure:
    """One measured number and how it was obtained."""

    value: Optional[float]
    #: e.g. ``"cgroup2:memory.peak"``, ``"cgroup1:memory.max_usage_in_bytes"``,
    #: ``"sampled:memory.current"``, ``"sampled:uss-per-address-space"``, ``"rusage"``,
    #: ``"unavailable"``.
    source: str

    def __repr__(self) -> str:
        return f"{self.value!r} ({self.source})"


def _unavailable() -> Figure:
    return Figure(None, "unavailable")


@dataclass(frozen=True)
class ResourceStats:
    """What the sandbox (all of its processes together) used."""

    wall_seconds: float = 0.0
    cpu_user_seconds: Figure = field(default_factory=_unavailable)
    cpu_system_seconds: Figure = field(default_factory=_unavailable)
    peak_memory_bytes: Figure = field(default_factory=_unavailable)
    oom_kills: Figure = field(default_factory=_unavailable)
    throttled_seconds: Figure = field(default_factory=_unavailable)
    pids_peak: Figure = field(default_factory=_unavailable)
    #: Times a fork was refused because the pids limit was reached.
    pids_limit_hits: Figure = field(default_factory=_unavailable)
    io_read_bytes: Figure = field(default_factory=_unavailable)
    io_write_bytes: Figure = field(default_factory=_unavailable)

    def as_dict(self) -> Dict[str, Any]:
        """JSON-primitive view: ``{name: value, name_source: source}``."""
        out: Dict[str, Any] = {"wall_seconds": round(self.wall_seconds, 6)}
        for name in FIGURES:
            fig: Figure = getattr(self, name)
            out[name] = fig.value
            out[name + "_source"] = fig.source
        return out


#: The measured figures, in order: every :class:`ResourceStats` field but
#: the wall time (which the caller measures itself).  The one list the
#: cgroup backends, the stats JSON, its schema and the reports follow.
FIGURES: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ResourceStats) if f.name != "wall_seconds")


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one sandboxed payload.

    Like pytest's ``CallInfo``: accessors refuse to answer in the wrong state
    (``value`` raises unless the outcome is ``OK`` for a callable).
    """

    #: How it ended.
    outcome: Outcome
    #: Exit status of the payload process, when it exited.
    exit_code: Optional[int] = None
    #: Signal number that ended the payload process, when it was signalled.
    signal: Optional[int] = None
    #: The exception a callable raised (``RAISED``), or the setup failure.
    error: Optional[BaseException] = None
    #: Formatted traceback of ``error`` as it was in the sandbox.
    traceback: str = ""
    #: Resource usage with the source of every figure.
    stats: ResourceStats = field(default_factory=ResourceStats)
    #: Limits in force (JSON-primitive), e.g. ``{"memory_bytes": 209715200}``.
    limits: Mapping[str, Any] = field(default_factory=dict)
    #: Layer name -> ``"applied"`` or why not.
    layers: Mapping[str, str] = field(default_factory=dict)
    #: Paths outside the writable pass-throughs that the payload wrote
    #: (created, modified or deleted); these writes were discarded.
    written_paths: Tuple[str, ...] = ()
    #: Human-readable evidence for the outcome (e.g. "oom_kill=1 in the
    #: sandbox's memory cgroup, limit 200 MiB, peak 200 MiB").
    evidence: str = ""
    #: Whatever the payload's stack dump produced on timeout.
    stack_dump: str = ""
    #: Host services the relay carried into the sandbox, as reached inside:
    #: ``("127.0.0.1:8000", "[::1]:5432")``.
    forwarded: Tuple[str, ...] = ()
    #: What the network relay refused or could not do, one sentence each
    #: (e.g. connections reset at the cap of open connections).
    network_notes: Tuple[str, ...] = ()
    _value: Any = None

    @property
    def value(self) -> Any:
        """The callable's return value; raises if it did not return."""
        if self.outcome is not Outcome.OK:
            raise AttributeError(f"no value: the sandbox ended with {self.outcome.value} ({self.describe()})")
        return self._value

    @property
    def setup_error(self) -> Optional[SetupError]:
        return self.error if isinstance(self.error, SetupError) else None

    @property
    def signal_name(self) -> Optional[str]:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def describe(self) -> str:
        """One sentence: what happened."""
        o = self.outcome
        if o is Outcome.OK:
            text = "the payload finished normally"
        elif o is Outcome.RAISED:
            text = f"the payload raised {self.error}"
        elif o is Outcome.EXITED:
            text = f"the payload exited with status {self.exit_code}"
        elif o is Outcome.CRASHED:
            text = f"the payload was killed by {self.signal_name}"
        elif o is Outcome.TIMEOUT:
            text = "the payload exceeded its time limit and the sandbox was killed"
        elif o is Outcome.OOM:
            text = "the sandbox ran out of memory and was OOM-killed"
        elif o is Outcome.CPU_BUDGET:
            text = "the sandbox spent its CPU-time budget and was killed"
        elif o is Outcome.REJECTED:
            text = "the sandbox sent what the caller refused and was killed"
        else:
            text = str(self.error)
        if self.evidence:
            text += f" ({self.evidence})"
        return text

    def __repr__(self) -> str:
        return f"<SandboxResult {self.outcome.value}: {self.describe()}>"
