"""An ordinary user on cgroup v2 (issue #17): the cgroup tests as uid 65534
in a subtree delegated to it.

These need root on a cgroup v2 host to build the delegation (CI runs them
in the cgroup v2 VM with ``PYTEST_ISOLATE_CGROUP2=1``, which turns the skip
on any other host into a failure).  Everything runs for real: the kernel's
delegation rules, and the user's own sandboxes and limits.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from isolate_runtime.cgroups import _fs, probe_cgroups

from ..conftest import skip_unless
from .cgroup_helpers import NOBODY, delegate_subtree, remove_subtree

pytestmark = pytest.mark.cgroup

PROJECT = Path(__file__).resolve().parents[2]
#: Set by CI for its cgroup v2 runs: these tests must run there.
CGROUP2 = os.environ.get("PYTEST_ISOLATE_CGROUP2") == "1"


def _delegating_mount() -> Tuple[Optional[str], str]:
    """The cgroup2 mount to delegate from, or why there is none."""
    if os.geteuid() != 0:
        return None, "building a delegated subtree needs root"
    found = probe_cgroups()
    if found.kind != "unified":
        return None, f"this host's cgroups are not v2 only ({found.describe()})"
    for m in _fs.cgroup_mounts():
        if m.fstype == "cgroup2" and m.root == "/" and not m.read_only:
            enabled = _fs.read(os.path.join(m.path, "cgroup.subtree_control")).split()
            missing = [c for c in ("memory", "pids", "cpu") if c not in enabled]
            if not missing:
                return m.path, ""
            return None, f"the cgroup2 root does not enable {', '.join(missing)} for its children"
    return None, "no writable cgroup2 mount shows the whole hierarchy"


@pytest.fixture(scope="module")
def v2_mount() -> str:
    mount, why = _delegating_mount()
    if mount is None:
        if CGROUP2:
            pytest.fail(f"PYTEST_ISOLATE_CGROUP2=1 but: {why}")
        pytest.skip(f"{why} (CI runs these in its cgroup v2 VM)")
    return mount


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory uid 65534 owns (with a $HOME), after checking that it can
    run this interpreter."""
    setpriv = shutil.which("setpriv")
    skip_unless(setpriv is not None, "setpriv (util-linux) is not installed")
    check = subprocess.run([str(setpriv), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            sys.executable, "-c", "import isolate_runtime, psutil, pytest"],
                           capture_output=True, text=True, timeout=120)
    skip_unless(check.returncode == 0, f"this interpreter is not usable by uid {NOBODY} (install it in a venv "
                                       f"outside /root): {check.stderr[-200:]}")
    # not under /tmp (a sandbox's /tmp is private), nor in the checkout (the
    # cgroup v2 VM shares it with the host, which shows it as the host's user's)
    d = Path("/var/tmp") / f"pytest-isolate-delegation-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    (d / "home").mkdir(parents=True)
    for p in (d, d / "home"):
        os.chown(p, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _slice(mount: str) -> str:
    return os.path.join(mount, f"pytest-isolate-delegation-{os.getpid()}.slice")


def _as_nobody_in(cgroup: str, argv: Sequence[str], env: Dict[str, str], cwd: Path,
                  timeout: float) -> "subprocess.CompletedProcess[str]":
    """Run ``argv`` as uid 65534 in ``cgroup``, moved there by root first (as
    systemd starts a unit's process in its cgroup)."""
    shim = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    return subprocess.run(["sh", "-c", shim, cgroup, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", "--inh-caps=-all", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _tail(out: "subprocess.CompletedProcess[str]") -> str:
    return out.stdout[-6000:] + out.stderr[-3000:]


# ------------------------------------------------------- the cgroup tests, as nobody

@pytest.mark.parametrize("controllers, files, ran", [
    # systemd >= 252 delegates pids, memory and cpu to user@.service
    (("memory", "pids", "cpu"), ("tests/runtime/test_cgroups.py",),
     ["test_cgroups.py::test_cpu_bandwidth_cap_throttles PASSED"]),
    # before 252 only pids and memory: the cap degrades, with a note
    (("memory", "pids"), ("tests/runtime/test_cgroups.py",),
     ["test_cgroups.py::test_cpu_bandwidth_cap_throttles SKIPPED",
      "test_cgroups.py::test_without_the_cpu_controller_a_cpu_cap_is_not_applied_and_says_why PASSED"]),
], ids=["memory-pids-cpu", "memory-pids"])
def test_cgroup_tests_pass_for_an_ordinary_user_in_a_delegated_subtree(
        v2_mount: str, work: Path, controllers: Tuple[str, ...], files: Tuple[str, ...], ran: List[str]) -> None:
    top = _slice(v2_mount)
    scope = delegate_subtree(v2_mount, f"{os.path.basename(top)}/user.scope", NOBODY, controllers)
    withheld = [c for c in ("cpu",) if c not in controllers]
    env = dict(os.environ, HOME=str(work / "home"), PYTEST_ADDOPTS="",
               PYTEST_ISOLATE_WITHHELD_CONTROLLERS=",".join(withheld))
    try:
        out = _as_nobody_in(scope, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "cgroup", "-v",
                                    f"--basetemp={work / 'bt'}", *files], env, PROJECT, timeout=1200)
    finally:
        remove_subtree(top)
    assert out.returncode == 0, _tail(out)
    assert " passed" in out.stdout and " failed" not in out.stdout, _tail(out)
    for line in ["test_cgroups.py::test_oom_is_recorded_in_the_sandbox_own_cgroup PASSED",
                 "test_cgroups.py::test_pids_limit_contains_a_fork_bomb PASSED", *ran]:
        assert line in out.stdout, _tail(out)
