"""The mount plan is data: checked here without a kernel."""
from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

from isolate_runtime.calls import MKDIR, MOUNT, OVERLAY
from isolate_runtime.mounts import (
    Op,
    Plan,
    build_plan,
    build_privileged_plan,
    caller_mode,
    host_access,
    parse_mountinfo,
    root_calls,
    with_modes,
    with_scratch,
    with_views,
)

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
28 27 0:25 / /opt/ro\\040dir ro,nosuid - tmpfs t ro
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw
40 27 0:40 / /srv/data rw - xfs /dev/vdb rw
"""

TREE: Dict[str, List[str]] = {
    "/": ["bin", "etc", "opt", "proc", "srv", "sys", "dev", "tmp", "f.txt"],
    "/opt": ["ro dir", "tool"],
    "/srv": ["data", "www"],
}
KIND = {"/bin": "l", "/f.txt": "f"}


def _listdir(path: str) -> List[str]:
    return TREE[path]


def _lstat(path: str) -> SimpleNamespace:
    kind = KIND.get(path, "d")
    mode = {"d": stat.S_IFDIR, "f": stat.S_IFREG, "l": stat.S_IFLNK}[kind] | 0o755
    return SimpleNamespace(st_mode=mode, st_size=10)


def test_mountinfo_unescapes_and_reads_readonly() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    ro = [m for m in mounts if m.mount_point == "/opt/ro dir"][0]
    assert ro.readonly and ro.fstype == "tmpfs"


def test_unprivileged_plan_overlays_each_directory_without_mounts_below(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "readlink", lambda p: "usr/bin")
    plan = build_plan(parse_mountinfo(MOUNTINFO), ["/srv/www"], listdir=_listdir, lstat=_lstat,
                      own_roots=["/home/u"])
    ops = {op.target: op for op in plan.ops}
    assert ops["/etc"] == Op("overlay", "/etc", "/etc")
    assert ops["/opt"].kind == "mkdir" and ops["/opt/tool"].kind == "overlay"
    assert ops["/opt/ro dir"] == Op("bind", "/opt/ro dir", "/opt/ro dir", readonly=True)
    assert ops["/srv/data"].kind == "overlay" and ops["/srv/www"].kind == "overlay"
    assert ops["/f.txt"].kind == "copy" and ops["/bin"].kind == "symlink"
    assert not any(t.startswith(("/proc", "/sys", "/dev")) for t in ops)
    assert ops["/tmp"] == Op("overlay", "/tmp", "/tmp")
    assert "/" not in plan.overlays, "an overlay with lowerdir=/ is refused in a user namespace"
    assert plan.writable == ("/srv/www",)
    assert "/home/u" in plan.overlays


def test_privileged_plan_is_one_overlay_plus_other_mounts() -> None:
    plan = build_privileged_plan(parse_mountinfo(MOUNTINFO), ["/srv/www"], isdir=lambda p: True)
    assert plan.prefix == "/newroot"
    assert [(op.kind, op.target) for op in plan.ops] == [("overlay", "/"), ("overlay", "/tmp"),
                                                          ("bind", "/opt/ro dir"), ("overlay", "/srv/data")]
    assert plan.overlays == ("/", "/tmp", "/srv/data")


def _dir(uid: int, gid: int, mode: int) -> SimpleNamespace:
    return SimpleNamespace(st_uid=uid, st_gid=gid, st_mode=stat.S_IFDIR | mode)


def test_directories_made_for_the_caller_carry_its_host_permissions() -> None:
    # An overlay's root shows its upper directory's owner (the caller) and
    # mode: the owner bits must be what the caller may do on the host.
    assert caller_mode(_dir(0, 0, 0o755), 1000, 0o5) == 0o555
    assert caller_mode(_dir(0, 50, 0o1775), 1000, 0o7) == 0o1775  # e.g. a member of its group
    assert caller_mode(_dir(0, 0, 0o700), 1000, 0o0) == 0o000
    assert caller_mode(_dir(0, 0, 0o710), 1000, 0o1) == 0o110  # an ACL lets it search, nothing else
    assert caller_mode(_dir(1000, 0, 0o750), 1000, 0o7) == 0o750  # its owner
    assert caller_mode(_dir(1000, 0, 0o750), 0, 0o7) == 0o750  # root: the host's mode


def test_host_access_asks_the_kernel(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    assert host_access(str(tmp_path)) == 0o7
    assert host_access(str(tmp_path / "missing")) == 0


def test_plan_makes_root_recreated_dirs_and_upper_dirs_with_those_modes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "readlink", lambda p: "usr/bin")
    plan = build_plan(parse_mountinfo(MOUNTINFO), [], listdir=_listdir, lstat=_lstat, own_roots=["/home/u"])
    plan = with_views(plan, ["/tmp/checkout"])
    owners = {"/home/u": 1000, "/tmp/checkout": 0}
    plan = with_modes(plan, 1000, stat_=lambda p: _dir(owners.get(p, 0), 0, 0o755), access_=lambda p: 0o5)
    calls = root_calls(plan)
    tmpfs_root = [c for c in calls if c.code == MOUNT and c.args[0] == "isolate-root"]
    assert tmpfs_root and tmpfs_root[0].args[3] == "mode=0555"
    made = {c.args[0]: c.num for c in calls if c.code == MKDIR}
    assert made["/opt"] == 0o555 and made["/srv"] == 0o555  # recreated above a mount point
    uppers = {target: made[f"/.upper/u{i}"] for i, target in enumerate(plan.overlays)}
    assert uppers["/etc"] == 0o555 and uppers["/tmp/checkout"] == 0o555
    assert uppers["/home/u"] == 0o755


def test_overlays_get_xino_when_the_probe_found_it_accepted() -> None:
    plan = with_views(build_plan(parse_mountinfo(MOUNTINFO), listdir=_listdir, lstat=_lstat), ["/tmp/checkout"])
    for xino in (False, True):
        calls = root_calls(dataclasses.replace(plan, xino=xino))
        data = [c.args[1] for c in calls if c.code == OVERLAY] + [c.args[3] for c in calls
                                                                  if c.code == MOUNT and c.args[2] == "overlay"]
        assert len(data) == len(plan.overlays)
        assert all(d.endswith(",userxattr,xino=on") if xino else d.endswith(",userxattr") for d in data), data


def _scratch_plan(privileged: bool = False, shm: bool = True, mountinfo: str = MOUNTINFO) -> Plan:
    if privileged:
        plan = build_privileged_plan(parse_mountinfo(mountinfo),
                                     isdir=lambda p: p in TREE or (p == "/tmp" and "tmp" in TREE["/"]))
    else:
        plan = build_plan(parse_mountinfo(mountinfo), listdir=_listdir, lstat=_lstat)
    return with_scratch(with_views(plan, ["/tmp/checkout"], shm=shm))


def test_tmp_and_dev_shm_are_copy_on_write_on_a_tmpfs_of_their_own() -> None:
    for privileged in (False, True):
        plan = _scratch_plan(privileged)
        assert plan.scratch == ("/tmp", "/dev/shm") and plan.views == ("/dev/shm", "/tmp/checkout")
        assert "/tmp/checkout" in plan.reported and not set(plan.scratch) & set(plan.reported)
        calls = root_calls(plan)
        r = plan.prefix
        assert [c.args[1] for c in calls if c.code == MOUNT and c.args[0] == "isolate-scratch"] == ["/.upper/s"]
        mounted = {c.args[0]: c.args[1] for c in calls if c.code == OVERLAY}
        mounted.update({c.args[1]: c.args[3] for c in calls if c.code == MOUNT and c.args[2] == "overlay"})
        for i, target in enumerate(plan.overlays):
            base = "/.upper/s" if target in plan.scratch else "/.upper"
            assert f"upperdir={base}/u{i},workdir={base}/w{i}," in mounted[(r + target).rstrip("/") or "/"]
        assert mounted[r + "/dev/shm"].startswith("lowerdir=/.oldroot/dev/shm,")
        assert not [c for c in calls if c.code == MOUNT and c.args[0] in ("isolate-tmp", "isolate-shm")]


def test_a_host_without_tmp_or_dev_shm_gets_empty_ones() -> None:
    saved = TREE["/"]
    TREE["/"] = [name for name in saved if name != "tmp"]
    try:
        for privileged in (False, True):
            plan = _scratch_plan(privileged, shm=False)
            calls = root_calls(plan)
            tmpfs = {c.args[1]: c.args[0] for c in calls if c.code == MOUNT and c.args[2] == "tmpfs"}
            assert tmpfs[plan.prefix + "/tmp"] == "isolate-tmp" and tmpfs[plan.prefix + "/dev/shm"] == "isolate-shm"
            assert plan.scratch == ()
    finally:
        TREE["/"] = saved


def test_overlays_below_tmp_are_scratch_too() -> None:
    # a mount point below /tmp: /tmp is recreated, its children overlaid one by one
    mountinfo = MOUNTINFO + "50 27 0:50 / /tmp/mnt rw - tmpfs t rw\n"
    TREE["/tmp"] = ["mnt", "work"]
    try:
        plan = _scratch_plan(mountinfo=mountinfo)
    finally:
        del TREE["/tmp"]
    ops = {op.target: op.kind for op in plan.ops}
    assert ops["/tmp"] == "mkdir" and ops["/tmp/mnt"] == "overlay" and ops["/tmp/work"] == "overlay"
    assert set(plan.scratch) == {"/tmp/mnt", "/tmp/work", "/dev/shm"}
