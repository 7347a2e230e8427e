"""The caller's side of one running sandbox: what it was told, and the wait.

Two channels reach the caller.  The *control socket* carries the setup's
messages (S's and P's pids, READY with the upper-layer fds, a failed call);
only the runtime's own code holds it, and it is closed before the payload
runs.  The *result channel* carries whatever the payload sends: untrusted,
decoded by :mod:`isolate_runtime.channel`.

The wait ends on kernel evidence only: the payload's proxy (the caller's
child whose exit status is the payload's) has been reaped, or the caller
has killed the sandbox (timeout, CPU budget, a protocol violation).  No
message from the sandbox ends it (DESIGN §5).
"""
from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Set, Tuple

from . import channel as ch
from . import written
from .cgroups import SandboxCgroup
from .errors import PayloadRaised, SetupError
from .program import Program
from .result import Outcome
from .spawn import DUMP_SIGNAL, Started

#: How long the caller waits for a killed sandbox's proxy to be reaped.
KILL_WAIT = 5.0
#: How often budgets are polled while nothing else happens.
POLL_EVERY = 0.02
#: Most bytes of stack dump kept.
DUMP_LIMIT = 1 << 20


class Control:
    """The control socket's messages, as they arrive (caller side)."""

    def __init__(self, sock: socket.socket, program: Program) -> None:
        self.sock = sock
        self.program = program
        self.s_pid: Optional[int] = None
        self.p_pid: Optional[int] = None
        self.layers = written.Layers()
        #: Per LISTEN of the program: 0, or why its listener was not made.
        self.listen_errnos: Tuple[int, ...] = ()
        self.error: Optional[SetupError] = None
        self.ready = False
        self.eof = False

    def read(self) -> None:
        """Read what is there, without blocking."""
        space = socket.CMSG_SPACE(2 * array.array("i").itemsize)
        while not self.eof:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(
                    1024, space, socket.MSG_DONTWAIT | getattr(socket, "MSG_CMSG_CLOEXEC", 0))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, anc = b"", []
            fds: List[int] = []
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(blob[:len(blob) - len(blob) % got.itemsize])
                    fds.extend(got)
            if not data:
                for fd in fds:
                    os.close(fd)
                self.eof = True
                return
            self._message(data, fds)

    def _message(self, data: bytes, fds: List[int]) -> None:
        kind, body = data[:1], data[1:]
        if kind == b"R" and len(body) >= 32 and len(body) % 4 == 0 and not self.ready:
            figures = struct.unpack(">qqqq", body[:32])
            self.listen_errnos = struct.unpack(f">{(len(body) - 32) // 4}i", body[32:])
            it = iter(fds)
            upper = next(it) if figures[0] >= 0 else None
            root = next(it, None) if figures[2] >= 0 else None
            self.layers = written.receive(upper, root, figures)
            self.ready = True
            fds = list(it)
        elif kind in (b"I", b"C") and len(body) == 4:
            pid = struct.unpack(">i", body)[0]
            if kind == b"I":
                self.s_pid = pid
            else:
                self.p_pid = pid
        elif kind == b"X" and len(body) == 8 and self.error is None:
            index, err = struct.unpack(">Ii", body)
            call = self.program.call(index)
            if call is None:
                self.error = SetupError("sandbox", err, f"call {index} of the setup")
            else:
                from .calls import failure

                self.error = failure(call, err)
        elif kind == b"E" and self.error is None:
            try:
                e = json.loads(body)
                self.error = SetupError(str(e["step"]), int(e["errno"]), str(e["detail"]), str(e.get("hint", "")))
            except (ValueError, KeyError, TypeError):
                self.error = SetupError("sandbox", 0, "a setup error that could not be read")
        for fd in fds:  # nothing else ever carries a descriptor
            os.close(fd)


@dataclass
class Observation:
    """What the caller saw of one sandbox, up to its end."""

    #: The payload's wait status, from the kernel (None: never reaped).
    status: Optional[int] = None
    #: The proxy's resource usage from wait4 (every reaped descendant).
    rusage: Any = None
    #: Set when the caller ended the sandbox itself.
    forced: Optional[Outcome] = None
    #: Why (a CPU-budget or protocol-violation reason).
    reason: str = ""
    has_value: bool = False
    value: Any = None
    raised: Optional[PayloadRaised] = None
    dump: str = ""
    #: When the payload was released, and when the wait ended.
    started: float = 0.0
    ended: float = 0.0
    setup_error: Optional[SetupError] = None
    messages: int = field(default=0)
    #: The caller's children of this sandbox that were reaped here.
    reaped: Set[int] = field(default_factory=set)


def _pidfd(pid: int) -> Optional[int]:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def reap(pid: int, timeout: float = 0.0) -> Optional[Tuple[int, Any]]:
    """``(status, rusage)`` of the caller's child ``pid`` once it exited;
    ``None`` if it has not within ``timeout``.  A child reaped by someone
    else reads as ``(0, None)``."""
    end = time.perf_counter() + timeout
    while True:
        try:
            got, status, rusage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return (0, None)
        except InterruptedError:  # pragma: no cover
            continue
        if got == pid:
            return (status, rusage)
        if time.perf_counter() >= end:
            return None
        time.sleep(0.002)


def _signal(pid: Optional[int], sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def kill(started: Started, control: Control, cg: SandboxCgroup) -> None:
    """End the whole sandbox now: PID 1 (the kernel then kills its
    namespace), the payload, every process in its cgroup.  Only pids the
    runtime's own code reported, or the kernel gave, are signalled."""
    _signal(control.s_pid, signal.SIGKILL)
    _signal(control.p_pid, signal.SIGKILL)
    if not started.c_executor or control.p_pid is None:
        _signal(started.a_pid, signal.SIGKILL)
    try:
        cg.doom()
    except Exception:  # noqa: S110 - the kills above are the backstop
        pass


class Watch:
    """One sandbox's wait, from its release to its end."""

    def __init__(self, started: Started, control: Control, cg: SandboxCgroup, timeout: Optional[float],
                 grace: float, limit: int) -> None:
        self.started = started
        self.control = control
        self.cg = cg
        self.timeout = timeout
        self.grace = grace
        self.reader = ch.FrameReader(started.chan_r, limit)
        self.obs = Observation()
        self._pidfd: Optional[int] = None
        self._killed = False
        self._roots: Set[int] = set()
        #: Called once the payload has ended and its sandbox is being
        #: killed (the network relay closes its side meanwhile).
        self.on_end: Optional[Callable[[], None]] = None

    # ---------------------------------------------------------------- who is who

    @property
    def proxy(self) -> Optional[int]:
        """The caller's child whose exit status is the payload's."""
        if self.started.c_executor:
            return self.control.p_pid
        return self.started.a_pid

    def kill(self) -> None:
        self._killed = True
        kill(self.started, self.control, self.cg)

    # ---------------------------------------------------------------- the wait

    def run(self, t0: float, on_message: Optional[ch.OnMessage]) -> Observation:
        obs = self.obs
        obs.started = t0
        os.set_blocking(self.started.chan_r, False)
        os.set_blocking(self.started.dump_r, False)
        deadline = t0 + self.timeout if self.timeout else None
        ctl = self.started.ctl
        try:
            while obs.status is None:
                if self._pidfd is None and self.proxy is not None and not self._killed:
                    self._pidfd = _pidfd(self.proxy)
                wait = POLL_EVERY
                if deadline is not None and obs.forced is None:
                    wait = max(0.0, min(wait, deadline - time.perf_counter()))
                fds: List[Any] = []
                if not self.control.eof:
                    fds.append(ctl)
                if not self.reader.eof:
                    fds.append(self.started.chan_r)
                if self._pidfd is not None:
                    fds.append(self._pidfd)
                try:
                    ready, _, _ = select.select(fds, [], [], wait)
                except InterruptedError:  # pragma: no cover
                    ready = []
                if ctl in ready:
                    self.control.read()
                    self._after_control()
                if self.started.chan_r in ready:
                    self._read(on_message, self.reader.read_available)
                if self.proxy is not None and (self._pidfd is None or self._pidfd in ready or self._killed):
                    got = reap(self.proxy, KILL_WAIT if self._killed else 0.0)
                    if got is not None:
                        obs.status, obs.rusage = got
                        obs.reaped.add(self.proxy)
                        break
                    if self._killed:
                        break  # unkillable (uninterruptible sleep): give up waiting
                if self._killed and self.proxy is None:
                    break
                if obs.forced is None:
                    reason = self.cg.poll()
                    if reason:
                        obs.forced, obs.reason = Outcome.CPU_BUDGET, reason
                        self.kill()
                    elif deadline is not None and time.perf_counter() >= deadline:
                        obs.forced = Outcome.TIMEOUT
                        self._dump()
                        self.kill()
            obs.ended = time.perf_counter()
            # The payload is gone: nothing it started may run on (DESIGN:
            # nothing of a test outlives it).  Its PID 1 and whatever is left
            # die beside the caller; their teardown is not waited for here.
            if not self._killed:
                self.kill()
            if self.on_end is not None:
                self.on_end()
            self._drain(on_message)
            self._read_dump()
        except BaseException:
            self.kill()
            if self.proxy is not None and reap(self.proxy, KILL_WAIT) is not None:
                obs.reaped.add(self.proxy)
            raise
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return obs

    def _after_control(self) -> None:
        c = self.control
        for pid in (c.s_pid, c.p_pid):
            if pid and pid not in self._roots:
                self._roots.add(pid)
                self.cg.set_root_pid(pid)
        if c.error is not None and self.obs.setup_error is None:
            self.obs.setup_error = c.error
            self.kill()
        elif c.eof and self.proxy is None and self.obs.setup_error is None:
            # the setup ended without naming the payload: A died
            got = reap(self.started.a_pid, 1.0)
            if got is not None:
                self.obs.reaped.add(self.started.a_pid)
            detail = "the sandbox's setup process ended without a word"
            if got is not None and got[1] is not None:
                detail += f" ({_describe_status(got[0])})"
            self.obs.setup_error = SetupError("sandbox", 0, detail)
            self.kill()

    def _read(self, on_message: Optional[ch.OnMessage], read: Any) -> None:
        if self.obs.forced is Outcome.REJECTED:
            return
        try:
            for kind, value in read():
                self._dispatch(kind, value, on_message)
        except ch.ProtocolViolation as e:
            self.obs.forced, self.obs.reason = Outcome.REJECTED, e.reason
            if not self._killed:
                self.kill()

    def _dispatch(self, kind: int, value: Any, on_message: Optional[ch.OnMessage]) -> None:
        obs = self.obs
        if kind == ch.MESSAGE:
            obs.messages += 1
            if on_message is not None:
                on_message(value)
        elif obs.has_value or obs.raised is not None:
            raise ch.ProtocolViolation("a second result")
        elif kind == ch.RESULT:
            obs.has_value, obs.value = True, value
        elif kind == ch.RAISED:
            if not (isinstance(value, dict) and all(isinstance(value.get(k), str)
                                                    for k in ("type", "module", "message", "traceback"))):
                raise ch.ProtocolViolation("a malformed exception report")
            obs.raised = PayloadRaised(value["type"], value["module"], value["message"], value["traceback"])

    def _drain(self, on_message: Optional[ch.OnMessage]) -> None:
        """What the payload wrote before it ended is in the pipe: read it,
        bounded, without waiting for writers that are being killed."""
        if self.reader.eof:
            return
        for _ in range(64):
            before = self.reader.consumed
            self._read(on_message, self.reader.read_available)
            if self.reader.eof or self.obs.forced is Outcome.REJECTED or self.reader.consumed == before:
                break

    def _dump(self) -> None:
        """Ask the payload for the stacks of all its threads; wait for the
        text to stop coming, at most the grace period."""
        _signal(self.control.p_pid, DUMP_SIGNAL)
        out = b""
        end = time.perf_counter() + max(0.05, min(self.grace, 5.0))
        quiet_since: Optional[float] = None
        while time.perf_counter() < end and len(out) < DUMP_LIMIT:
            ready, _, _ = select.select([self.started.dump_r], [], [], 0.02)
            chunk = b""
            if ready:
                try:
                    chunk = os.read(self.started.dump_r, 65536)
                except (BlockingIOError, OSError):
                    chunk = b""
            if chunk:
                out += chunk
                quiet_since = None
                continue
            if out:
                quiet_since = quiet_since or time.perf_counter()
                if time.perf_counter() - quiet_since > 0.05:
                    break
        self._dumped = out

    def _read_dump(self) -> None:
        out = getattr(self, "_dumped", b"")
        try:
            out += os.read(self.started.dump_r, DUMP_LIMIT)
        except (BlockingIOError, OSError):
            pass
        self.obs.dump = trim_dump(out[:DUMP_LIMIT].decode("utf-8", "replace"))


def trim_dump(text: str) -> str:
    """Drop the frames below the payload (the runtime's own, and the caller's
    that the fork inherited) from each thread's faulthandler stack."""
    out: List[str] = []
    skipping = False
    for line in text.splitlines():
        if not line.startswith("  "):  # "Current thread ..." / "Thread ..." / blank
            skipping = False
        elif skipping or f"{os.sep}isolate_runtime{os.sep}" in line:
            skipping = True
            continue
        out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"
