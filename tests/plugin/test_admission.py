"""admission: what a test may claim, and whether it fits beside the running ones."""
from __future__ import annotations

from typing import Any

import pytest

from pytest_isolate.admission import DEFAULT_MEMORY, Budget, Demand, demand
from pytest_isolate.settings import Value

MiB = 1 << 20


def _budget(jobs: int = 3, memory: "int | None" = 1000 * MiB, cpus: float = 2.0) -> Budget:
    return Budget(jobs, "from --isolate-jobs", memory, "from --isolate-jobs-memory", cpus, "affinity: 2 CPUs")


def _d(memory: int = 100 * MiB, cpus: float = 0.0, exclusive: bool = False) -> Demand:
    return Demand(memory, "memory limit", cpus, exclusive)


class _Settings:
    def __init__(self, **values: Any) -> None:
        for name in ("memory", "cpus", "exclusive"):
            setattr(self, name, Value(values.get(name), "test"))


def test_what_a_test_claims() -> None:
    s: Any = _Settings(memory=300 * MiB, cpus=0.5)
    assert demand(s, 900 * MiB) == Demand(300 * MiB, "memory limit", 0.5, False)  # a limit beats a figure
    assert demand(_Settings(), 900 * MiB) == Demand(900 * MiB, "peak in the last run", 0.0, False)  # type: ignore[arg-type]
    assert demand(_Settings(exclusive=True), None) == Demand(DEFAULT_MEMORY, "default", 0.0, True)  # type: ignore[arg-type]


def test_jobs_memory_and_cpus_bound_who_starts() -> None:
    b = _budget()
    assert b.fits([], _d(memory=5000 * MiB))  # nothing runs: anything starts
    assert b.fits([_d(), _d()], _d())
    assert not b.fits([_d(), _d(), _d()], _d())  # three jobs
    assert not b.fits([_d(600 * MiB)], _d(500 * MiB))  # 1100 MiB > 1000 MiB
    assert b.fits([_d(600 * MiB)], _d(400 * MiB))
    assert not b.fits([_d(cpus=1.5)], _d(cpus=1.0))
    assert b.fits([_d(cpus=1.5)], _d())  # no cap: no CPU counted
    assert b.fits([_d(memory=DEFAULT_MEMORY)], _d()) and _budget(memory=None).fits([_d(10 << 40)], _d(10 << 40))


@pytest.mark.parametrize("alone, why", [
    (_d(exclusive=True), "it is exclusive"),
    (_d(memory=2000 * MiB), "its memory limit of 2.0 GiB is over the memory budget of 1000.0 MiB "
                            "(from --isolate-jobs-memory)"),
    (_d(cpus=3.0), "its cpus=3 is over the 2 CPUs this process may use (affinity: 2 CPUs)"),
])
def test_a_test_over_a_budget_on_its_own_runs_alone(alone: Demand, why: str) -> None:
    b = _budget()
    assert b.alone(alone) == why
    assert b.fits([], alone)
    assert not b.fits([_d()], alone)  # it waits until nothing runs ...
    assert not b.fits([alone], _d())  # ... and nothing starts beside it


def test_the_header_line() -> None:
    assert _budget().header() == ("jobs: 3 isolated tests at once (from --isolate-jobs); each starts while the "
                                  "memory limits in flight fit in 1000.0 MiB (from --isolate-jobs-memory) and "
                                  "their cpus= in 2 CPUs")


def test_auto_rounds_a_fraction_of_a_cpu_up() -> None:
    from isolate_runtime import Figure

    from pytest_isolate.admission import jobs_for

    assert [jobs_for(Figure(v, "x")) for v in (0.5, 1.0, 1.5, 2.0, 3.01)] == [1, 1, 2, 2, 4]
