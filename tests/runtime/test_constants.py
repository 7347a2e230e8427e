"""The C executor and the Python side agree on every shared value.

``_fastspawn.c`` decodes the program ``calls.encode`` writes and sends the
control-socket frames ``watch.Control`` parses; both sides spell the
opcodes, flags, exit status and frame kinds by hand.  ``constants()`` is
what the C file was compiled with: these tests fail on the first value one
side changes without the other.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Dict

import pytest
from isolate_runtime import SetupError, spawn
from isolate_runtime import calls as K

_fastspawn: Any = getattr(spawn, "_fastspawn", None)
needs_c = pytest.mark.skipif(_fastspawn is None, reason="the C accelerator is not built on this platform")

OPCODES = ("PDEATHSIG", "CHECK_PPID", "SETSID", "WRITE", "UNSHARE", "MOUNT", "MKDIR", "MKDIRS", "SYMLINK", "TOUCH",
           "COPY", "PIVOT", "CHDIR", "UMOUNT", "RMDIR", "OVERLAY", "BIND", "REMOUNT_RO", "SETATTR_RO", "IF_EXISTS",
           "LO_UP", "SETHOSTNAME", "OPEN_UPPER", "OPEN_ROOT", "OPEN_SELF", "CALLER_PIDFD", "CHECK_CALLER",
           "DROP_CAPS", "SECCOMP", "SPAWN_INIT", "INIT_END", "SPAWN_PAYLOAD", "LISTEN", "RELAY")


def c_constants() -> Dict[str, int]:
    got: Dict[str, int] = _fastspawn.constants()
    return got


@needs_c
def test_every_opcode_has_the_same_number_on_both_sides() -> None:
    c = c_constants()
    assert {name: c[name] for name in OPCODES} == {name: getattr(K, name) for name in OPCODES}
    # and no opcode exists on one side only
    python_side = {v for k, v in vars(K).items() if k in OPCODES}
    assert python_side == set(range(1, len(OPCODES) + 1))


@needs_c
def test_flags_limits_and_exit_status_agree() -> None:
    c = c_constants()
    for name in ("MAX_ARGS", "MISSING_OK", "NOT_DUMPABLE", "BEST_EFFORT", "SETUP_EXIT", "MAX_LISTEN"):
        assert c[name] == getattr(K, name), name
    assert spawn.SETUP_EXIT == K.SETUP_EXIT


@needs_c
def test_frame_kinds_agree() -> None:
    c = c_constants()
    for name in ("FRAME_INIT", "FRAME_PAYLOAD", "FRAME_FAILED", "FRAME_READY"):
        assert bytes([c[name]]) == getattr(K, name), name


@needs_c
def test_the_raw_system_call_numbers_are_the_running_kernels() -> None:
    """The C file calls pidfd_open and close_range by number (older headers
    lack them): on this kernel those numbers must do those calls."""
    c = c_constants()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = libc.syscall(ctypes.c_long(c["SYS_PIDFD_OPEN"]), ctypes.c_long(os.getpid()), ctypes.c_long(0))
    if pidfd < 0 and ctypes.get_errno() == 38:  # ENOSYS: a kernel older than 5.3
        pytest.skip("this kernel has no pidfd_open")
    assert pidfd >= 0, os.strerror(ctypes.get_errno())
    assert os.readlink(f"/proc/self/fd/{pidfd}") == "anon_inode:[pidfd]"
    spare = os.dup(pidfd)
    r = libc.syscall(ctypes.c_long(c["SYS_CLOSE_RANGE"]), ctypes.c_uint(pidfd), ctypes.c_uint(spare), ctypes.c_uint(0))
    if r < 0 and ctypes.get_errno() == 38:
        os.close(pidfd)
        os.close(spare)
        pytest.skip("this kernel has no close_range")
    assert r == 0
    for fd in (pidfd, spare):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_call_with_more_arguments_than_the_wire_form_holds_is_refused() -> None:
    call = K.Call(K.MOUNT, "root filesystem", ("a", "b", "c", "d", "e"))
    with pytest.raises(ValueError) as e:
        K.encode([K.Call(K.SETSID, "session"), call])
    assert str(e.value) == ("sandbox program: call 1 (mount c on b) has 5 arguments, "
                            "at most 4 fit the wire form")


@needs_c
@pytest.mark.parametrize("wire", [
    pytest.param(bytes([K.SETSID, 0, 5, 0]) + bytes(8) + (bytes([2, 0, 0, 0]) + b"a\0") * 5, id="five-arguments"),
    pytest.param(bytes([99, 0, 0, 0]) + bytes(8), id="unknown-opcode"),
    pytest.param(bytes([K.WRITE, 0, 2, 0]) + bytes(8) + bytes([9, 0, 0, 0]) + b"short\0", id="cut-short"),
    pytest.param(bytes([K.WRITE, 0, 1, 0]) + bytes(8) + bytes([2, 0, 0, 0]) + b"ab", id="no-nul"),
])
def test_the_c_executor_refuses_a_malformed_program_before_it_forks(wire: bytes) -> None:
    """A program that does not decode to its last byte would otherwise stop
    part-way, in a child, with the rest of the setup silently not done."""
    before = set(os.listdir("/proc"))
    with pytest.raises(ValueError) as e:
        _fastspawn.sandbox(bytes([K.SETSID, 0, 0, 0]) + bytes(8) + wire, -1)
    assert str(e.value) == ("sandbox program: call 1 does not decode (unknown opcode, more than 4 arguments, "
                            "or cut short)")
    assert not [p for p in set(os.listdir("/proc")) - before if p.isdigit() and _is_child(int(p))]


def _is_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    except OSError:
        return False


def test_a_best_effort_write_that_fails_is_no_error(tmp_path: Path) -> None:
    """What only lowers a risk (the sandbox's OOM score) must not stop a
    sandbox on a host that refuses it; a plain write that fails does."""
    readonly = "/proc/version"  # exists, and no one may write it
    K.execute([K.Call(K.WRITE, "oom score", (readonly, "1\n"), K.BEST_EFFORT)])
    K.execute([K.Call(K.WRITE, "oom score", (str(tmp_path / "missing" / "x"), "1\n"), K.BEST_EFFORT)])
    with pytest.raises(SetupError) as e:
        K.execute([K.Call(K.WRITE, "oom score", (readonly, "1\n"), K.MISSING_OK)])
    assert e.value.step == "oom score"
