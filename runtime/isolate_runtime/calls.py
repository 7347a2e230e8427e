"""The sandbox's setup as kernel calls: the vocabulary, its wire form, and
the Python executor.

The setup of one sandbox (:mod:`isolate_runtime.program`) is a flat list of
:class:`Call` values run by one of two executors: :func:`execute` here, or the
C accelerator (``_fastspawn.c``), which runs the same list in the forked
child without touching a Python object.  The opcodes below are shared with
the C code: keep both in step.
"""
from __future__ import annotations

import array
import errno
import os
import select
import socket
import stat
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from . import _syscalls as sc
from .errors import SetupError

(PDEATHSIG, CHECK_PPID, SETSID, WRITE, UNSHARE, MOUNT, MKDIR, MKDIRS, SYMLINK, TOUCH, COPY, PIVOT, CHDIR,
 UMOUNT, RMDIR, OVERLAY, BIND, REMOUNT_RO, SETATTR_RO, IF_EXISTS, LO_UP, SETHOSTNAME, OPEN_UPPER, OPEN_ROOT,
 OPEN_SELF, CALLER_PIDFD, CHECK_CALLER, DROP_CAPS, SECCOMP, SPAWN_INIT, INIT_END, SPAWN_PAYLOAD,
 LISTEN, RELAY) = range(1, 35)

#: Section markers of a program (see program.py): they run nothing themselves.
MARKERS = (SPAWN_INIT, INIT_END, SPAWN_PAYLOAD)

_NAMES = {v: k.lower().replace("_", "-") for k, v in list(globals().items())
          if k.isupper() and isinstance(v, int) and 1 <= v <= RELAY}

#: String arguments one call may carry.
MAX_ARGS = 4
#: WRITE flag: a path that does not exist is not an error.
MISSING_OK = 1
#: WRITE flag: a write that fails for any reason is not an error (for what
#: only lowers a risk, where a host may refuse it).
BEST_EFFORT = 4
#: DROP_CAPS flag: also make the process not dumpable (no ptrace, no
#: /proc/<pid>/mem for processes of the same user).
NOT_DUMPABLE = 2
#: DROP_CAPS flag: drop only the capability ``num >> 8`` (from the bounding,
#: effective, permitted, inheritable and ambient sets), nothing else.
ONE_CAP = 4
#: Exit status of a sandbox process whose setup failed (the reason travels
#: on the control socket).
SETUP_EXIT = 125

#: Most LISTEN calls in one program (the relay's message carries their fds,
#: and the kernel passes at most 253 per message).
MAX_LISTEN = 64

#: Frames on the control socket, from the setup to the caller: each is one
#: datagram, this byte first.  READY carries four big-endian int64 figures
#: (upper layer inodes/blocks, root inodes/blocks) and up to two fds, then
#: a big-endian int32 errno per LISTEN of the program (0: made); INIT
#: and PAYLOAD a big-endian int32 pid; FAILED a call index and an errno;
#: RAISED the JSON of an exception the Python executor caught.
FRAME_READY = b"R"
FRAME_INIT = b"I"
FRAME_PAYLOAD = b"C"
FRAME_FAILED = b"X"
FRAME_RAISED = b"E"

#: (step, errno) -> what to do about it.
HINTS: Dict[Tuple[str, int], str] = {
    ("unshare", errno.EPERM): "this host forbids unprivileged user namespaces (see `python -m isolate_runtime probe`)",
    ("unshare", errno.ENOSPC): "the user/namespace count limit is reached (sysctl user.max_user_namespaces)",
    ("unshare", errno.EINVAL): "the kernel lacks one of the namespace types, or the process was multi-threaded",
    ("id maps", errno.EPERM): "writing uid_map was refused (AppArmor or a container runtime restricts user namespaces)",
    ("root filesystem", errno.EINVAL): "overlayfs refused a lower directory (see `python -m isolate_runtime probe`)",
    ("root filesystem", errno.EPERM): "mounting inside the user namespace was refused (container seccomp/AppArmor?)",
}


@dataclass(frozen=True)
class Call:
    """One kernel-level step: ``code`` with up to four string arguments (``""``
    is NULL where the call takes a pointer) and one integer (flags, mode,
    pid).  ``step`` names the setup step a failure is reported under."""

    code: int
    step: str
    args: Tuple[str, ...] = ()
    num: int = 0

    def describe(self) -> str:
        name = _NAMES.get(self.code, str(self.code))
        if self.code == MOUNT:
            return f"mount {self.args[2]} on {self.args[1]}"
        if self.code in (WRITE, SETHOSTNAME):
            return f"{name} {self.args[0]}"
        return " ".join([name] + [a for a in self.args[:2] if a])


def encode(calls: Sequence[Call]) -> bytes:
    """The wire form _fastspawn.c decodes: ``<BBBxq`` code, 0, number of
    arguments, integer; each argument as ``<I`` length and NUL-terminated bytes."""
    out = []
    for i, c in enumerate(calls):
        if len(c.args) > MAX_ARGS:
            raise ValueError(f"sandbox program: call {i} ({c.describe()}) has {len(c.args)} arguments, "
                             f"at most {MAX_ARGS} fit the wire form")
        out.append(struct.pack("<BBBxq", c.code, 0, len(c.args), c.num))
        for a in c.args:
            b = os.fsencode(a) + b"\0"
            out.append(struct.pack("<I", len(b)))
            out.append(b)
    return b"".join(out)


def failure(call: Call, err: int) -> SetupError:
    """The error a failed call is reported as."""
    return SetupError(call.step, err, call.describe(), HINTS.get((call.step, err), ""))


# ------------------------------------------------------------------ the Python executor

class ExecState:
    """What the calls of one sandbox leave behind for later ones."""

    def __init__(self) -> None:
        self.upper_fd = -1
        self.root_fd = -1
        self.caller_pidfd = -1
        #: This process's own /proc directory, opened while the host's /proc
        #: was visible: a WRITE to a relative path goes there.
        self.self_fd = -1
        #: LISTEN's sockets (fd, or -1 with the errno); RELAY sends them
        #: away (and sets the fds to -1: the errnos go with READY).
        self.listeners: List[Tuple[int, int]] = []


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


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _bind(src: str, dst: str) -> None:
    if stat.S_ISDIR(os.stat(src).st_mode):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            _touch(dst)
    sc.mount(src, dst, None, sc.MS_BIND | sc.MS_REC)


def _copy(src: str, dst: str) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(fi.read())
    os.chmod(dst, os.stat(src).st_mode & 0o7777)


def _overlay(target: str, opts: str, src: str) -> None:
    try:
        sc.mount("isolate-overlay", target, "overlay", 0, opts)
    except OSError:
        # degraded: the directory is seen read-only instead of copy-on-write
        sc.mount(src, target, None, sc.MS_BIND | sc.MS_REC)
        remount_readonly(target)


def _write(path: str, text: str, optional: bool, state: ExecState) -> None:
    try:
        if os.path.isabs(path):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=state.self_fd)
    except FileNotFoundError:
        if optional:
            return
        raise
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _drop_caps(num: int) -> None:
    import prctl

    if num & ONE_CAP:
        cap = num >> 8
        prctl.capbset.drop(cap)
        sc.libc().prctl(47, 3, cap, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER
        for caps in (prctl.cap_inheritable, prctl.cap_effective, prctl.cap_permitted):
            caps.drop(cap)
        return

    prctl.capbset.limit()
    sc.libc().prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    prctl.cap_inheritable.limit()
    prctl.cap_effective.limit()
    prctl.cap_permitted.limit()
    prctl.set_no_new_privs(1)
    if num & NOT_DUMPABLE:
        prctl.set_dumpable(False)


def _listen(address: str, port: int) -> Tuple[int, int]:
    """A listening TCP socket on ``address``:``port`` in this process's
    network namespace: ``(fd, 0)``, or ``(-1, errno)``; never raises (one
    service that cannot be forwarded must not cost the sandbox)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        return -1, e.errno or errno.EINVAL
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(4096)
    except OSError as e:
        sock.close()
        return -1, e.errno or errno.EINVAL
    return sock.detach(), 0


def relay_message(header: str, listeners: Sequence[Tuple[int, int]]) -> bytes:
    """RELAY's message: the caller's header, NUL, one int32 errno per
    listener (0: its fd is attached, in order)."""
    return header.encode() + b"\0" + struct.pack(f"={len(listeners)}i", *(err for _fd, err in listeners))


def _relay(header: str, relay_fd: int, state: ExecState) -> None:
    """Send the listeners to the relay process and close them here, and the
    relay's socket too: neither this process nor any it starts keeps a
    listener (the payload must not accept its own forwarded connections) or
    a way to talk to the relay."""
    fds = [fd for fd, err in state.listeners if err == 0]
    try:
        sock = socket.socket(fileno=os.dup(relay_fd))
        try:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            sock.sendmsg([relay_message(header, state.listeners)], anc, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        finally:
            sock.close()
    except OSError:
        pass  # no relay: the caller learns it when it asks the relay how the sandbox went
    finally:
        for fd in fds + [relay_fd]:
            try:
                os.close(fd)
            except OSError:
                pass
        state.listeners = [(-1, err) for _fd, err in state.listeners]


def _check_caller(state: ExecState) -> None:
    if state.caller_pidfd >= 0:
        ready, _, _ = select.select([state.caller_pidfd], [], [], 0)
        if ready:  # the caller died before PDEATHSIG was armed
            os._exit(125)


def execute(calls: Sequence[Call], state: Optional[ExecState] = None, first_index: int = 0) -> None:
    """Run ``calls`` (no section markers) in this process.  Raises
    ``SetupError`` naming the failed step, with ``index`` set to its place
    in the program (``first_index`` is the place of ``calls[0]``)."""
    state = state if state is not None else ExecState()
    skip = 0
    for i, c in enumerate(calls):
        if skip:
            skip -= 1
            continue
        a = c.args
        try:
            if c.code == MOUNT:
                sc.mount(a[0] or None, a[1], a[2] or None, c.num, a[3] or None)
            elif c.code == MKDIR:
                os.mkdir(a[0], c.num)
                if c.num & 0o7022:  # the exact mode (see OP_MKDIR in _fastspawn.c)
                    os.chmod(a[0], c.num)
            elif c.code == MKDIRS:
                os.makedirs(a[0], exist_ok=True)
                if not os.path.isdir(a[0]):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", a[0])
            elif c.code == SYMLINK:
                os.symlink(a[0] or os.readlink(a[2]), a[1])
            elif c.code == TOUCH:
                _touch(a[0])
            elif c.code == COPY:
                _copy(a[0], a[1])
            elif c.code == PIVOT:
                sc.pivot_root(a[0], a[1])
            elif c.code == CHDIR:
                os.chdir(a[0])
            elif c.code == UMOUNT:
                sc.umount2(a[0], c.num)
            elif c.code == RMDIR:
                os.rmdir(a[0])
            elif c.code == OVERLAY:
                _overlay(a[0], a[1], a[2])
            elif c.code == BIND:
                _bind(a[0], a[1])
            elif c.code == REMOUNT_RO:
                remount_readonly(a[0])
            elif c.code == SETATTR_RO:
                sc.mount_setattr_recursive_readonly(a[0])
            elif c.code == IF_EXISTS:
                if not os.path.exists(a[0]):
                    skip = c.num
            elif c.code == OPEN_UPPER:
                state.upper_fd = os.open(a[0], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            elif c.code == OPEN_ROOT:
                state.root_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            elif c.code == OPEN_SELF:
                state.self_fd = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            elif c.code == WRITE:
                try:
                    _write(a[0], a[1], bool(c.num & MISSING_OK), state)
                except OSError:
                    if not c.num & BEST_EFFORT:
                        raise
            elif c.code == UNSHARE:
                sc.unshare(c.num)
            elif c.code == PDEATHSIG:
                from .namespaces import die_with_parent

                die_with_parent()
            elif c.code == CHECK_PPID:
                if os.getppid() != c.num:
                    os._exit(125)  # the caller died before PDEATHSIG was armed
            elif c.code == CALLER_PIDFD:
                try:
                    state.caller_pidfd = os.pidfd_open(c.num)
                except (AttributeError, OSError):
                    state.caller_pidfd = -1
            elif c.code == CHECK_CALLER:
                _check_caller(state)
            elif c.code == SETSID:
                os.setsid()
            elif c.code == LO_UP:
                from .network import loopback_up

                loopback_up()
            elif c.code == SETHOSTNAME:
                sc.sethostname(a[0])
            elif c.code == LISTEN:
                if len(state.listeners) >= MAX_LISTEN:
                    raise OSError(errno.E2BIG, "too many listeners")
                state.listeners.append(_listen(a[0], c.num))
            elif c.code == RELAY:
                _relay(a[0], c.num, state)
            elif c.code == DROP_CAPS:
                _drop_caps(c.num)
            elif c.code == SECCOMP:
                from .seccomp import install

                install(bytes.fromhex(a[0]))
            else:
                raise ValueError(f"not a setup call: {c!r}")
        except OSError as e:
            err = failure(c, e.errno or 0)
            err.index = first_index + i
            raise err from None


def sections(calls: Sequence[Call]) -> List[List[Call]]:
    """Split a program at its markers: A's calls, S's, A's next, P's."""
    out: List[List[Call]] = [[]]
    for c in calls:
        if c.code in MARKERS:
            out.append([])
        else:
            out[-1].append(c)
    return out
