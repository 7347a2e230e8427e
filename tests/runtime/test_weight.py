"""The cgroups of the sandboxes a caller keeps running at once weigh that
many processes' worth of CPU (running_at_once)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from isolate_runtime.cgroups import select_backend
from isolate_runtime.cgroups.legacy import LegacyBackend
from isolate_runtime.cgroups.unified import UnifiedBackend


def _files(d: Path, *names: str) -> None:
    d.mkdir(parents=True)
    for name in names:
        (d / name).write_text("")  # cgroupfs files always exist


def test_legacy_run_and_top_directories(tmp_path: Path) -> None:
    run = tmp_path / "cpu" / "pytest-isolate" / "run-1-2"
    _files(run, "cpu.shares")
    (run.parent / "cpu.shares").write_text("1024")
    b = LegacyBackend({"cpu": str(tmp_path / "cpu")}, None, proc_root=str(tmp_path))
    b._run, b._owner = {"cpu": str(run)}, os.getpid()
    b.weigh(1)
    assert (run / "cpu.shares").read_text() == ""  # one at a time: the defaults, as ever
    b.weigh(3)
    assert (run / "cpu.shares").read_text() == "3072"
    assert (run.parent / "cpu.shares").read_text() == str(1024 * max(3, os.cpu_count() or 1))


def test_unified_run_and_top_directories(tmp_path: Path) -> None:
    b = UnifiedBackend(str(tmp_path), "/")
    run = Path(b.top) / "run-1-2"
    _files(run, "cpu.weight")
    (run.parent / "cpu.weight").write_text("100")
    b._run, b._owner, b.controllers = str(run), os.getpid(), ("cpu",)
    b.weigh(200)
    assert (run / "cpu.weight").read_text() == "10000"  # the most cgroup v2 takes
    for d in (run, run.parent):  # (a cgroupfs write replaces the value; a plain file's does not)
        (d / "cpu.weight").write_text("")
    b.weigh(4)
    assert (run / "cpu.weight").read_text() == "400"
    assert (run.parent / "cpu.weight").read_text() == str(100 * max(4, os.cpu_count() or 1))
    b.controllers = ("memory",)
    b.weigh(2)
    assert (run / "cpu.weight").read_text() == "400"  # no cpu controller: nothing to weigh


@pytest.mark.cgroup
def test_on_this_host(full_isolation: None) -> None:
    from isolate_runtime import CallablePayload, SandboxSpec, run, running_at_once

    backend = select_backend()
    try:
        running_at_once(3)
        assert run(SandboxSpec(payload=CallablePayload(int))).outcome.value == "ok"
        if isinstance(backend, LegacyBackend):
            got = Path(backend._run["cpu"], "cpu.shares").read_text().strip() if "cpu" in backend._run else "3072"
            assert got == "3072"
        elif isinstance(backend, UnifiedBackend) and "cpu" in backend.controllers:
            assert Path(backend._run, "cpu.weight").read_text().strip() == "300"
    finally:
        running_at_once(1)
