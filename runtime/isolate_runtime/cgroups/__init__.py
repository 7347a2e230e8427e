"""cgroup backends: unified (v2), legacy/hybrid (v1 controllers), none.

The one ``if`` on the kind of hierarchy lives here: :func:`select_backend`
looks at the host once and returns a :class:`CgroupBackend`; everything
else talks to that object.  :func:`probe_cgroups` says what was chosen,
where sandboxes live, and, when there are no cgroups, why and how to fix it.

``ISOLATE_RUNTIME_CGROUPS=auto|unified|legacy|none`` (or ``force=``)
overrides the choice, e.g. to run the fallback with cgroups switched off.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import _fs
from .base import CgroupBackend, CgroupStats, SandboxCgroup
from .legacy import ROLES, LegacyBackend
from .none import NoCgroupBackend
from .unified import WANTED, UnifiedBackend, anchor_of

ENV = "ISOLATE_RUNTIME_CGROUPS"
MODES = ("auto", "unified", "legacy", "none")

FIX_NO_DELEGATION_V2 = ("run pytest in a delegated cgroup, e.g. `systemd-run --user --scope -p Delegate=yes "
                        "pytest ...`, or as root")
FIX_DELEGATE = ("this user's systemd answers at {socket} and can delegate one: run pytest with --isolate-delegate "
                "(or under `systemd-run --user --scope -p Delegate=yes`)")
FIX_NO_SYSTEMD = ("{why}: run pytest in a cgroup delegated to uid {uid} (a CI job or service with Delegate=yes, a "
                  "container with a private cgroup namespace), start a systemd user instance (a login session, or "
                  "`loginctl enable-linger`) and use --isolate-delegate, or run as root")
FIX_MORE_CONTROLLERS = ("have them delegated too: with systemd, a drop-in for user@.service (or the unit pytest runs "
                        "in) saying Delegate=cpu io memory pids, then `systemctl daemon-reload` and a new login")
#: What a sandbox loses without each controller.
WITHOUT = {"memory": "memory limits not applied, peak memory not measured",
           "cpu": "cpus= caps not applied, CPU time still measured",
           "pids": "pids limits not applied", "io": "block I/O not measured"}
FIX_V1_NOT_ROOT = ("cgroup v1 has no delegation: run as root, or boot with systemd.unified_cgroup_hierarchy=1 "
                   "(cgroup v2) and run in a delegated cgroup")
FIX_READ_ONLY = "mount the cgroup filesystem read-write (e.g. `docker run --cgroupns=private` with a writable cgroupfs)"
FIX_NOT_MOUNTED = "mount cgroup2 at /sys/fs/cgroup"


@dataclass(frozen=True)
class CgroupProbe:
    """What the host offers for per-sandbox cgroups (printed by the probe)."""

    #: ``"unified"``, ``"legacy"`` or ``"none"``.
    kind: str
    #: Controllers the sandboxes get (empty for ``none``).
    controllers: Tuple[str, ...]
    #: Where sandbox cgroups are created ("" for ``none``).
    location: str
    #: Why there are no cgroups, or which controllers are missing ("" when all is well).
    reason: str = ""
    #: What to do about ``reason``.
    fix: str = ""
    #: cgroup v2 whose directory this user may not write: a delegated cgroup
    #: (``isolate_runtime.cgroups.systemd.delegate_self``) would fix it.
    needs_delegation: bool = False

    @property
    def available(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        if not self.available:
            return f"none: {self.reason}" + (f". Fix: {self.fix}" if self.fix else "")
        text = f"{self.kind}: {','.join(self.controllers)} in {self.location}"
        if self.reason:
            text += f" ({self.reason}" + (f"; fix: {self.fix}" if self.fix else "") + ")"
        return text


@dataclass(frozen=True)
class _Choice:
    probe: CgroupProbe
    backend: CgroupBackend


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK)


def _detect_unified(mount: _fs.Mount, proc_root: str) -> _Choice:
    own = _fs.own_cgroups(proc_root).get("")
    if own is None:
        return _none("this process has no cgroup v2 entry in /proc/self/cgroup", FIX_NOT_MOUNTED)
    if mount.read_only:
        return _none(f"the cgroup2 filesystem at {mount.path} is mounted read-only", FIX_READ_ONLY)
    anchor = anchor_of(mount.path, own)
    if not (_writable(anchor) and _writable(os.path.join(anchor, "cgroup.subtree_control"))):
        reason = f"no write access to this process's cgroup {anchor} for uid {os.geteuid()} (not delegated)"
        return _Choice(CgroupProbe("none", (), "", reason, _fix_no_delegation(), needs_delegation=True),
                       NoCgroupBackend(reason, FIX_NO_DELEGATION_V2))
    try:
        avail = _fs.read(os.path.join(anchor, "cgroup.controllers")).split()
    except OSError as e:
        return _none(f"cannot read {anchor}/cgroup.controllers: {e.strerror}", FIX_NO_DELEGATION_V2)
    ctrls = tuple(c for c in WANTED if c in avail)
    missing = [c for c in WANTED if c not in avail]
    reason = fix = ""
    if missing:
        reason = "controllers not delegated here: " + ", ".join(f"{c} ({WITHOUT[c]})" for c in missing)
        fix = FIX_MORE_CONTROLLERS
    backend = UnifiedBackend(mount.path, own, proc_root)
    return _Choice(CgroupProbe("unified", ctrls, backend.top, reason, fix), backend)


def _fix_no_delegation() -> str:
    """The fix that applies here: ask this user's systemd, if it answers."""
    from .systemd import manager_socket, unreachable

    socket = manager_socket()
    why = unreachable(socket)
    if why is None:
        return FIX_DELEGATE.format(socket=socket)
    return FIX_NO_SYSTEMD.format(why=why, uid=os.geteuid())


def _detect_legacy(v1: List[_fs.Mount], unified: Optional[_fs.Mount], proc_root: str) -> _Choice:
    mounts: Dict[str, str] = {}
    for m in v1:
        for c in m.controllers:
            if c in ROLES and not m.read_only and _writable(m.path):
                mounts.setdefault(c, m.path)
    if "memory" not in mounts:
        has_memory = any("memory" in m.controllers for m in v1)
        if not has_memory:
            return _none("cgroup v1 is mounted without the memory controller", FIX_NOT_MOUNTED)
        if os.geteuid() != 0:
            return _none(f"the cgroup v1 memory hierarchy is not writable by uid {os.geteuid()}", FIX_V1_NOT_ROOT)
        return _none("the cgroup v1 memory hierarchy is mounted read-only", FIX_READ_ONLY)
    uni = unified.path if unified is not None and not unified.read_only and _writable(unified.path) else None
    missing = [c for c in ROLES if c not in mounts and c != "freezer"]
    reason = f"no writable v1 hierarchy for: {', '.join(missing)}" if missing else ""
    backend = LegacyBackend(mounts, uni, proc_root)
    location = f"<mount>/{_fs.TOP} of each v1 hierarchy" + (" and of the cgroup2 mount" if uni else "")
    ctrls = tuple(c for c in ROLES if c in mounts)
    return _Choice(CgroupProbe("legacy", ctrls, location, reason), backend)


def _none(reason: str, fix: str = "") -> _Choice:
    return _Choice(CgroupProbe("none", (), "", reason, fix), NoCgroupBackend(reason, fix))


def detect(mode: str = "auto", proc_root: str = "/proc", platform: Optional[str] = None) -> _Choice:
    """Build a fresh backend for ``mode`` (no caching, no side effects on
    the host: directories are created on first :meth:`CgroupBackend.create`)."""
    platform = platform or sys.platform
    if mode not in MODES:
        return _none(f"{ENV}={mode!r} is not one of {', '.join(MODES)}", f"set {ENV} to one of {', '.join(MODES)}")
    if mode == "none":
        return _none(f"switched off ({ENV}=none or force='none')", f"unset {ENV}")
    if not platform.startswith("linux"):
        return _none(f"cgroups are a Linux feature, this is {platform}", "run on Linux for memory/CPU/pids limits")
    mounts = _fs.cgroup_mounts(proc_root)
    v1 = [m for m in mounts if m.fstype == "cgroup"]
    # Prefer the conventional mount point when cgroup2 is mounted more than once.
    v2 = sorted((m for m in mounts if m.fstype == "cgroup2"), key=lambda m: m.path != "/sys/fs/cgroup")
    v1_ctrls = {c for m in v1 for c in m.controllers}
    if mode == "unified" or (mode == "auto" and v2 and not v1_ctrls):
        if not v2:
            return _none("no cgroup2 filesystem is mounted", FIX_NOT_MOUNTED)
        return _detect_unified(v2[0], proc_root)
    if mode == "legacy" or (mode == "auto" and v1_ctrls):
        if not v1_ctrls:
            return _none("no cgroup v1 controller hierarchy is mounted", FIX_NOT_MOUNTED)
        return _detect_legacy(v1, v2[0] if v2 else None, proc_root)
    return _none("no cgroup filesystem is mounted", FIX_NOT_MOUNTED)


_selected: Dict[str, _Choice] = {}


def _choice(force: Optional[str]) -> _Choice:
    mode = force or os.environ.get(ENV, "auto") or "auto"
    got = _selected.get(mode)
    if got is None:
        got = _selected[mode] = detect(mode)
    return got


def select_backend(force: Optional[str] = None) -> CgroupBackend:
    """The backend for this host, chosen once per mode and cached."""
    return _choice(force).backend


def probe_cgroups(force: Optional[str] = None) -> CgroupProbe:
    """What :func:`select_backend` chose, and why (no side effects)."""
    return _choice(force).probe


def forget() -> None:
    """Choose again on next use: this process moved to another cgroup
    (e.g. into the scope :func:`systemd.delegate_self` obtained).  Only
    before any sandbox was created."""
    _selected.clear()


__all__ = [
    "CgroupBackend", "CgroupProbe", "CgroupStats", "LegacyBackend", "NoCgroupBackend", "SandboxCgroup",
    "UnifiedBackend", "detect", "forget", "probe_cgroups", "select_backend",
]
