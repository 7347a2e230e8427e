"""Hostile tests exhaust memory, pids and /tmp, and try to lift or rewrite cgroup limits."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from .harness import Hostile, no_tagged_processes

pytestmark = pytest.mark.cgroup

MEMORY = """
    import pytest
    import hostile as h

    @pytest.mark.isolated(memory="100M")
    def test_eat_memory():
        hog = []
        for _ in range(100):  # 1 GiB, every page touched
            hog.append(bytearray(10 << 20))
        h.record("ate", len(hog) * 10)
"""


def test_memory_hog_is_killed_and_the_session_goes_on(hostile: Hostile, cgroups: None) -> None:
    hostile.write(MEMORY)
    inner = hostile.run(timeout=60)
    inner.assert_healthy({"test_eat_memory": "OOM", "test_zz_canary_after_the_hostile_test": "passed"})
    assert hostile.evidence("ate") is None


RAISE_OWN = """
    import glob, os
    import pytest
    import hostile as h

    def own_cgroups():
        # the sandbox's own cgroups (and their parents up to pytest-isolate's top), found by membership
        mine = set()
        for procs in glob.glob("/sys/fs/cgroup/*/pytest-isolate/run-*/sb-*/cgroup.procs") + glob.glob(
                "/sys/fs/cgroup/pytest-isolate/run-*/sb-*/cgroup.procs"):
            try:
                if str(os.getpid()) in open(procs).read().split():
                    d = os.path.dirname(procs)
                    mine.update({d, os.path.dirname(d), os.path.dirname(os.path.dirname(d))})
            except OSError:
                pass
        return sorted(mine)

    @pytest.mark.isolated(memory="64M", pids=64)
    def test_lift_my_own_limits():
        # Only ever inside a PID namespace: on the host these writes would
        # change other cgroups' limits.
        if os.getpid() < 64:
            mine = own_cgroups()
            h.record("own-cgroups", mine)
            h.record("cgroupfs", sorted(os.listdir("/sys/fs/cgroup")))
            for d in mine:
                for name, value in (("memory.limit_in_bytes", "-1"), ("memory.memsw.limit_in_bytes", "-1"),
                                    ("memory.max", "max"), ("memory.swap.max", "max"), ("pids.max", "max")):
                    if os.path.exists(os.path.join(d, name)):
                        h.attempt("write-" + name, lambda: open(os.path.join(d, name), "w").write(value))
                h.attempt("leave", lambda: open(os.path.dirname(d) + "/cgroup.procs", "w").write("0"))
            h.attempt("remount-sys-rw", h.mount, "none", "/sys", None, 32 | 4096)
            os.makedirs("/var/tmp/cg-" + h.TAG, exist_ok=True)
            for fs, opts in (("cgroup2", None), ("cgroup", "memory"), ("cgroup", "pids")):
                got = h.attempt("mount-" + fs + (opts or ""), h.mount, "none", "/var/tmp/cg-" + h.TAG, fs, 0, opts)
                if got == "ok":
                    for f in ("memory.max", "memory.limit_in_bytes", "pids.max"):
                        h.attempt("fresh-" + f, lambda: open("/var/tmp/cg-" + h.TAG + "/" + f, "w").write("max"))
                    h.attempt("join-root", lambda: open("/var/tmp/cg-" + h.TAG + "/cgroup.procs", "w").write("0"))
                    h.umount("/var/tmp/cg-" + h.TAG, 2)
        else:
            h.record("own-cgroups", "not run: no PID namespace")
        hog = [bytearray(10 << 20) for _ in range(40)]  # 400 MiB
        h.record("ate", len(hog) * 10)
"""


def test_a_test_cannot_lift_its_own_limits(hostile: Hostile, cgroups: None) -> None:
    jail = Path(f"/var/tmp/cg-{hostile.tag}")
    hostile.on_cleanup(lambda: jail.rmdir() if jail.is_dir() else None)
    hostile.write(RAISE_OWN)
    inner = hostile.run(timeout=60)
    assert hostile.evidence("ate") is None, f"the test lifted its memory limit: {hostile.all_evidence()}"
    # Either it found its own cgroup and could not lift its limits, or the
    # host's cgroup tree is not even in view (an empty /sys/fs/cgroup).
    assert hostile.evidence("own-cgroups") or hostile.evidence("cgroupfs") == [], hostile.all_evidence()
    inner.assert_healthy({"test_lift_my_own_limits": "OOM", "test_zz_canary_after_the_hostile_test": "passed"})


OTHER_CGROUP = """
    import os
    import hostile as h

    def test_rewrite_another_cgroup():
        target = h.env("CGROUP")
        h.attempt("pids.max", lambda: open(target + "/pids.max", "w").write("max"))
        h.attempt("join", lambda: open(target + "/cgroup.procs", "w").write(str(os.getpid())))
        h.attempt("mkdir", os.mkdir, target + "/child")
        h.attempt("rmdir", os.rmdir, target)
"""


@pytest.fixture
def sacrificial_cgroup(hostile: Hostile) -> Iterator[Path]:
    """A host cgroup of ours (pids controller) with pids.max=100."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (base / "cgroup.procs").exists() and os.access(base, os.W_OK) and (
                (base / "cgroup.controllers").exists() or base.name == "pids"):
            break
    else:
        pytest.skip("no writable pids hierarchy")
    d = base / f"containment-target-{hostile.tag}"
    d.mkdir()
    try:
        if not (d / "pids.max").exists():
            pytest.skip("the pids controller is not enabled for new cgroups here")
        (d / "pids.max").write_text("100")
        yield d
    finally:
        for pid in (d / "cgroup.procs").read_text().split() if d.exists() else []:
            (base / "cgroup.procs").write_text(pid)  # an escaped process goes back to the root
        if (d / "child").exists():
            (d / "child").rmdir()
        if d.exists():
            d.rmdir()


def test_another_cgroup_cannot_be_changed_or_joined(hostile: Hostile, cgroups: None, sacrificial_cgroup: Path) -> None:
    hostile.write(OTHER_CGROUP)
    inner = hostile.run(env={"CONTAINMENT_CGROUP": str(sacrificial_cgroup)}, timeout=60)
    assert sacrificial_cgroup.exists(), "the host cgroup was removed"
    state = ((sacrificial_cgroup / "pids.max").read_text().strip(), (sacrificial_cgroup / "cgroup.procs").read_text(),
             (sacrificial_cgroup / "child").exists())
    assert state == ("100", "", False), f"the host cgroup was changed: {state}; {hostile.all_evidence()}"
    inner.assert_healthy({"test_rewrite_another_cgroup": "passed", "test_zz_canary_after_the_hostile_test": "passed"})


PIDS = """
    import os, subprocess, sys, threading, time
    import pytest
    import hostile as h

    @pytest.mark.isolated(pids=32)
    def test_fork_bomb():
        children = []
        for _ in range(300):  # bounded: a real bomb would not stop
            try:
                children.append(subprocess.Popen(["sleep", "30", "leak-" + h.TAG]))
            except OSError as e:
                h.record("stopped-by", e.strerror)
                break
        h.record("forked", len(children))
        for c in children:  # the threads get the pids back
            c.kill()
            c.wait()
        threads = 0
        try:
            for _ in range(300):
                t = threading.Thread(target=time.sleep, args=(5,), daemon=True)
                t.start()
                threads += 1
        except RuntimeError as e:
            h.record("threads-stopped-by", str(e))
        h.record("threads", threads)
"""


def test_pid_exhaustion_stops_at_the_limit(hostile: Hostile, cgroups: None) -> None:
    hostile.write(PIDS)
    inner = hostile.run(timeout=60)
    forked, threads = hostile.evidence("forked"), hostile.evidence("threads")
    assert forked is not None and 0 < forked < 32, f"the fork bomb was not capped: {hostile.all_evidence()}"
    assert hostile.evidence("stopped-by") == "Resource temporarily unavailable", hostile.all_evidence()
    # threads take pids too (each is a task of the cgroup)
    assert threads is not None and 0 < threads < 32, f"the threads were not capped: {hostile.all_evidence()}"
    assert hostile.evidence("threads-stopped-by") == "can't start new thread", hostile.all_evidence()
    assert not no_tagged_processes(hostile.tag)
    inner.assert_healthy({"test_fork_bomb": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    # and the host can still start processes
    assert os.system("true") == 0


FILL = """
    import errno, os
    import pytest
    import hostile as h

    @pytest.mark.isolated(memory="200M")
    def test_fill_tmp_and_dev_shm():
        for where in ("/tmp", "/dev/shm"):
            chunk = b"x" * (16 << 20)
            written = 0
            try:
                with open(os.path.join(where, "fill-" + h.TAG), "wb") as f:
                    for _ in range(64):  # 1 GiB
                        f.write(chunk)
                        f.flush()
                        written += len(chunk)
                h.record(where.replace("/", "-"), "wrote 1 GiB")
            except OSError as e:
                h.record(where.replace("/", "-"), errno.errorcode.get(e.errno or 0, str(e)))
"""


def test_filling_tmp_and_dev_shm_costs_the_host_nothing(hostile: Hostile, cgroups: None) -> None:
    leftovers = [Path("/tmp") / f"fill-{hostile.tag}", Path("/dev/shm") / f"fill-{hostile.tag}"]
    for p in leftovers:
        hostile.on_cleanup(lambda p=p: p.unlink() if p.exists() else None)  # type: ignore[misc]
    free = {d: shutil.disk_usage(d).free for d in ("/tmp", "/dev/shm")}
    hostile.write(FILL)
    inner = hostile.run(timeout=90)
    assert not [str(p) for p in leftovers if p.exists()], "the fill files are on the host"
    for d, before in free.items():
        assert shutil.disk_usage(d).free > before - (256 << 20), f"host {d} lost space"
    assert hostile.evidence("-tmp") != "wrote 1 GiB", hostile.all_evidence()
    status = inner.status("test_fill_tmp_and_dev_shm")
    assert status in ("passed", "OOM"), inner.describe()
    inner.assert_healthy({"test_fill_tmp_and_dev_shm": status, "test_zz_canary_after_the_hostile_test": "passed"})


PIDS_LIFT = """
    import os, subprocess
    import pytest
    import hostile as h

    @pytest.mark.isolated(pids=16)
    def test_lift_my_pids_limit_through_a_fresh_cgroup_mount():
        # Inside its cgroup namespace a fresh v1 pids mount is rooted at the
        # sandbox's own cgroup, whose pids.max is then one write away.
        if os.getpid() < 64:  # only ever inside a PID namespace
            d = "/var/tmp/cg-" + h.TAG
            os.makedirs(d, exist_ok=True)
            if h.attempt("mount", h.mount, "none", d, "cgroup", 0, "pids") == "ok":
                h.attempt("pids.max", lambda: open(d + "/pids.max", "w").write("max"))
                h.umount(d, 2)
        children = []
        for _ in range(60):
            try:
                children.append(subprocess.Popen(["sleep", "30", "leak-" + h.TAG]))
            except OSError:
                break
        h.record("forked", len(children))
        for c in children:
            c.kill()
            c.wait()
"""


# Found by this test: as root, an isolated test mounted the v1 pids hierarchy in
# its cgroup namespace and wrote pids.max=max. A privileged caller's sandbox now
# gets a cgroup namespace owned by the host's user namespace, where it cannot mount.
def test_a_test_cannot_lift_its_pids_limit_via_a_cgroup_mount(hostile: Hostile, cgroups: None) -> None:
    jail = Path(f"/var/tmp/cg-{hostile.tag}")
    hostile.on_cleanup(lambda: jail.rmdir() if jail.is_dir() else None)
    hostile.write(PIDS_LIFT)
    inner = hostile.run(timeout=60)
    assert not no_tagged_processes(hostile.tag)
    forked = hostile.evidence("forked")
    assert forked is not None and forked < 16, f"the pids limit was lifted: {hostile.all_evidence()}"
    inner.assert_healthy({"test_lift_my_pids_limit_through_a_fresh_cgroup_mount": "passed",
                          "test_zz_canary_after_the_hostile_test": "passed"})
