"""No setuid or setgid file from a sandbox whose uid is the host's root.

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
falls back to ``openat``.  Every other system call is allowed.

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

#: (audit arch, x32 bit or 0, {syscall number: index of its mode argument}, openat2)
_ARCHES: Dict[str, Tuple[int, int, Dict[int, int], int]] = {
    "x86_64": (0xC000003E, 0x40000000,
               {90: 1, 91: 1, 268: 2, 452: 2, 2: 2, 257: 3, 85: 1, 83: 1, 258: 2, 133: 1, 259: 2}, 437),
    "aarch64": (0xC00000B7, 0, {52: 1, 53: 2, 452: 2, 56: 3, 34: 2, 33: 2}, 437),
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k & 0xFFFFFFFF)


def program(machine: Optional[str] = None) -> Optional[bytes]:
    """The filter for this machine's architecture, or ``None`` where we
    have no table (the sandbox then says so in its layers)."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit, x32, modes, openat2 = arch
    checks: List[Tuple[int, int]] = sorted(modes.items())
    insns: List[bytes] = []
    # Each mode check is 3 instructions at the end; compute jump targets.
    n_dispatch = len(checks)
    head = 4 if x32 else 3  # ld arch, jeq arch, ld nr, [x32 check]
    # layout: head | dispatch (one jeq per syscall) | jeq openat2 | allow | enosys | checks... | deny
    allow_at = head + n_dispatch + 1
    enosys_at = allow_at + 1
    first_check = enosys_at + 1
    deny_at = first_check + 3 * n_dispatch

    insns.append(_insn(_LD_W_ABS, 0, 0, 4))                       # arch
    insns.append(_insn(_JEQ_K, 0, allow_at - 2, audit))           # another arch: not ours to judge
    insns.append(_insn(_LD_W_ABS, 0, 0, 0))                       # nr
    if x32:
        insns.append(_insn(_JGE_K, enosys_at - 4, 0, x32))        # the x32 ABI: not for tests
    for i, (nr, _arg) in enumerate(checks):
        here = head + i
        insns.append(_insn(_JEQ_K, first_check + 3 * i - here - 1, 0, nr))
    here = head + n_dispatch
    insns.append(_insn(_JEQ_K, enosys_at - here - 1, 0, openat2))
    insns.append(_insn(_RET_K, 0, 0, _ALLOW))
    insns.append(_insn(_RET_K, 0, 0, _ERRNO | errno.ENOSYS))
    for i, (_nr, arg) in enumerate(checks):
        here = first_check + 3 * i
        insns.append(_insn(_LD_W_ABS, 0, 0, 16 + 8 * arg))        # low half of the mode argument
        insns.append(_insn(_JSET_K, deny_at - (here + 1) - 1, 0, _SUID_SGID))
        insns.append(_insn(_RET_K, 0, 0, _ALLOW))
    insns.append(_insn(_RET_K, 0, 0, _ERRNO | errno.EPERM))
    assert len(insns) == deny_at + 1
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
