"""The only ctypes shims in the runtime: Linux system calls Python lacks.

Each wrapper raises ``OSError`` with the real errno.  Nothing here allocates
after fork more than ctypes itself does.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Optional

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

_IS_LINUX = sys.platform.startswith("linux")
_MACHINE = platform.machine()
# Syscall numbers that glibc may not wrap. New syscalls share one number on
# every architecture; pivot_root differs.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217, "riscv64": 41}.get(
    _MACHINE, -1
)
_SYS_MOUNT_SETATTR = 442
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "armv7l": 378, "ppc64le": 354, "s390x": 343, "riscv64": 272}.get(
    _MACHINE, -1
)
KCMP_VM = 1

_libc: Optional[ctypes.CDLL] = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        # CDLL(None): the C library the interpreter already links against.
        # (ctypes.util.find_library runs ldconfig in a subprocess: ~4 ms.)
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.unshare.argtypes = [ctypes.c_int]
        _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _check(ret: int, what: str, path: Optional[str] = None) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def _b(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else os.fsencode(s)


def fork() -> int:
    """``os.fork()`` without Python 3.12's "process is multi-threaded, use of
    fork() may lead to deadlocks" warning: the runtime's children are
    single-threaded by construction and exec or ``_exit`` (the warning would
    otherwise reach users' warning summaries and fail ``-W error`` runs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
        return os.fork()


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(fd, nstype), "setns")


def mount(source: Optional[str], target: str, fstype: Optional[str], flags: int = 0,
          data: Optional[str] = None) -> None:
    ret = libc().mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(ret, f"mount {fstype or ''} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(libc().umount2(_b(target), flags), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    if _SYS_PIVOT_ROOT < 0:
        raise OSError(38, f"pivot_root: unknown syscall number on {_MACHINE}")
    _check(libc().syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root", new_root)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr_recursive_readonly(path: str) -> None:
    """Make the mount at ``path`` and everything below it read-only (Linux 5.12+)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    ret = libc().syscall(_SYS_MOUNT_SETATTR, AT_FDCWD, _b(path), AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr))
    _check(ret, "mount_setattr", path)


def kcmp(pid1: int, pid2: int, kind: int) -> bool:
    """``kcmp(2)``: do the two processes share the resource ``kind`` (e.g.
    :data:`KCMP_VM`, one address space)?  Needs ptrace access to both."""
    if _SYS_KCMP < 0:
        raise OSError(38, f"kcmp: unknown syscall number on {_MACHINE}")
    ret: int = libc().syscall(_SYS_KCMP, pid1, pid2, kind, 0, 0)
    _check(ret, "kcmp")
    return ret == 0


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(libc().sethostname(raw, len(raw)), "sethostname")


_PROT_READ, _MAP_SHARED, _MADV_DONTFORK = 1, 1, 10


def map_readonly_private_to_this_process(fd: int, size: int) -> int:
    """Map ``size`` bytes of ``fd`` shared and read-only, and not into any
    child this process forks (MADV_DONTFORK); returns the address.

    A raw mapping, not an ``mmap.mmap``: a fork's copy of that object would
    think the range still mapped and unmap whatever is there by then when it
    is collected.  ``fd`` should be open read-only, so that nothing can make
    the mapping writable later (mprotect refuses)."""
    lib = libc()
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    addr = lib.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        _check(-1, "mmap")
    lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if lib.madvise(addr, size, _MADV_DONTFORK) < 0:
        err = ctypes.get_errno()
        unmap(int(addr), size)
        raise OSError(err, f"madvise: {os.strerror(err)}")
    return int(addr)


def unmap(addr: int, size: int) -> None:
    lib = libc()
    lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.munmap(addr, size)


def read_mapped(addr: int, offset: int, size: int) -> bytes:
    return ctypes.string_at(addr + offset, size)


def available() -> bool:
    return _IS_LINUX
