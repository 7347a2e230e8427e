"""No setuid or setgid file, and no user or cgroup namespace, from a sandbox
whose uid is the host's root; no cgroup namespace from any other sandbox
with a user namespace (see :func:`program`, ``root=False``).

When pytest runs as root, the sandbox's uid 0 is the host's uid 0 (so that
``getuid()`` and file ownership in ``tmp_path`` look as outside).  Without any
capability it still owns what it creates, and the owner may set the
set-user-ID bit: a file it leaves in a writable path would then be a
setuid-root program on the host, for every user who can reach it.

systemd's ``RestrictSUIDSGID=`` closes this with a seccomp filter, and so do
we: ``chmod``, ``fchmod``, ``fchmodat``, ``fchmodat2``, ``open``, ``openat``,
``creat``, ``mkdir``, ``mkdirat``, ``mknod`` and ``mknodat`` fail with EPERM
when the mode asks for S_ISUID or S_ISGID, and ``openat2`` (whose mode sits
in a structure a filter cannot read) fails with ENOSYS, so that the C library
falls back to ``openat``.  ``unshare`` and ``clone`` fail with EPERM when
they ask for a new user or cgroup namespace, and ``clone3`` (flags in a
structure again) with ENOSYS: the C library falls back to ``clone``, as
under Docker's default profile.  ``io_uring_setup``, ``_enter`` and
``_register`` fail with ENOSYS (its operations never pass the filter).
System calls of another ABI (i386's ``int 0x80``, x32, arm32: their
numbers are not in the tables) fail with ENOSYS.  Every other system call
is allowed.  The sandbox's PID 1 gets the same filter as the payload (the C
executor runs them in one address space).

The filter is a classic BPF program (``struct sock_filter``), built here as
data; both executors install it with ``prctl(PR_SET_SECCOMP,
SECCOMP_MODE_FILTER)`` after ``no_new_privs``.
"""
from __future__ import annotations

import errno
import platform
import struct
from typing import Dict, List, Optional, Tuple

# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000

_SUID_SGID = 0o6000
#: What a namespace the payload makes could turn against the host: in a user
#: namespace of its own the host's uid 0 has every capability over what the
#: host's uid 0 owns and it can reach, and in a cgroup namespace of its own
#: (with ``root=True``'s capabilities) it mounts a cgroup filesystem whose
#: root is its own cgroup: its limit and counter files, and, in the
#: hierarchies the sandbox does not join, the caller's cgroup (its freezer).
_NEW_CGROUP = 0x02000000
_NEW_USER_OR_CGROUP = 0x10000000 | _NEW_CGROUP
_CLONE3 = 435

#: io_uring_setup, io_uring_enter, io_uring_register (the same numbers on
#: both): its operations never pass through seccomp (an IORING_OP_OPENAT
#: made a setgid file of root's in a writable path).  Refused as Docker's
#: default profile refuses them; the programs that use it fall back.
_IO_URING = (425, 426, 427)

#: (audit arch, x32 bit or 0, {syscall number: (index of the argument, bits refused)},
#: system calls refused with ENOSYS: openat2 and clone3, whose mode and flags
#: sit in a structure a filter cannot read; the C library falls back to
#: openat and clone)
_ARCHES: Dict[str, Tuple[int, int, Dict[int, Tuple[int, int]], Tuple[int, ...]]] = {
    "x86_64": (0xC000003E, 0x40000000,
               {**{nr: (arg, _SUID_SGID) for nr, arg in
                   {90: 1, 91: 1, 268: 2, 452: 2, 2: 2, 257: 3, 85: 1, 83: 1, 258: 2, 133: 1, 259: 2}.items()},
                272: (0, _NEW_USER_OR_CGROUP), 56: (0, _NEW_USER_OR_CGROUP)}, (437, 435) + _IO_URING),
    "aarch64": (0xC00000B7, 0,
                {**{nr: (arg, _SUID_SGID) for nr, arg in {52: 1, 53: 2, 452: 2, 56: 3, 34: 2, 33: 2}.items()},
                 97: (0, _NEW_USER_OR_CGROUP), 220: (0, _NEW_USER_OR_CGROUP)}, (437, 435) + _IO_URING),
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k & 0xFFFFFFFF)


def program(machine: Optional[str] = None, root: bool = True) -> Optional[bytes]:
    """The filter for this machine's architecture, or ``None`` where we
    have no table (the sandbox then says so in its layers).  ``root``: for
    a root run's sandbox (everything above); else only what a test of an
    ordinary user's run could turn against its own cgroup: no cgroup
    namespace of its own (``unshare``/``clone`` with CLONE_NEWCGROUP: in one,
    with a user namespace of its own beside it, it could mount a cgroup
    filesystem whose root is its own cgroup, which its user owns), ``clone3``
    and other ABIs' calls ENOSYS as above.  User namespaces stay allowed
    there (Chromium's sandbox, rootless tools)."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit, x32, refused, enosys = arch
    if not root:
        refused = {nr: (arg, _NEW_CGROUP) for nr, (arg, bits) in refused.items() if bits == _NEW_USER_OR_CGROUP}
        enosys = (_CLONE3,)
    checks: List[Tuple[int, Tuple[int, int]]] = sorted(refused.items())
    insns: List[bytes] = []
    n_dispatch = len(checks)
    head = 4 if x32 else 3  # ld arch, jeq arch, ld nr, [x32 check]
    # layout: head | dispatch (one jeq per checked call) | one jeq per ENOSYS call | allow | enosys
    #         | per checked call: ld argument, jset bits, deny, allow
    allow_at = head + n_dispatch + len(enosys)
    enosys_at = allow_at + 1
    first_check = enosys_at + 1

    insns.append(_insn(_LD_W_ABS, 0, 0, 4))                       # arch
    # another ABI (i386's int 0x80 from a 64-bit process, arm32): its own
    # numbers, which this table does not cover: none of it
    insns.append(_insn(_JEQ_K, 0, enosys_at - 2, audit))
    insns.append(_insn(_LD_W_ABS, 0, 0, 0))                       # nr
    if x32:
        insns.append(_insn(_JGE_K, enosys_at - 4, 0, x32))        # the x32 ABI: not for tests
    for i, (nr, _check) in enumerate(checks):
        here = head + i
        insns.append(_insn(_JEQ_K, first_check + 4 * i - here - 1, 0, nr))
    for j, nr in enumerate(enosys):
        here = head + n_dispatch + j
        insns.append(_insn(_JEQ_K, enosys_at - here - 1, 0, nr))
    insns.append(_insn(_RET_K, 0, 0, _ALLOW))
    insns.append(_insn(_RET_K, 0, 0, _ERRNO | errno.ENOSYS))
    for _nr, (arg, bits) in checks:
        insns.append(_insn(_LD_W_ABS, 0, 0, 16 + 8 * arg))        # low half of the argument
        insns.append(_insn(_JSET_K, 0, 1, bits))
        insns.append(_insn(_RET_K, 0, 0, _ERRNO | errno.EPERM))
        insns.append(_insn(_RET_K, 0, 0, _ALLOW))
    assert len(insns) == first_check + 4 * n_dispatch
    return b"".join(insns)


def install(prog: bytes) -> None:
    """Install ``prog`` on this process (no_new_privs must be set, or the
    process must have CAP_SYS_ADMIN in its user namespace)."""
    import ctypes

    from . import _syscalls

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    fprog = SockFprog(len(prog) // 8, prog)
    libc = _syscalls.libc()
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {__import__('os').strerror(err)}")
