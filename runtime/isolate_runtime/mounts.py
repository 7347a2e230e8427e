"""The sandbox's filesystem view: a mount plan built as data, applied in one place.

The host tree is seen through copy-on-write overlays whose upper layers live
in a tmpfs (charged to the sandbox's memory cgroup).  Inside a user namespace
the kernel refuses an overlay whose lower layer has *locked* submounts (an
overlay with ``lowerdir=/`` fails with "failed to clone lowerpath"), so the
plan overlays every directory that has no mount point below it, and recreates
the directories above mount points as plain directories of the new root
(bubblewrap's model, overlay per directory).  Fresh ``/proc`` (mounted by the
sandbox's PID 1, from inside its PID namespace), a minimal ``/dev`` with a new
devpts instance and ``/dev/shm``, ``/sys`` read-only, a private ``/tmp``, and
read-write pass-through binds for the paths the spec names.

Layout while building (in the child's private mount namespace)::

    /              tmpfs: the new root (was mounted on /tmp, then pivoted)
    /.oldroot      the host's tree (detached at the end)
    /.upper        tmpfs with overlay upper/work dirs (detached at the end;
                   an open fd keeps it readable to list what was written)
"""
from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from . import _syscalls as sc

OLDROOT = "/.oldroot"
UPPER = "/.upper"
NEWROOT = "/newroot"

#: Filesystems that are recreated or hidden rather than overlaid.
VIRTUAL_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "fusectl", "configfs", "binfmt_misc", "hugetlbfs", "autofs",
    "efivarfs", "selinuxfs", "rpc_pipefs", "nsfs",
})
#: Top-level trees the plan provides itself.
FIXED = ("/proc", "/sys", "/dev", "/tmp")
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

    kind: str  # mkdir | symlink | copy | overlay | bind | rbind | tmpfs
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
    #: Copy-on-write views mounted below the private /tmp (their upper
    #: layers follow the plan's other overlays in ``overlays``).
    views: Tuple[str, ...] = ()


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
    for path in sorted(set(own_roots), key=lambda p: (p.count("/"), p)):
        if path in overlays or any(_under(path, f) for f in FIXED) or has_mount_below(path):
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
    for point in sorted(by_point, key=lambda p: (p.count("/"), p)):
        m = by_point[point]
        if point == "/" or m.fstype in VIRTUAL_FS or any(_under(point, f) for f in FIXED):
            continue
        if not isdir(point):
            ops.append(Op("copy", point, point))
        elif m.readonly:
            ops.append(Op("bind", point, point, readonly=True))
        else:
            ops.append(Op("overlay", point, point))
            overlays.append(point)
    return Plan(tuple(ops), tuple(overlays), tuple(sorted(set(writable), key=lambda p: (p.count("/"), p))), NEWROOT)


#: Places where the sandbox hides the host's files behind its own tmpfs.
PRIVATE = ("/tmp", "/dev/shm")


def host_plan(writable: Sequence[str] = (), own_roots: Sequence[str] = (), privileged: bool = False,
              visible: Sequence[str] = ()) -> Plan:
    with open("/proc/self/mountinfo") as f:
        host = parse_mountinfo(f.read())
    if privileged:
        plan = build_privileged_plan(host, writable)
    else:
        plan = build_plan(host, writable, own_roots=own_roots)
    return with_views(plan, visible)


def with_views(plan: Plan, visible: Sequence[str]) -> Plan:
    """Add copy-on-write views of ``visible`` paths that lie below a private
    tmpfs (and not below a writable pass-through, which shows them anyway)."""
    views: List[str] = []
    for path in sorted(set(visible), key=lambda p: (p.count("/"), p)):
        if path in PRIVATE or not any(_under(path, top) for top in PRIVATE):
            continue
        if any(_under(path, w) for w in plan.writable) or any(_under(path, v) for v in views):
            continue
        views.append(path)
    if not views:
        return plan
    return dataclasses.replace(plan, overlays=plan.overlays + tuple(views), views=tuple(views))


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


def _mkdirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def stage_root() -> None:
    """Private propagation, a tmpfs as the new root, the host at OLDROOT."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("isolate-root", "/tmp", "tmpfs", sc.MS_NOSUID, "mode=0755")
    os.mkdir("/tmp" + OLDROOT)
    sc.pivot_root("/tmp", "/tmp" + OLDROOT)
    os.chdir("/")
    os.mkdir(UPPER)
    sc.mount("isolate-upper", UPPER, "tmpfs", sc.MS_NOSUID, "mode=0700")


def apply_plan(plan: Plan) -> List[str]:
    """Apply ``plan`` below the staged root.  Returns notes about degraded
    pieces (an overlay that fell back to a read-only bind)."""
    notes: List[str] = []
    n = 0
    for op in plan.ops:
        t = (plan.prefix + op.target).rstrip("/") or "/"
        src = (OLDROOT + op.source).rstrip("/") if op.kind not in ("symlink",) else op.source
        if op.kind == "mkdir":
            _mkdirs(t)
        elif op.kind == "symlink":
            os.symlink(op.source or os.readlink(OLDROOT + t), t)
        elif op.kind == "copy":
            with open(src, "rb") as fi, open(t, "wb") as fo:
                fo.write(fi.read())
            os.chmod(t, os.stat(src).st_mode & 0o7777)
        elif op.kind == "overlay":
            _mkdirs(t)
            up, work = f"{UPPER}/u{n}", f"{UPPER}/w{n}"
            n += 1
            os.mkdir(up)
            os.mkdir(work)
            opts = f"lowerdir={_escape_opt(src)},upperdir={up},workdir={work},userxattr"
            try:
                sc.mount("isolate-overlay", t, "overlay", 0, opts)
            except OSError as e:
                notes.append(f"{t}: overlay refused ({os.strerror(e.errno or 0)}), bound read-only")
                sc.mount(src, t, None, sc.MS_BIND | sc.MS_REC)
                remount_readonly(t)
        elif op.kind == "bind":
            if stat.S_ISDIR(os.stat(src).st_mode):
                _mkdirs(t)
            else:
                _touch(t)
            sc.mount(src, t, None, sc.MS_BIND | sc.MS_REC)
            if op.readonly:
                remount_readonly(t)
    return notes


def remount_readonly(path: str) -> None:
    """Make a bind mount read-only, keeping the flags the kernel locks in a
    user namespace (nosuid, nodev, noexec, atime) or the remount is refused."""
    f = os.statvfs(path).f_flag
    if f & os.ST_RDONLY:
        return
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    for st_flag, ms_flag in ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
                             (os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21)):
        if f & st_flag:
            flags |= ms_flag
    sc.mount(None, path, None, flags)


def mount_fixed(plan: Plan) -> None:
    """``/dev``, ``/sys``, ``/tmp``, the ``/proc`` mount point, then the
    writable pass-throughs (they may lie below any of these)."""
    r = plan.prefix
    _mkdirs(r + "/proc")
    dev = r + "/dev"
    _mkdirs(dev)
    sc.mount("isolate-dev", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=0755")
    for name in DEV_NODES:
        _touch(f"{dev}/{name}")
        sc.mount(f"{OLDROOT}/dev/{name}", f"{dev}/{name}", None, sc.MS_BIND)
    for link, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                     ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")):
        os.symlink(to, f"{dev}/{link}")
    os.mkdir(dev + "/pts")
    sc.mount("devpts", dev + "/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.mkdir(dev + "/shm")
    sc.mount("isolate-shm", dev + "/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777")
    _mkdirs(r + "/sys")
    sc.mount(OLDROOT + "/sys", r + "/sys", None, sc.MS_BIND | sc.MS_REC)
    sc.mount_setattr_recursive_readonly(r + "/sys")
    _mkdirs(r + "/tmp")
    sc.mount("isolate-tmp", r + "/tmp", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777")
    for view in plan.views:
        i = plan.overlays.index(view)
        up, work = f"{UPPER}/u{i}", f"{UPPER}/w{i}"
        os.mkdir(up)
        os.mkdir(work)
        _mkdirs(r + view)
        sc.mount("isolate-overlay", r + view, "overlay", 0,
                 f"lowerdir={_escape_opt(OLDROOT + view)},upperdir={up},workdir={work},userxattr")
    for path in plan.writable:
        src, dst = OLDROOT + path, r + path
        if stat.S_ISDIR(os.stat(src).st_mode):
            _mkdirs(dst)
        else:
            _mkdirs(os.path.dirname(dst))
            if not os.path.exists(dst):
                _touch(dst)
        sc.mount(src, dst, None, sc.MS_BIND | sc.MS_REC)


#: Parts of a fresh /proc that still reach host-global kernel state, made
#: read-only as bubblewrap does: /proc/sys checks the file's uid, not a
#: capability, so a sandbox whose root is the host's uid 0 could otherwise
#: change global sysctls; sysrq-trigger needs no capability at all.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")


def mount_proc(plan: Plan) -> None:
    """From inside the new PID namespace, while the host's /proc is still
    visible (the kernel refuses a new procfs in a user namespace otherwise)."""
    proc = plan.prefix + "/proc"
    sc.mount("proc", proc, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    for name in PROC_READONLY:
        path = f"{proc}/{name}"
        if os.path.exists(path):
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
            remount_readonly(path)


def finish_root(plan: Plan) -> int:
    """Detach the host tree and the upper-layer tmpfs; return an fd that keeps
    the upper layers readable (for :func:`written_paths`)."""
    upper_fd = os.open(UPPER, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if plan.prefix:
        # The new root was mounted before the user namespace existed, so it is
        # locked there and pivot_root refuses it; a recursive self-bind made
        # inside the namespace is not (the staging root then detaches whole).
        sc.mount(plan.prefix, plan.prefix, None, sc.MS_BIND | sc.MS_REC)
        os.chdir(plan.prefix)
        sc.pivot_root(".", ".")
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
        return upper_fd
    sc.umount2(UPPER, sc.MNT_DETACH)
    os.rmdir(UPPER)
    sc.umount2(OLDROOT, sc.MNT_DETACH)
    os.rmdir(OLDROOT)
    return upper_fd


def written_paths(plan: Plan, upper_fd: int, limit: int = 1000) -> List[str]:
    """Paths the payload created, changed or deleted in the overlays (and new
    top-level names in the root), from the upper layers."""
    out: List[str] = []
    for i, target in enumerate(plan.overlays):
        try:
            top = os.open(f"u{i}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=upper_fd)
        except OSError:
            continue
        try:
            for dirpath, dirnames, filenames, _dfd in os.fwalk(".", dir_fd=top):
                rel = dirpath[1:]
                base = target.rstrip("/")
                if not dirnames and not filenames and rel:
                    out.append(base + rel)
                for name in filenames:
                    out.append(f"{base}{rel}/{name}")
                    if len(out) >= limit:
                        return out
        finally:
            os.close(top)
    if plan.prefix:
        return out[:limit]
    known = {op.target for op in plan.ops if op.target.count("/") == 1} | set(FIXED)
    try:
        for name in os.listdir("/"):
            if "/" + name not in known:
                out.append("/" + name)
    except OSError:
        pass
    return out[:limit]
