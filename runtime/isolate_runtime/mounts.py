"""The sandbox's filesystem view: a mount plan built as data, applied in one place.

The host tree is seen through copy-on-write overlays whose upper layers live
in a tmpfs (charged to the sandbox's memory cgroup).  Inside a user namespace
the kernel refuses an overlay whose lower layer has *locked* submounts (an
overlay with ``lowerdir=/`` fails with "failed to clone lowerpath"), so the
plan overlays every directory that has no mount point below it, and recreates
the directories above mount points as plain directories of the new root
(bubblewrap's model, overlay per directory).  Fresh ``/proc`` (mounted by the
sandbox's PID 1, from inside its PID namespace), a minimal ``/dev`` with a new
devpts instance, ``/sys`` read-only, and read-write pass-through binds for the
paths the spec names.  ``/tmp`` and ``/dev/shm`` are copy-on-write like the
rest (what a session fixture put there is visible), but their upper layers
live on a tmpfs of their own and what is written there is not listed: temporary
files are expected to vanish.

Layout while building (in the child's private mount namespace)::

    /              tmpfs: the new root (was mounted on /tmp, then pivoted)
    /.oldroot      the host's tree (detached at the end)
    /.upper        tmpfs with overlay upper/work dirs (detached at the end;
                   an open fd keeps it readable to list what was written)
    /.upper/s      tmpfs with the upper/work dirs of /tmp and /dev/shm (its
                   own filesystem: writes there leave /.upper's counts alone)
"""
from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _syscalls as sc
from .calls import (
    BIND,
    CHDIR,
    COPY,
    IF_EXISTS,
    MKDIR,
    MKDIRS,
    MOUNT,
    OPEN_UPPER,
    OVERLAY,
    PIVOT,
    REMOUNT_RO,
    RMDIR,
    SETATTR_RO,
    SYMLINK,
    TOUCH,
    UMOUNT,
    Call,
)

OLDROOT = "/.oldroot"
UPPER = "/.upper"
SCRATCH_UPPER = UPPER + "/s"
NEWROOT = "/newroot"

#: Filesystems that are recreated or hidden rather than overlaid.
VIRTUAL_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "fusectl", "configfs", "binfmt_misc", "hugetlbfs", "autofs",
    "efivarfs", "selinuxfs", "rpc_pipefs", "nsfs",
})
#: Top-level trees the plan provides itself.
FIXED = ("/proc", "/sys", "/dev")
#: Places for temporary files: copy-on-write like the rest, but what is
#: written there is not listed among the discarded writes.
SCRATCH = ("/tmp", "/dev/shm")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
#: Files copied into the new root instead of overlaid (their directory has a
#: mount point below it) up to this size; larger ones are bound read-only.
COPY_LIMIT = 1 << 20


@dataclass(frozen=True)
class HostMount:
    mount_point: str
    fstype: str
    readonly: bool


@dataclass(frozen=True)
class Op:
    """One step of the plan.  ``target`` is a path in the new root."""

    kind: str  # mkdir | symlink | copy | overlay | bind | tmpfs
    target: str
    source: str = ""  # host path (read through OLDROOT) or symlink text
    readonly: bool = False


@dataclass(frozen=True)
class Plan:
    ops: Tuple[Op, ...]
    #: target -> index of its overlay upper dir (for listing written paths)
    overlays: Tuple[str, ...] = ()
    writable: Tuple[str, ...] = ()
    #: Where the new root is built: ``""`` (the staging tmpfs itself, for a
    #: caller without privileges) or ``NEWROOT`` (one overlay of the whole root
    #: filesystem, mounted by a privileged caller before it enters the user
    #: namespace, where no mount is locked yet).
    prefix: str = ""
    #: Copy-on-write overlays mounted once /dev, /sys and /tmp are in place:
    #: ``/dev/shm``, and paths below a scratch place whose writes are listed
    #: (the working directory: see :func:`with_views`).  Their upper layers
    #: follow the plan's other overlays in ``overlays``.
    views: Tuple[str, ...] = ()
    #: The overlays below a scratch place (and not views): their upper
    #: layers are on the scratch tmpfs, and nothing written there is listed.
    scratch: Tuple[str, ...] = ()
    #: (target, mode) of the directories the sandbox makes in place of host
    #: ones: the new root, the recreated directories and each overlay's upper
    #: directory (see :func:`with_modes`).
    modes: Tuple[Tuple[str, int], ...] = ()
    #: Mount the overlays with ``xino=on`` (the probe found the kernel
    #: accepts it): their upper layers are on a tmpfs and the lower ones on
    #: the host's filesystems, and without it a file shows the device number
    #: of the layer it came from instead of its directory's.
    xino: bool = False

    def mode_of(self, target: str, default: int = 0o777) -> int:
        for path, mode in self.modes:
            if path == target:
                return mode
        return default

    @property
    def reported(self) -> Tuple[str, ...]:
        """The overlays whose writes are listed as discarded."""
        return tuple(o for o in self.overlays if o not in self.scratch)


def parse_mountinfo(text: str) -> List[HostMount]:
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if " - " not in line or len(parts) < 10:
            continue
        sep = parts.index("-")
        mount_point = _unescape(parts[4])
        fstype = parts[sep + 1]
        opts = parts[5].split(",")
        mounts.append(HostMount(mount_point, fstype, "ro" in opts))
    return mounts


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def build_plan(mounts: Sequence[HostMount], writable: Sequence[str] = (),
               listdir: Callable[[str], List[str]] = os.listdir, lstat: Callable[[str], Any] = os.lstat,
               own_roots: Sequence[str] = ()) -> Plan:
    """Compute the mount plan from the host's mount table (no kernel needed:
    ``listdir``/``lstat`` are injectable for tests).

    ``own_roots`` are directories the caller owns (its $HOME, its working
    directory) that get an overlay of their own on top: with a single-id map
    an overlay cannot copy up a directory owned by an unmapped user (EOVERFLOW),
    so a file created in ``~/x`` would fail when ``/home`` is the overlay's
    root; with ``~`` as an overlay root nothing above it needs copying."""
    by_point: Dict[str, HostMount] = {}
    for m in mounts:
        by_point[m.mount_point] = m  # later entries over-mount earlier ones
    points = sorted(by_point)
    ops: List[Op] = []
    overlays: List[str] = []

    def has_mount_below(path: str) -> bool:
        prefix = path.rstrip("/") + "/"
        return any(p.startswith(prefix) for p in points)

    def mount_of(path: str) -> HostMount:
        best = by_point.get("/", HostMount("/", "unknown", False))
        for p in points:
            if _under(path, p) and len(p) >= len(best.mount_point):
                best = by_point[p]
        return best

    def visit_dir(path: str) -> None:
        m = mount_of(path)
        if m.fstype in VIRTUAL_FS:
            ops.append(Op("mkdir", path))
            return
        if path != "/" and not has_mount_below(path):
            if m.readonly:
                ops.append(Op("bind", path, path, readonly=True))
            else:
                ops.append(Op("overlay", path, path))
                overlays.append(path)
            return
        if path != "/":
            ops.append(Op("mkdir", path))
        try:
            names = sorted(listdir(path))
        except OSError:
            return
        for name in names:
            child = os.path.join(path, name)
            if any(_under(child, f) for f in FIXED):
                continue
            try:
                st = lstat(child)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                ops.append(Op("symlink", child, os.readlink(child) if listdir is os.listdir else ""))
            elif stat.S_ISDIR(st.st_mode):
                visit_dir(child)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size <= COPY_LIMIT and not mount_of(child).readonly:
                    ops.append(Op("copy", child, child))
                else:
                    ops.append(Op("bind", child, child, readonly=True))
            # sockets, fifos and device nodes outside /dev are left out

    visit_dir("/")
    if not any(_under(op.target, "/tmp") for op in ops):
        ops.append(Op("tmpfs", "/tmp"))  # the host has none
    for path in sorted(set(own_roots), key=lambda p: (p.count("/"), p)):
        # (one below a scratch place is a view: see with_views)
        if path in overlays or any(_under(path, f) for f in FIXED + SCRATCH) or has_mount_below(path):
            continue
        if any(_under(path, w) for w in writable) or mount_of(path).readonly:
            continue
        ops.append(Op("overlay", path, path))
        overlays.append(path)
    return Plan(tuple(ops), tuple(overlays), tuple(sorted(set(writable), key=lambda p: (p.count("/"), p))))


def build_privileged_plan(mounts: Sequence[HostMount], writable: Sequence[str] = (),
                          isdir: Callable[[str], bool] = os.path.isdir) -> Plan:
    """The plan for a caller that may mount before entering the user
    namespace: one overlay for the root filesystem, one per other writable
    mount (read-only mounts are bound), files bound over files copied in."""
    by_point: Dict[str, HostMount] = {m.mount_point: m for m in mounts}
    ops: List[Op] = [Op("overlay", "/", "/")]
    overlays: List[str] = ["/"]
    # /tmp gets an overlay of its own even on the root filesystem: its writes
    # go to the scratch tmpfs
    points = set(by_point) | {"/tmp"}
    for point in sorted(points, key=lambda p: (p.count("/"), p)):
        m = by_point.get(point) or HostMount(point, "", False)
        if point == "/" or m.fstype in VIRTUAL_FS or any(_under(point, f) for f in FIXED):
            continue
        if point == "/tmp" and not isdir(point):
            ops.append(Op("tmpfs", point))  # the host has none
        elif not isdir(point):
            ops.append(Op("copy", point, point))
        elif m.readonly:
            ops.append(Op("bind", point, point, readonly=True))
        else:
            ops.append(Op("overlay", point, point))
            overlays.append(point)
    return Plan(tuple(ops), tuple(overlays), tuple(sorted(set(writable), key=lambda p: (p.count("/"), p))), NEWROOT)


def host_plan(writable: Sequence[str] = (), own_roots: Sequence[str] = (), privileged: bool = False,
              visible: Sequence[str] = (), xino: bool = False) -> Plan:
    with open("/proc/self/mountinfo") as f:
        host = parse_mountinfo(f.read())
    if privileged:
        plan = build_privileged_plan(host, writable)
    else:
        plan = build_plan(host, writable, own_roots=own_roots)
    plan = with_scratch(with_views(plan, visible, shm=os.path.isdir("/dev/shm")))
    return dataclasses.replace(with_modes(plan, os.geteuid()), xino=xino)


def caller_mode(st: Any, uid: int, access: int) -> int:
    """The mode for a directory the sandbox makes in place of a host
    directory with stat ``st``, for a caller ``uid`` that has the ``access``
    bits (rwx, see :func:`host_access`) on it.

    Such a directory (an overlay's root shows its *upper* directory's owner
    and mode, not the host directory's; a directory recreated above a mount
    point; the new root) belongs to the caller: an unprivileged caller cannot
    give it to an id outside its one-id map.  So its owner bits get the
    permissions the caller has on the host directory; otherwise the caller
    could create files in ``/``, ``/etc``, ``/usr`` or a checkout under
    ``/tmp`` that it may not write on the host.  Root, which may write
    anywhere on the host, and the directory's owner get the host's mode."""
    mode = stat.S_IMODE(st.st_mode)
    if uid == 0 or st.st_uid == uid:
        return mode
    return (mode & ~0o700) | ((access & 0o7) << 6)


def host_access(path: str) -> int:
    """The rwx bits this process has on ``path``, as the kernel decides them
    (owner, groups, ACLs: a directory may be searchable for one user only)."""
    eff = os.access in os.supports_effective_ids
    return sum(bit for flag, bit in ((os.R_OK, 4), (os.W_OK, 2), (os.X_OK, 1))
               if os.access(path, flag, effective_ids=eff))


def with_modes(plan: Plan, uid: int, stat_: Callable[[str], Any] = os.stat,
               access_: Callable[[str], int] = host_access) -> Plan:
    """``plan`` with the mode of every directory it makes in place of a host
    directory (see :func:`caller_mode`)."""
    targets = ["/"] + [op.target for op in plan.ops if op.kind == "mkdir"] + list(plan.overlays)
    modes = []
    for path in dict.fromkeys(targets):
        try:
            modes.append((path, caller_mode(stat_(path), uid, access_(path))))
        except OSError:
            continue  # an overlay of it fails and says why
    return dataclasses.replace(plan, modes=tuple(modes))


def with_views(plan: Plan, visible: Sequence[str], shm: bool = True) -> Plan:
    """Add ``/dev/shm`` (with ``shm``: the host has one) and copy-on-write
    views of the ``visible`` paths that lie below a scratch place (and not
    below a writable pass-through, which shows them as they are): what the
    test writes in a checkout below /tmp is then listed, as it would be
    anywhere else."""
    views: List[str] = ["/dev/shm"] if shm else []
    for path in sorted(set(visible), key=lambda p: (p.count("/"), p)):
        if path in SCRATCH or path in plan.overlays or not any(_under(path, top) for top in SCRATCH):
            continue
        if any(_under(path, w) for w in plan.writable) or any(_under(path, v) for v in views if v not in SCRATCH):
            continue
        views.append(path)
    if not views:
        return plan
    return dataclasses.replace(plan, overlays=plan.overlays + tuple(views), views=tuple(views))


def with_scratch(plan: Plan) -> Plan:
    """``plan`` with the overlays below a scratch place that are not views
    marked as :attr:`Plan.scratch`."""
    scratch = tuple(o for o in plan.overlays
                    if any(_under(o, top) for top in SCRATCH) and (o in SCRATCH or o not in plan.views))
    return dataclasses.replace(plan, scratch=scratch)


def own_roots_for(uid: int, candidates: Iterable[str]) -> Tuple[str, ...]:
    """The candidates that are directories owned by ``uid`` (see build_plan)."""
    if uid == 0:
        return ()  # root's single map covers root-owned ancestors
    out = []
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            out.append(os.path.normpath(path))
    return tuple(out)


def _escape_opt(path: str) -> str:
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _overlay_data(plan: Plan, lower: str, upper: str, work: str) -> str:
    data = f"lowerdir={_escape_opt(lower)},upperdir={upper},workdir={work},userxattr"
    return data + ",xino=on" if plan.xino else data


def _layer_dirs(plan: Plan, i: int) -> Tuple[str, str]:
    """The upper and work directories of ``plan.overlays[i]``."""
    base = SCRATCH_UPPER if plan.overlays[i] in plan.scratch else UPPER
    return f"{base}/u{i}", f"{base}/w{i}"


# ------------------------------------------------------------------ kernel calls
#
# The plan is compiled into kernel calls (see calls.py); program.py puts them
# in order around the processes that run them.

#: The setup step the root filesystem's calls are reported under.
STEP = "root filesystem"
_ROOT = STEP


def _m(target: str, fstype: str, flags: int = 0, data: str = "", source: str = "", step: str = _ROOT) -> Call:
    return Call(MOUNT, step, (source, target, fstype, data), flags)


def stage_calls(plan: Optional[Plan] = None) -> List[Call]:
    """Private propagation, a tmpfs as the new root, the host at OLDROOT, the
    upper-layer tmpfs at UPPER (and, when the plan has scratch overlays, the
    scratch tmpfs at SCRATCH_UPPER)."""
    # the tmpfs is the sandbox's / unless the plan builds the root below it
    mode = plan.mode_of("/", 0o755) if plan is not None and not plan.prefix else 0o755
    out = [
        _m("/", "", sc.MS_REC | sc.MS_PRIVATE),
        _m("/tmp", "tmpfs", sc.MS_NOSUID, f"mode={mode:04o}", "isolate-root"),
        Call(MKDIR, _ROOT, ("/tmp" + OLDROOT,), 0o777),
        Call(PIVOT, _ROOT, ("/tmp", "/tmp" + OLDROOT)),
        Call(CHDIR, _ROOT, ("/",)),
        Call(MKDIR, _ROOT, (UPPER,), 0o777),
        _m(UPPER, "tmpfs", sc.MS_NOSUID, "mode=0700", "isolate-upper"),
    ]
    if plan is not None and plan.scratch:
        out += [Call(MKDIR, _ROOT, (SCRATCH_UPPER,), 0o700),
                _m(SCRATCH_UPPER, "tmpfs", sc.MS_NOSUID, "mode=0700", "isolate-scratch")]
    return out


def plan_calls(plan: Plan) -> List[Call]:
    """The plan's own operations below the staged root."""
    out: List[Call] = []
    n = 0
    for op in plan.ops:
        t = (plan.prefix + op.target).rstrip("/") or "/"
        src = (OLDROOT + op.source).rstrip("/")
        if op.kind == "mkdir":
            # (its parent is made before it: the ops go top down)
            out.append(Call(MKDIR, _ROOT, (t,), plan.mode_of(op.target)))
        elif op.kind == "symlink":
            out.append(Call(SYMLINK, _ROOT, (op.source, t, OLDROOT + t)))
        elif op.kind == "copy":
            out.append(Call(COPY, _ROOT, (src, t)))
        elif op.kind == "overlay":
            up, work = _layer_dirs(plan, n)
            n += 1
            out += [Call(MKDIRS, _ROOT, (t,)), Call(MKDIR, _ROOT, (up,), plan.mode_of(op.target)),
                    Call(MKDIR, _ROOT, (work,), 0o777),
                    Call(OVERLAY, _ROOT, (t, _overlay_data(plan, src, up, work), src))]
        elif op.kind == "bind":
            out.append(Call(BIND, _ROOT, (src, t)))
            if op.readonly:
                out.append(Call(REMOUNT_RO, _ROOT, (t,)))
        elif op.kind == "tmpfs":
            out += [Call(MKDIRS, _ROOT, (t,)), _m(t, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777", "isolate-tmp")]
    return out


def fixed_calls(plan: Plan) -> List[Call]:
    """``/dev``, ``/sys``, the ``/proc`` mount point, the views (``/dev/shm``
    among them), then the writable pass-throughs (they may lie below any of
    these)."""
    r = plan.prefix
    dev = r + "/dev"
    out = [Call(MKDIRS, _ROOT, (r + "/proc",)), Call(MKDIRS, _ROOT, (dev,)),
           _m(dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=0755", "isolate-dev")]
    for name in DEV_NODES:
        node = f"{dev}/{name}"
        out += [Call(TOUCH, _ROOT, (node,)), _m(node, "", sc.MS_BIND, "", f"{OLDROOT}/dev/{name}")]
    for link, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                     ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")):
        out.append(Call(SYMLINK, _ROOT, (to, f"{dev}/{link}", "")))
    out += [
        Call(MKDIR, _ROOT, (dev + "/pts",), 0o777),
        _m(dev + "/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620", "devpts"),
        Call(MKDIR, _ROOT, (dev + "/shm",), 0o777),
    ]
    if "/dev/shm" not in plan.views:  # the host has none: an empty one
        out.append(_m(dev + "/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777", "isolate-shm"))
    out += [
        Call(MKDIRS, _ROOT, (r + "/sys",)),
        _m(r + "/sys", "", sc.MS_BIND | sc.MS_REC, "", OLDROOT + "/sys"),
        Call(SETATTR_RO, _ROOT, (r + "/sys",)),
        # The host's cgroup tree (names with pytest's pid, other runs'
        # sandboxes) is none of the sandbox's business: an empty cover.
        Call(IF_EXISTS, _ROOT, (r + "/sys/fs/cgroup",), 1),
        _m(r + "/sys/fs/cgroup", "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=0555",
           "isolate-cgroup"),
    ]
    for view in plan.views:
        up, work = _layer_dirs(plan, plan.overlays.index(view))
        # (/dev/shm keeps the flags of the tmpfs it stands for)
        flags = sc.MS_NOSUID | sc.MS_NODEV if view == "/dev/shm" else 0
        out += [Call(MKDIR, _ROOT, (up,), plan.mode_of(view)), Call(MKDIR, _ROOT, (work,), 0o777),
                Call(MKDIRS, _ROOT, (r + view,)),
                _m(r + view, "overlay", flags, _overlay_data(plan, OLDROOT + view, up, work), "isolate-overlay")]
    for path in plan.writable:
        out.append(Call(BIND, _ROOT, (OLDROOT + path, r + path)))
    return out


def root_calls(plan: Plan) -> List[Call]:
    """Everything that builds the new root before the sandbox's PID 1 exists."""
    return stage_calls(plan) + plan_calls(plan) + fixed_calls(plan)


#: Parts of a fresh /proc that still reach host-global kernel state, made
#: read-only as bubblewrap does: /proc/sys checks the file's uid, not a
#: capability, so a sandbox whose root is the host's uid 0 could otherwise
#: change global sysctls; sysrq-trigger needs no capability at all.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")


def proc_calls(plan: Plan) -> List[Call]:
    """From inside the new PID namespace, while the host's /proc is still
    visible (the kernel refuses a new procfs in a user namespace otherwise)."""
    proc = plan.prefix + "/proc"
    return [_m(proc, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "", "proc", step="proc")] + _proc_covers(proc)


def host_proc_calls(plan: Plan) -> List[Call]:
    """Without a PID namespace: the host's /proc, bound, with the same
    read-only covers (a root caller's payload is the host's uid 0 then too)."""
    proc = plan.prefix + "/proc"
    return [_m(proc, "", sc.MS_BIND | sc.MS_REC, "", OLDROOT + "/proc", step="proc")] + _proc_covers(proc)


def _proc_covers(proc: str) -> List[Call]:
    out: List[Call] = []
    for name in PROC_READONLY:
        path = f"{proc}/{name}"
        out += [Call(IF_EXISTS, "proc", (path,), 2), _m(path, "", sc.MS_BIND | sc.MS_REC, "", path, step="proc"),
                Call(REMOUNT_RO, "proc", (path,))]
    return out


def open_upper_calls(plan: Plan) -> List[Call]:
    """Open the upper layers' tmpfs (kept readable through the fd, so that
    the caller can list what the payload wrote after it is detached)."""
    return [Call(OPEN_UPPER, _ROOT, (UPPER,))]


def finish_calls(plan: Plan) -> List[Call]:
    """Detach the host tree and the upper tmpfs."""
    out: List[Call] = []
    if plan.prefix:
        # pivot_root into the new root built below the staging tmpfs (a
        # self-bind makes it a mount point of its own); the staging root,
        # the host tree and the upper tmpfs below it then detach together.
        return out + [_m(plan.prefix, "", sc.MS_BIND | sc.MS_REC, "", plan.prefix), Call(CHDIR, _ROOT, (plan.prefix,)),
                      Call(PIVOT, _ROOT, (".", ".")), Call(UMOUNT, _ROOT, (".",), sc.MNT_DETACH),
                      Call(CHDIR, _ROOT, ("/",))]
    return out + [Call(UMOUNT, _ROOT, (UPPER,), sc.MNT_DETACH), Call(RMDIR, _ROOT, (UPPER,)),
                  Call(UMOUNT, _ROOT, (OLDROOT,), sc.MNT_DETACH), Call(RMDIR, _ROOT, (OLDROOT,))]


def stage_root() -> None:
    """Stage a new root in this process's (private) mount namespace."""
    from .calls import execute

    execute(stage_calls())
