"""The mount plan is data: checked here without a kernel."""
from __future__ import annotations

import os
import stat
from types import SimpleNamespace
from typing import Dict, List

from isolate_runtime.mounts import Op, build_plan, build_privileged_plan, parse_mountinfo

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
    assert not any(t.startswith(("/proc", "/sys", "/dev", "/tmp")) for t in ops)
    assert "/" not in plan.overlays, "an overlay with lowerdir=/ is refused in a user namespace"
    assert plan.writable == ("/srv/www",)
    assert "/home/u" in plan.overlays


def test_privileged_plan_is_one_overlay_plus_other_mounts() -> None:
    plan = build_privileged_plan(parse_mountinfo(MOUNTINFO), ["/srv/www"], isdir=lambda p: True)
    assert plan.prefix == "/newroot"
    assert [op.kind for op in plan.ops] == ["overlay", "bind", "overlay"]
    assert plan.overlays == ("/", "/srv/data")
