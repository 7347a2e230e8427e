"""Containment suite: hostile tests under ``--isolate-all``, checked from outside.

The summary line at the end counts the cases: tried, contained (passed),
known defects (strict xfail, each naming the defect) and failures.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator

import pytest

from ..conftest import skip_unless
from .harness import SANITY, Hostile, nobody_can_run_pytest, sessions_fixture, unprivileged_fixture

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def caps() -> object:
    import isolate_runtime

    return isolate_runtime.probe()


@pytest.fixture
def full_sandbox(caps: object) -> None:
    """Skip (or fail under PYTEST_ISOLATE_MUST_WORK=1) without every layer."""
    missing = [f"{layer.name}: {layer.reason}" for layer in caps.missing()]  # type: ignore[attr-defined]
    skip_unless(not missing, f"this host lacks isolation layers: {'; '.join(missing)}")


@pytest.fixture
def cgroups(caps: object) -> None:
    from isolate_runtime.cgroups import probe_cgroups

    got = probe_cgroups()
    skip_unless(got.available and "memory" in got.controllers and "pids" in got.controllers,
                f"no per-test memory and pids cgroups here: {got.describe()}")


@pytest.fixture
def hostile(tmp_path: Path, full_sandbox: None) -> Iterator[Hostile]:
    yield from sessions_fixture(tmp_path)


@pytest.fixture
def ordinary_user(tmp_path: Path, full_sandbox: None) -> Iterator[Hostile]:
    """A case whose inner pytest runs as an ordinary user: only there may the
    sandbox make a user namespace of its own (a root run's seccomp filter
    refuses it)."""
    if os.geteuid() != 0:
        yield from sessions_fixture(tmp_path)
        return
    why = nobody_can_run_pytest()
    skip_unless(not why, why)
    yield from unprivileged_fixture()


@pytest.fixture
def host_global() -> None:
    """The escape this case looks for would change host-global state: never
    run it without the sandbox."""
    if SANITY:
        pytest.skip("CONTAINMENT_SANITY: this escape would change host-global state")


_counts: Dict[str, Dict[str, int]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if not path.startswith("tests/containment/test_"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        kind = Path(path).stem[len("test_"):]
        bucket = _counts.setdefault(kind, {"tried": 0, "contained": 0, "defect": 0, "failed": 0, "skipped": 0})
        if hasattr(report, "wasxfail"):
            bucket["tried"] += 1
            bucket["defect"] += 1
        elif report.skipped:
            bucket["skipped"] += 1
        else:
            bucket["tried"] += 1
            bucket["contained" if report.passed else "failed"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _counts:
        return
    terminalreporter.section("pytest-isolate containment")
    total = {"tried": 0, "contained": 0, "defect": 0, "failed": 0, "skipped": 0}
    for kind, c in sorted(_counts.items()):
        for k in total:
            total[k] += c[k]
        terminalreporter.write_line(f"{kind:<12} {c['tried']} cases tried, {c['contained']} contained, "
                                    f"{c['defect']} known defects (xfail), {c['failed']} failed, "
                                    f"{c['skipped']} skipped")
    terminalreporter.write_line(f"{'total':<12} {total['tried']} cases tried, {total['contained']} contained, "
                                f"{total['defect']} known defects (xfail), {total['failed']} failed, "
                                f"{total['skipped']} skipped")
