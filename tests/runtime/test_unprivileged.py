"""Must-show 6: the sandbox tests pass for an unprivileged user too.

When the suite runs as root, this re-runs ``test_sandbox.py`` and
``test_relay.py`` as uid 65534 (with setpriv), with a $HOME that user owns
outside /tmp.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import skip_unless

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: test_sandbox.py itself is the check")
def test_sandbox_suite_passes_unprivileged(full_isolation: None) -> None:
    uid = 65534
    setpriv = shutil.which("setpriv")
    skip_unless(setpriv is not None, "setpriv (util-linux) is not installed")
    assert setpriv is not None
    check = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
             "'import isolate_runtime, psutil, pytest'], check=True)")
    probe = subprocess.run([setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-c",
                            check], capture_output=True, text=True)
    skip_unless(probe.returncode == 0,
                f"this interpreter is not usable by uid {uid} (install it in a venv outside /root): "
                f"{probe.stderr[-200:]}")
    # one per run: tox -p runs two environments from the same checkout at once
    work = PROJECT / f".unprivileged-run-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "home").mkdir(parents=True)
    (work / "tmp").mkdir()
    for d in (work, work / "home", work / "tmp"):
        os.chown(d, uid, uid)
    env = dict(os.environ, HOME=str(work / "home"), PYTEST_ADDOPTS="")
    try:
        out = subprocess.run(
            [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
             sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:isolate", "-q",
             f"--basetemp={work / 'tmp' / 'bt'}", "tests/runtime/test_sandbox.py", "tests/runtime/test_relay.py"],
            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
