"""Is the C accelerator in use, and why not: the probe's answer
for every state, and where users read it (the probe CLI; the pytest header,
``--isolate-doctor`` and ``python -m pytest_isolate`` in
tests/plugin/test_host_report.py; a wheel built without a compiler in
tests/test_packaging.py)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from isolate_runtime.probe import FIX_REBUILD, Accelerator, accelerator, probe

from ..conftest import MUST_WORK


def test_in_use_on_this_host() -> None:
    got = accelerator(environ={})
    if MUST_WORK and sys.platform.startswith("linux") and platform.machine() == "x86_64":
        assert got == Accelerator("in use"), got  # CI builds it: a silent fallback would fail here
    assert got.describe() == "in use (isolate_runtime._fastspawn sets up each sandbox without the interpreter)" \
        or not got.in_use
    assert probe().accelerator.state == got.state


def test_disabled_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_accel_ok.py").write_text("def sandbox(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert accelerator(environ={}, module="fake_accel_ok").in_use
    got = accelerator(environ={"ISOLATE_RUNTIME_SPAWN": "fork"}, module="fake_accel_ok")
    assert got.describe() == "not used: disabled: ISOLATE_RUNTIME_SPAWN=fork is set: sandboxes are set up in Python"
    assert got.fix == "unset ISOLATE_RUNTIME_SPAWN"
    bad = accelerator(environ={"ISOLATE_RUNTIME_SPAWN": "vfork"}, module="fake_accel_ok")
    assert bad.describe() == ("not used: disabled: ISOLATE_RUNTIME_SPAWN='vfork' is not one of: auto, fork (every "
                              "sandbox fails to start)")


@pytest.mark.parametrize("plat, machine", [("darwin", "x86_64"), ("linux", "aarch64")])
def test_unsupported_platforms(plat: str, machine: str) -> None:
    got = accelerator(platform=plat, machine=machine)
    assert got.state == "unsupported" and got.fix == ""
    assert got.describe() == (f"not used: unsupported: it is built for Linux on x86-64 only (this is {plat} on "
                              f"{machine}); sandboxes are set up in Python")


def test_not_built_says_why_from_the_build_record(tmp_path: Path) -> None:
    (tmp_path / "_fastspawn-build.json").write_text(json.dumps(
        {"built": False, "reason": "no C compiler (x86_64-linux-gnu-gcc not found)"}))
    got = accelerator(module="isolate_runtime._not_a_module", record_dir=str(tmp_path))
    assert got.describe() == ("not used: not built: no C compiler (x86_64-linux-gnu-gcc not found); sandboxes are "
                              "set up in Python")
    assert got.fix == FIX_REBUILD
    (tmp_path / "_fastspawn-build.json").unlink()
    got = accelerator(module="isolate_runtime._not_a_module", record_dir=str(tmp_path))
    assert got.describe() == ("not used: not built: the build left no record (installed from a wheel built without "
                              "it, or a checkout never built); sandboxes are set up in Python")


def test_a_build_that_does_not_load_is_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_accel_broken.py").write_text(
        "raise ImportError('libc.so.6: version `GLIBC_2.99` not found')\n")
    (tmp_path / "fake_accel_stale.py").write_text("def older(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    got = accelerator(module="fake_accel_broken")
    assert got.describe() == ("not used: broken: it was built but does not load (libc.so.6: version `GLIBC_2.99` not "
                              "found)")
    stale = accelerator(module="fake_accel_stale")
    assert stale.describe() == (f"not used: broken: {tmp_path / 'fake_accel_stale.py'} is a build of an older "
                                "version (no sandbox())")
    assert got.fix == stale.fix == FIX_REBUILD


def test_probe_cli_says_it() -> None:
    env = dict(os.environ, ISOLATE_RUNTIME_SPAWN="fork")
    out = subprocess.run([sys.executable, "-m", "isolate_runtime", "probe"], env=env, capture_output=True,
                         text=True, timeout=60)
    lines = out.stdout.splitlines()
    i = lines.index("C accel  not used: disabled: ISOLATE_RUNTIME_SPAWN=fork is set: sandboxes are set up in Python")
    assert lines[i + 1] == "             fix: unset ISOLATE_RUNTIME_SPAWN"
