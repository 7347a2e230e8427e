"""Starting one sandbox: its program run by one of two executors, and the
payload's side of the process tree.

The C executor (``_fastspawn.sandbox``) runs the whole program without the
interpreter and makes S (PID 1) and P (the payload) children of the caller
sharing A's one copy of the caller's memory (see ``_fastspawn.c``).  The
Python executor runs the same program with ``os.fork``::

    caller
     └─ A   the program's A sections; then waits for P and leaves the
         │  world the way P did (same exit status, same signal), so that
         │  the caller's wait on A tells the payload's status
         ├─ S  PID 1 (A's child): the init section, then reaps
         └─ P  PID 2 (A's child): the payload

A stays alive there because P is a separate copy that A may safely outlive
(no memory is shared; A is outside the PID namespace, where the payload
cannot name it).  In both, the caller waits for the *proxy*: the child of
the caller whose exit status is the payload's (P itself, or A).

Setup messages travel on a separate control socket (``SOCK_SEQPACKET``)
that only the runtime's own code holds, and that is closed before the
payload runs a single instruction of its own::

    'I' pid     S's pid (host)                 'C' pid   P's pid (host)
    'X' i e     call i of the program failed with errno e
    'E' json    a setup error raised in Python (step, errno, detail, hint)
    'R' ...     READY: how full the upper layer and the root are (int64 x4),
                with the upper and root directory fds attached (SCM_RIGHTS);
                then the errno of each LISTEN (int32 each; 0: its listener
                was made and sent to the network relay)
"""
from __future__ import annotations

import array
import errno as _errno
import faulthandler
import gc
import json
import os
import signal
import socket
import struct
import sys
import traceback
from dataclasses import dataclass
from typing import List, NoReturn, Set, Tuple

from . import calls as K
from . import channel as ch
from .cgroups import SandboxCgroup
from .errors import SetupError
from .program import Program
from .spec import CallablePayload, CommandPayload, SandboxSpec

#: Exit status of A (or S, or P before its payload) when setup failed.
SETUP_EXIT = K.SETUP_EXIT
#: Signal that makes a callable payload dump the stacks of all its threads.
DUMP_SIGNAL = signal.SIGUSR2

SPAWN_ENV = "ISOLATE_RUNTIME_SPAWN"
SPAWN_MODES = ("auto", "fork")

if sys.platform.startswith("linux"):
    # Load these in the caller once: importing (or resolving libc) in every
    # forked child costs milliseconds per sandbox.
    import resource  # noqa: F401

    from . import _syscalls, namespaces, network  # noqa: F401
    from ._deps import import_prctl

    import_prctl()

    _syscalls.libc()

try:
    from . import _fastspawn  # type: ignore[attr-defined]

    if not hasattr(_fastspawn, "sandbox"):  # pragma: no cover - a stale build of an older version
        _fastspawn = None
except ImportError:  # pragma: no cover - not built on this platform
    _fastspawn = None

# Bound at import: a payload that mocks these must not change what the
# runtime's own code in the sandbox does (the payload's monkeypatch of
# os._exit would otherwise decide how its sandbox reports its end).
_os_exit = os._exit
_os_close = os.close
_os_read = os.read
_os_getpid = os.getpid


def spawn_mode() -> str:
    mode = os.environ.get(SPAWN_ENV, "") or "auto"
    if mode not in SPAWN_MODES:
        raise SetupError("spawn", 0, f"{SPAWN_ENV}={mode!r} (from the environment) is not one of: "
                         f"{', '.join(SPAWN_MODES)}", f"unset {SPAWN_ENV} or set it to 'fork'")
    return mode


def c_executor_for(spec: SandboxSpec, pid_applied: bool) -> bool:
    """Does the C executor run this sandbox?  (It needs a PID namespace:
    without one there is no PID 1 to share A's memory with.)"""
    return _fastspawn is not None and pid_applied and spawn_mode() != "fork"


@dataclass
class Started:
    """The caller's handles on a sandbox being set up."""

    #: A's pid: the caller's first child of this sandbox.
    a_pid: int
    #: Whether the C executor runs it (S and P are then the caller's children too).
    c_executor: bool
    #: The caller's end of the control socket.
    ctl: socket.socket
    #: Read end of the result channel.
    chan_r: int
    #: Read end of the stack-dump pipe.
    dump_r: int
    #: Write end of the gate of a held sandbox (-1: not held).
    gate_w: int


#: File descriptors this process holds for sandboxes in flight: a sandbox
#: forked meanwhile closes them first, so no sandbox holds another's.
parent_fds: Set[int] = set()


def forget_fd(fd: int) -> None:
    if fd < 0:
        return
    parent_fds.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass


def start(spec: SandboxSpec, program: Program, cg: SandboxCgroup, c_executor: bool, hold: bool) -> Started:
    """Fork the sandbox for ``spec``; returns in the caller only."""
    ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    chan_r, chan_w = os.pipe()
    dump_r, dump_w = os.pipe()
    gate_r = gate_w = -1
    if hold:
        gate_r, gate_w = os.pipe()
    mine = [ctl.fileno(), chan_r, dump_r] + ([gate_w] if gate_w >= 0 else [])
    parent_fds.update(mine)
    child_fds = (ctl_child.fileno(), chan_w, dump_w, gate_r)
    wire = program.encode() if c_executor else b""
    gc.freeze()  # the child's collections then skip every inherited object
    try:
        if c_executor:
            assert _fastspawn is not None
            pid = _fastspawn.sandbox(wire, child_fds[0])
        else:
            from ._syscalls import fork

            pid = fork()
            if pid == 0:
                _python_a(spec, program, cg, child_fds)
        if pid == 0:  # P of the C executor
            _payload(spec, cg, child_fds)
    finally:
        gc.unfreeze()
        ctl_child.close()
        for fd in (chan_w, dump_w, gate_r):
            if fd >= 0:
                os.close(fd)
    return Started(pid, c_executor, ctl, chan_r, dump_r, gate_w)


# ------------------------------------------------------------------ the Python executor

def _send(ctl_fd: int, data: bytes) -> None:
    try:
        os.write(ctl_fd, data)
    except OSError:
        pass


def _report(ctl_fd: int, err: SetupError) -> None:
    if err.index is not None:
        _send(ctl_fd, K.FRAME_FAILED + struct.pack(">Ii", err.index, err.errno))
    else:
        body = json.dumps({"step": err.step, "errno": err.errno, "detail": err.detail, "hint": err.hint})
        _send(ctl_fd, K.FRAME_RAISED + body.encode())


def _setup_failed(ctl_fd: int, exc: BaseException, step: str) -> NoReturn:
    err = exc if isinstance(exc, SetupError) else SetupError(step, getattr(exc, "errno", 0) or 0,
                                                             f"{type(exc).__name__}: {exc}")
    _report(ctl_fd, err)
    _os_exit(SETUP_EXIT)


def _python_a(spec: SandboxSpec, program: Program, cg: SandboxCgroup, fds: Tuple[int, int, int, int]) -> None:
    """A of the Python executor; returns only in P (into the payload)."""
    ctl_fd = fds[0]
    close_parent_fds(keep=program.relay_fd)  # RELAY sends the listeners on it, then closes it
    state = K.ExecState()
    a, s, a2, p = program.sections()
    try:
        K.execute(a, state, program.first_index(0))
        sync_r, sync_w = os.pipe()
        from ._syscalls import fork

        s_pid = fork()
        if s_pid == 0:
            _python_s(program, s, state, ctl_fd, sync_r, sync_w)
        os.close(sync_w)
        _send(ctl_fd, K.FRAME_INIT + struct.pack(">i", s_pid))
        got = os.read(sync_r, 65536)
        os.close(sync_r)
        if got != b"K":
            if got[:1] == K.FRAME_FAILED or got[:1] == K.FRAME_RAISED:
                _send(ctl_fd, got)
            else:
                _send(ctl_fd, K.FRAME_FAILED + struct.pack(">Ii", program.first_index(1), _errno.EIO))
            os.kill(s_pid, signal.SIGKILL)
            _os_exit(SETUP_EXIT)
        K.execute(a2, state, program.first_index(2))
        _send_ready(ctl_fd, state)
        p_pid = fork()
        if p_pid == 0:
            for fd in (state.upper_fd, state.root_fd, state.self_fd):
                if fd >= 0:
                    os.close(fd)
            K.execute(p, state, program.first_index(3))
            if state.caller_pidfd >= 0:
                os.close(state.caller_pidfd)
            _payload(spec, cg, fds)
        _send(ctl_fd, K.FRAME_PAYLOAD + struct.pack(">i", p_pid))
    except BaseException as e:
        _setup_failed(ctl_fd, e, "sandbox")
    # A, the relay: nothing of the sandbox's is A's to hold any more.
    for fd in fds + (state.upper_fd, state.root_fd, state.self_fd, state.caller_pidfd):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    _relay(p_pid)


def _relay(pid: int) -> NoReturn:
    """Wait for P and end exactly as it did (exit status or signal)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            _os_exit(SETUP_EXIT)
        except InterruptedError:  # pragma: no cover
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the core, if any, was P's
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
                signal.signal(sig, signal.SIG_DFL)
            os.kill(_os_getpid(), sig)
        except (OSError, ValueError):
            pass
        _os_exit(128 + sig)
    _os_exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _python_s(program: Program, section: List[K.Call], state: K.ExecState, ctl_fd: int, sync_r: int,
              sync_w: int) -> NoReturn:
    """S of the Python executor: PID 1."""
    os.close(sync_r)
    os.close(ctl_fd)
    try:
        K.execute(section, state, program.first_index(1))
    except BaseException as e:
        if isinstance(e, SetupError) and e.index is not None:
            msg = K.FRAME_FAILED + struct.pack(">Ii", e.index, e.errno)
        else:
            step = e.step if isinstance(e, SetupError) else "init"
            body = {"step": step, "errno": getattr(e, "errno", 0) or 0, "detail": str(e), "hint": ""}
            msg = K.FRAME_RAISED + json.dumps(body).encode()
        os.write(sync_w, msg)
        _os_exit(SETUP_EXIT)
    os.write(sync_w, b"K")
    try:
        _init_loop()
    finally:
        _os_exit(SETUP_EXIT)  # never back into A's code


def _init_loop() -> None:
    """PID 1 holds nothing (no descriptor: not the caller's capture files,
    not the channel) and only reaps, with every signal blocked."""
    os.closerange(0, 1 << 16)
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG | getattr(os, "__WALL", 0x40000000))[0] > 0:
                pass
        except ChildProcessError:
            pass
        except InterruptedError:  # pragma: no cover
            continue
        signal.sigtimedwait([signal.SIGCHLD], 1.0)


def _send_ready(ctl_fd: int, state: K.ExecState) -> None:
    figures = [-1, -1, -1, -1]
    fds = []
    for i, fd in enumerate((state.upper_fd, state.root_fd)):
        if fd >= 0:
            st = os.fstatvfs(fd)
            figures[2 * i] = st.f_files - st.f_ffree
            figures[2 * i + 1] = st.f_blocks - st.f_bfree
            fds.append(fd)
    msg = K.FRAME_READY + struct.pack(">qqqq", *figures)
    msg += struct.pack(f">{len(state.listeners)}i", *(err for _fd, err in state.listeners))
    sock = socket.socket(fileno=os.dup(ctl_fd))
    try:
        sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
    finally:
        sock.close()


# ------------------------------------------------------------------ the payload's side

def close_parent_fds(keep: int = -1) -> None:
    """In a freshly forked sandbox process: drop the caller's ends of the
    other sandboxes' pipes (and of this one's), and of the network relay's
    control socket (but ``keep``)."""
    for fd in parent_fds:
        if fd == keep:
            continue
        try:
            os.close(fd)
        except OSError:
            pass
    parent_fds.clear()


def _withhold(fds: Tuple[int, ...]) -> None:
    """Point each of the caller's descriptors ``fds`` (that is open) at
    /dev/null, for reading and writing."""
    if not fds:
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in fds:
            if fd == null:
                continue
            try:
                os.fstat(fd)
            except OSError:
                continue  # not open: nothing to take away
            os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _listening_inherited() -> Tuple[int, ...]:
    """The stream sockets this process holds past fds 0-2 that listen or
    could (not connected): in a sandbox before its payload runs, every one
    of them is the caller's (the relay's listeners inside were closed by
    A).  Holding a listening one, the payload could accept the connections
    meant for the caller's server (other sandboxes' among them) or shut it
    down; one the caller's thread is about to make listen would be the
    same a moment later, and one not yet bound would listen in the
    caller's network.  The services stay reachable as services."""
    import stat

    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    out = []
    for fd in fds:
        if fd <= 2:
            continue
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) not in (socket.SOCK_STREAM,
                                                                               socket.SOCK_SEQPACKET):
                    continue
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    try:
                        sock.getpeername()
                        continue  # connected: a client's, not a server's
                    except OSError:
                        pass
                out.append(fd)
        except OSError:  # not open (the listing's own descriptor), or not a socket after all
            continue
    return tuple(out)


def _chdir(spec: SandboxSpec) -> None:
    cwd = spec.cwd or os.getcwd()
    try:
        os.chdir(cwd)
    except OSError:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)


def _payload(spec: SandboxSpec, cg: SandboxCgroup, fds: Tuple[int, int, int, int]) -> NoReturn:
    """P: the rest of the payload's setup in Python, then the payload.
    Never returns: a forked child must not fall back into the caller's code."""
    ctl_fd, chan_w, dump_w, gate_r = fds
    code = SETUP_EXIT
    try:
        close_parent_fds()
        _withhold(spec.withhold_fds)
        _withhold(_listening_inherited())
        _chdir(spec)
        if sys.platform.startswith("linux"):
            import resource

            for res, limit in cg.child_rlimits():
                resource.setrlimit(res, (limit, limit))
    except BaseException as e:
        _setup_failed(ctl_fd, e, "payload")
    # The runtime's own part is over: nothing trusted is left in this process.
    _os_close(ctl_fd)
    try:
        if gate_r >= 0:
            # Held by prepare(): wait for the release (EOF: the caller is gone).
            try:
                released = _os_read(gate_r, 1)
            except OSError:
                released = b""
            _os_close(gate_r)
            if not released:
                _os_exit(0)  # nobody is left to read a result
        code = _run(spec, chan_w, dump_w)
    finally:
        _os_exit(code)


def _run(spec: SandboxSpec, chan_w: int, dump_w: int) -> int:
    payload = spec.payload
    if isinstance(payload, CommandPayload):
        env = dict(payload.env) if payload.env is not None else dict(os.environ)
        try:
            os.execvpe(payload.argv[0], list(payload.argv), env)
        except OSError as e:
            os.write(2, f"isolate_runtime: cannot execute {payload.argv[0]!r}: {e.strerror}\n".encode())
        return 127
    assert isinstance(payload, CallablePayload)
    faulthandler.register(DUMP_SIGNAL, file=dump_w, all_threads=True, chain=False)
    ch.set_write_fd(chan_w, spec.message_limit_bytes)
    try:
        value = payload.fn(*payload.args, **dict(payload.kwargs))
    except BaseException as exc:
        cls = type(exc)
        ch.send(ch.RAISED, {"type": cls.__qualname__, "module": cls.__module__, "message": _text(exc),
                            "traceback": traceback.format_exc()})
        return 1
    try:
        ch.send(ch.RESULT, value)
    except (TypeError, ValueError) as e:
        ch.send(ch.RAISED, {"type": "PayloadLost", "module": "isolate_runtime.errors",
                            "message": f"the return value could not be sent: {e}", "traceback": ""})
        return 1
    return 0


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a __str__ that raises
        return repr(type(exc))
