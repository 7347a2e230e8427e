"""``--isolate-jobs``: how many isolated tests may run at once, and whether
the next one may start now.

A :class:`Budget` for the run, resolved once at configure:

- how many sandboxes run at once (``--isolate-jobs N``; ``auto``: the CPUs
  this process may use, see ``isolate_runtime.available_cpus``);
- how much memory the tests in flight may claim together
  (``--isolate-jobs-memory``; default: the memory available to this
  process, its cgroup's limit included);
- how many CPUs their ``cpus=`` caps may add up to (the CPUs this process
  may use).

Under pytest-xdist every worker has such a budget, and the defaults
(``auto``, the memory) are shared out equally among the workers.

A :class:`Demand` per test: the memory it may claim (its ``memory`` limit;
without one, its peak in the last run, from pytest's cache; else
:data:`DEFAULT_MEMORY`), its ``cpus`` cap (a test without one counts no
CPU: the number of jobs bounds those), and whether it is ``exclusive``.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import pytest
from isolate_runtime import Figure, available_cpus, available_memory

from .figures import human_bytes
from .stats import cached_figures

if TYPE_CHECKING:
    from .settings import ItemSettings, SessionSettings

#: What a test with neither a memory limit nor a figure from the last run
#: is assumed to claim.
DEFAULT_MEMORY = 256 << 20
#: How far ahead of the test being reported tests are started, in jobs:
#: a slow test then holds back the report of the ones after it, not their
#: start (what they sent waits in memory for their turn).
AHEAD = 4


class IsolateJobsWarning(pytest.PytestWarning):
    """A test ran with no other sandbox in flight, because what it may
    claim alone is over the budget of ``--isolate-jobs``."""


@dataclass(frozen=True)
class Demand:
    """What one test may claim while it runs."""

    memory_bytes: int
    #: ``"memory limit"``, ``"peak in the last run"`` or ``"default"``.
    memory_source: str
    #: Its ``cpus`` cap; 0 without one.
    cpus: float
    exclusive: bool


def demand(s: "ItemSettings", last_peak: Optional[int]) -> Demand:
    if s.memory.value:
        memory, source = int(s.memory.value), "memory limit"
    elif last_peak:
        memory, source = int(last_peak), "peak in the last run"
    else:
        memory, source = DEFAULT_MEMORY, "default"
    return Demand(memory, source, float(s.cpus.value or 0.0), bool(s.exclusive.value))


def last_peaks(config: pytest.Config) -> Mapping[str, Any]:
    """Each test's peak memory in the last run (the stats' baseline in
    pytest's cache): nodeid -> figures."""
    return cached_figures(config)


def xdist_workers(config: pytest.Config) -> int:
    """How many xdist workers share this machine (1 without xdist)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        count = workerinput.get("workercount", 1)
    else:
        dist = config.getoption("dist", "no")
        count = config.getoption("numprocesses", None) if dist != "no" else 1
    return count if isinstance(count, int) and count > 0 else 1


@dataclass(frozen=True)
class Budget:
    """How many tests may run at once, and what they may claim together."""

    jobs: int
    #: Why that many: ``"from --isolate-jobs"``, ``"auto: 2 CPUs"``.
    why: str
    #: ``None``: no memory budget (the host's memory could not be read).
    memory_bytes: Optional[int]
    memory_source: str
    cpus: float
    cpus_source: str
    #: xdist workers sharing the defaults.
    workers: int = 1

    @classmethod
    def resolve(cls, settings: "SessionSettings", config: pytest.Config) -> "Budget":
        workers = xdist_workers(config)
        per = f" / {workers} xdist workers" if workers > 1 else ""
        asked = settings["jobs"]
        cpus = available_cpus()
        share = Figure((cpus.value or 1.0) / workers, cpus.source)
        if asked.value == "auto":
            jobs = jobs_for(share)
            text = f"{cpus.value:g} CPUs" if cpus.source.startswith("affinity") else cpus.source
            why = f"auto: {text}{per}"
        else:
            jobs, why = int(asked.value), f"from {asked.source}"
        given = settings["jobs_memory"]
        memory: Optional[int]
        if given.value is not None:
            memory, memory_source = int(given.value), f"from {given.source}"
        else:
            available = available_memory()
            memory = None if available.value is None else int(available.value / workers)
            memory_source = f"available to this process: {available.source}{per}"
        return cls(jobs, why, memory, memory_source, float(share.value or 1.0), f"{share.source}{per}", workers)

    def alone(self, d: Demand) -> Optional[str]:
        """Why this test runs with no other in flight (``None``: it need not)."""
        if d.exclusive:
            return "it is exclusive"
        if self.memory_bytes is not None and d.memory_bytes > self.memory_bytes:
            return (f"its {d.memory_source} of {human_bytes(d.memory_bytes)} is over the memory budget of "
                    f"{human_bytes(self.memory_bytes)} ({self.memory_source})")
        if d.cpus > self.cpus:
            return f"its cpus={d.cpus:g} is over the {self.cpus:g} CPUs this process may use ({self.cpus_source})"
        return None

    def fits(self, running: Sequence[Demand], d: Demand) -> bool:
        """May a test with demand ``d`` start beside the ``running`` ones?"""
        if not running:
            return True
        if len(running) >= self.jobs or self.alone(d) is not None:
            return False
        if any(self.alone(r) is not None for r in running):
            return False
        if self.memory_bytes is not None and sum(r.memory_bytes for r in running) + d.memory_bytes > self.memory_bytes:
            return False
        return sum(r.cpus for r in running) + d.cpus <= self.cpus + 1e-9

    def header(self) -> str:
        """The header line: how many, why, and the limits of admission."""
        memory = "unknown" if self.memory_bytes is None else human_bytes(self.memory_bytes)
        worker = " per xdist worker" if self.workers > 1 else ""
        return (f"jobs: {self.jobs} isolated tests at once{worker} ({self.why}); each starts while the memory "
                f"limits in flight fit in {memory} ({self.memory_source}) and their cpus= in {self.cpus:g} CPUs")


def jobs_for(cpus: Figure) -> int:
    """Sandboxes to keep running for this many CPUs: a fraction rounds up
    (1.5 CPUs keep two busy), never fewer than one."""
    return max(1, math.ceil((cpus.value or 1.0) - 1e-9))


def ran_alone(item: pytest.Item, why: str) -> None:
    """Record the note of a test that ran alone for its budget."""
    text = f"pytest-isolate: {item.nodeid} ran with no other test in flight: {why}"
    path = os.fspath(getattr(item, "path", "") or "")
    message = warnings.WarningMessage(IsolateJobsWarning(text), IsolateJobsWarning, path, (item.location[1] or 0) + 1)
    item.ihook.pytest_warning_recorded.call_historic(
        kwargs=dict(warning_message=message, nodeid=item.nodeid, when="runtest", location=None))


__all__ = ["AHEAD", "Budget", "DEFAULT_MEMORY", "Demand", "IsolateJobsWarning", "demand", "jobs_for", "last_peaks",
           "ran_alone"]
