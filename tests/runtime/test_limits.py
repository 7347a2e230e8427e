"""Limits and stats end to end, through ``isolate_runtime.run`` (the launcher's
outcome classification on top of the cgroup backend)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict

import pytest
from isolate_runtime import Limits, Outcome, SandboxResult
from isolate_runtime.cgroups import probe_cgroups

from ..conftest import skip_unless

MiB = 1 << 20
Sandbox = Callable[..., SandboxResult]
pytestmark = pytest.mark.cgroup


@pytest.fixture
def cgroups() -> None:
    p = probe_cgroups()
    skip_unless(p.available, f"no cgroups here: {p.reason}")


def _allocate(n: int) -> int:
    data = b"\x01" * n
    return len(data)


def _sampled_then_allocate(n: int) -> int:
    """``_allocate``, after living long enough to be sampled (an allocation
    the rlimit refuses at once can end the payload before any sample)."""
    time.sleep(0.5)
    return _allocate(n)


def _three_children() -> None:
    code = "import time; d = b'\\x01' * (100 << 20); time.sleep(3)"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    for p in procs:
        p.wait()


def test_oom_outcome_with_evidence(sandbox: Sandbox, cgroups: None) -> None:
    r = sandbox(_allocate, 300 * MiB, limits=Limits(memory_bytes=200 * MiB))
    assert r.outcome is Outcome.OOM, r
    assert (r.stats.oom_kills.value or 0) >= 1
    assert "oom_kill=" in r.evidence and "limit 200 MiB" in r.evidence and "peak" in r.evidence
    assert r.limits["memory_bytes"] == 200 * MiB
    assert r.stats.peak_memory_bytes.value is not None and r.stats.peak_memory_bytes.value >= 150 * MiB


def test_oom_limit_is_per_sandbox_not_per_process(sandbox: Sandbox, cgroups: None) -> None:
    r = sandbox(_three_children, limits=Limits(memory_bytes=200 * MiB), timeout_seconds=60)
    assert r.outcome is Outcome.OOM, r
    assert (r.stats.oom_kills.value or 0) >= 1


def _busy(seconds: float) -> float:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return time.process_time()


def test_cpu_budget_outcome(sandbox: Sandbox, cgroups: None) -> None:
    t = time.monotonic()
    r = sandbox(_busy, 30.0, limits=Limits(cpu_time_seconds=1.0), timeout_seconds=60)
    assert r.outcome is Outcome.CPU_BUDGET, r
    assert time.monotonic() - t < 20
    assert "1" in r.evidence


def _busy_in(processes: int, seconds: float) -> None:
    """Several busy processes: the group asks for more than its cap even
    when a loaded host gives each of them a small share."""
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            _busy(seconds)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)


def test_cpu_cap_throttles(sandbox: Sandbox, cgroups: None) -> None:
    """Up to three tries: on a host loaded from elsewhere the sandbox may get
    less than its cap by fair share alone and is then never throttled;
    without the cap it is never throttled at all."""
    for _ in range(3):
        r = sandbox(_busy_in, 8, 0.25, limits=Limits(cpus=0.5), timeout_seconds=60)
        assert r.outcome is Outcome.OK, r
        cpu = (r.stats.cpu_user_seconds.value or 0) + (r.stats.cpu_system_seconds.value or 0)
        assert cpu / r.stats.wall_seconds <= 0.6
        if (r.stats.throttled_seconds.value or 0) > 0:
            break
    else:
        raise AssertionError(f"never throttled in three tries: {r.stats.throttled_seconds}")


def _fork_bomb() -> Dict[str, Any]:
    children, refused = [], 0
    for _ in range(200):
        try:
            pid = os.fork()
        except BlockingIOError:
            refused += 1
            continue
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        children.append(pid)
    return {"started": len(children), "refused": refused}


def test_pids_limit_contains_a_fork_bomb(sandbox: Sandbox, cgroups: None) -> None:
    r = sandbox(_fork_bomb, limits=Limits(pids=32), timeout_seconds=60)
    assert r.outcome is Outcome.OK, r
    assert r.value["started"] < 32 and r.value["refused"] > 0
    assert (r.stats.pids_limit_hits.value or 0) > 0
    subprocess.run(["true"], check=True)  # the host still forks


def _child_allocates(mib: int) -> None:
    subprocess.run([sys.executable, "-c", f"import time; d = b'\\x01' * ({mib} << 20); time.sleep(0.5)"],
                   check=True)


def test_peak_memory_of_a_child_process(sandbox: Sandbox, cgroups: None) -> None:
    # The child interpreter and the page cache it pulls in add 6 to 20 MiB depending on the host's
    # Python, so the figure is compared with the same child allocating nothing, run the same way.
    peaks = []
    for mib in (0, 100):
        r = sandbox(_child_allocates, mib, timeout_seconds=60)
        assert r.outcome is Outcome.OK, r
        peak = r.stats.peak_memory_bytes.value
        assert peak is not None, r.stats
        peaks.append(peak)
    grew = peaks[1] - peaks[0]
    assert 90 * MiB <= grew <= 110 * MiB, ([p / MiB for p in peaks], r.stats.peak_memory_bytes.source)


def test_inherited_pages_are_not_charged(sandbox: Sandbox, cgroups: None) -> None:
    # Compared with the same sandbox before the ballast existed: what the
    # sandbox's own processes touch varies with the Python version.
    without = sandbox(int).stats.peak_memory_bytes.value
    ballast = b"\x01" * (300 * MiB)
    try:
        r = sandbox(int)
        assert r.outcome is Outcome.OK, r
        peak = r.stats.peak_memory_bytes.value
        assert without is not None and peak is not None, r.stats
        assert peak < without + 10 * MiB, (without, peak, r.stats.peak_memory_bytes.source)
    finally:
        del ballast


def test_without_cgroups_rlimits_enforce_and_figures_are_labelled(sandbox: Sandbox,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISOLATE_RUNTIME_CGROUPS", "none")
    r = sandbox(_busy, 30.0, limits=Limits(cpu_time_seconds=1.0), timeout_seconds=60)
    assert r.outcome is Outcome.CPU_BUDGET, r
    assert r.stats.cpu_user_seconds.source == "rusage"
    r = sandbox(_sampled_then_allocate, 300 * MiB, limits=Limits(memory_bytes=200 * MiB))
    assert r.outcome is Outcome.RAISED and getattr(r.error, "type_name", "") == "MemoryError", r
    assert r.stats.peak_memory_bytes.source == "sampled:uss-per-address-space", r.stats.peak_memory_bytes
