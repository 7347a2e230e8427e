"""The caller's side of one running sandbox: what it was told, and the wait.

Two channels reach the caller.  The *control socket* carries the setup's
messages (S's and P's pids, READY with the upper-layer fds, a failed call);
only the runtime's own code holds it, and it is closed before the payload
runs.  The *result channel* carries whatever the payload sends: untrusted,
decoded by :mod:`isolate_runtime.channel`.

The wait ends on kernel evidence only: the payload's proxy (the caller's
child whose exit status is the payload's) has been reaped, or the caller
has killed the sandbox (timeout, CPU budget, a protocol violation).  No
message from the sandbox ends it: the sandbox's code is the test's, and a
test that could say "I am done" could also say it while its children run on.
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
from typing import Any, Callable, Collection, List, Optional, Set, Tuple

from . import calls as K
from . import channel as ch
from . import spawn, written
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
        if kind == K.FRAME_READY and len(body) >= 32 and len(body) % 4 == 0 and not self.ready:
            figures = struct.unpack(">qqqq", body[:32])
            self.listen_errnos = struct.unpack(f">{(len(body) - 32) // 4}i", body[32:])
            it = iter(fds)
            upper = next(it) if figures[0] >= 0 else None
            root = next(it, None) if figures[2] >= 0 else None
            self.layers = written.receive(upper, root, figures)
            # a sandbox forked while this one runs must not reach its layers
            spawn.parent_fds.update(fd for fd in (upper, root) if fd is not None)
            self.ready = True
            fds = list(it)
        elif kind in (K.FRAME_INIT, K.FRAME_PAYLOAD) and len(body) == 4:
            pid = struct.unpack(">i", body)[0]
            if kind == K.FRAME_INIT:
                self.s_pid = pid
            else:
                self.p_pid = pid
        elif kind == K.FRAME_FAILED and len(body) == 8 and self.error is None:
            index, err = struct.unpack(">Ii", body)
            call = self.program.call(index)
            if call is None:
                self.error = SetupError("sandbox", err, f"call {index} of the setup")
            else:
                self.error = K.failure(call, err)
        elif kind == K.FRAME_RAISED and self.error is None:
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


def kill(started: Started, control: Control, cg: SandboxCgroup, reaped: Collection[int] = (),
         everything: bool = True) -> None:
    """End the whole sandbox now: its PID 1 (the kernel then kills the
    namespace) and, with ``everything``, every process in its cgroup too.

    Only the caller's own children are signalled, and only before they are
    reaped (a reaped pid may belong to another process by now): with the C
    executor S and P are the caller's children; with the Python executor
    they are A's, and die with A (parent-death signal)."""
    targets = [started.a_pid]
    if started.c_executor:
        targets += [control.s_pid or 0, control.p_pid or 0]
    for pid in targets:
        if pid and pid not in reaped:
            _signal(pid, signal.SIGKILL)
    if everything:
        try:
            cg.doom()
        except Exception:  # noqa: S110 - the kills above are the backstop
            pass


class Watch:
    """One sandbox's wait, from its release to its end."""

    def __init__(self, started: Started, control: Control, cg: SandboxCgroup, timeout: Optional[float],
                 grace: float, limit: int, pid_namespace: bool = True) -> None:
        self.started = started
        self.control = control
        self.cg = cg
        self.timeout = timeout
        self.grace = grace
        #: The sandbox has a PID namespace (killing its PID 1 ends it all).
        self.pid_namespace = pid_namespace
        self.reader = ch.FrameReader(started.chan_r, limit)
        self.obs = Observation()
        self._pidfd: Optional[int] = None
        self._killed = False
        #: When the keeper saw it end or killed it (launcher.busy).
        self._end_at: Optional[float] = None
        self._roots: Set[int] = set()
        self._on_message: Optional[ch.OnMessage] = None
        self._deadline: Optional[float] = None
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

    def handover(self) -> Optional[Tuple[Optional[float], float, int, List[int]]]:
        """(deadline or None, grace, the bytes of the result channel it may
        still send, descriptors: copies of the dump pipe's and the result
        channel's read ends, the payload's pidfd, then those of every
        process a kill ends) for the keeper to watch this sandbox while the
        caller is busy (launcher.busy); None once nothing is left to watch.
        The descriptors are the caller's to close."""
        if self.obs.forced is not None or self._killed:
            return None
        c = self.control
        # Released a moment ago, its setup may not have named the payload
        # yet: a few milliseconds, waited for here (bounded).
        end = time.perf_counter() + 1.0
        while not c.p_pid and not c.eof and c.error is None and time.perf_counter() < end:
            select.select([self.started.ctl], [], [], max(0.0, end - time.perf_counter()))
            c.read()
            self._after_control()
        if not c.p_pid or c.p_pid in self.obs.reaped:
            return None
        payload = _pidfd(c.p_pid)
        if payload is None:
            return None
        fds = [os.dup(self.started.dump_r), os.dup(self.started.chan_r), payload]
        targets = [c.p_pid, self.started.a_pid]
        if self.started.c_executor:
            targets.append(c.s_pid or 0)
        for pid in targets:
            fd = _pidfd(pid) if pid and pid not in self.obs.reaped else None
            if fd is not None:
                fds.append(fd)
        room = self.reader.limit - self.reader.consumed - self.reader.buffered + 1
        return (self._deadline, self.grace, max(0, room), fds)

    def taken_back(self, drained: bytes, ended_at: Optional[float], killed_at: Optional[float],
                   fired: bool) -> None:
        """The keeper watched this sandbox while the caller was busy
        (launcher.busy): ``drained``, what it read of the result channel,
        comes first; ``ended_at``, when it saw the payload end; ``fired``:
        it met the deadline, asked for the stacks (in the dump pipe now)
        and killed the sandbox at ``killed_at`` (None: it was about to:
        killed here, now)."""
        if drained:
            self._read(self._on_message, lambda: self.reader.feed(drained))
        if fired:
            if self.obs.forced is None:
                self.obs.forced = Outcome.TIMEOUT
            self._end_at = killed_at
            running = self._pidfd is not None and not select.select([self._pidfd], [], [], 0)[0]
            if running:  # still writing its stacks, perhaps: the rest of its grace
                self._dump(ask=False)
            self.kill()
        elif ended_at is not None:
            self._end_at = ended_at

    def kill(self, everything: bool = True) -> None:
        self._killed = True
        kill(self.started, self.control, self.cg, self.obs.reaped, everything)

    # ---------------------------------------------------------------- the wait
    #
    # begin(), then step() whenever one of fds() is ready or wait_for() has
    # passed, until step() says the sandbox has ended; then finish().  run()
    # does exactly that for one sandbox; a caller with many in flight
    # selects over all their fds at once (launcher.wait_any).

    def run(self, t0: float, on_message: Optional[ch.OnMessage]) -> Observation:
        self.begin(t0, on_message)
        try:
            while True:
                try:
                    ready, _, _ = select.select(self.fds(), [], [], self.wait_for())
                except InterruptedError:  # pragma: no cover
                    ready = []
                if self.step(set(ready)):
                    break
        except BaseException:
            self.abort()
            raise
        return self.finish()

    def begin(self, t0: float, on_message: Optional[ch.OnMessage]) -> None:
        self.obs.started = t0
        self._on_message = on_message
        self._deadline = t0 + self.timeout if self.timeout else None
        os.set_blocking(self.started.chan_r, False)
        os.set_blocking(self.started.dump_r, False)

    def fds(self) -> List[Any]:
        """What to wait on now: the control socket until its end, the
        channel until its end, the payload's pidfd once its pid is known."""
        if self._pidfd is None and self.proxy is not None and not self._killed:
            self._pidfd = _pidfd(self.proxy)
            if self._pidfd is not None:
                spawn.parent_fds.add(self._pidfd)
        out: List[Any] = []
        if not self.control.eof:
            out.append(self.started.ctl)
        if not self.reader.eof:
            out.append(self.started.chan_r)
        if self._pidfd is not None:
            out.append(self._pidfd)
        return out

    def wait_for(self) -> float:
        """Seconds until this sandbox needs a step even if nothing is ready
        (its budget poll, its deadline)."""
        wait = POLL_EVERY
        if self._deadline is not None and self.obs.forced is None:
            wait = max(0.0, min(wait, self._deadline - time.perf_counter()))
        return wait

    def step(self, ready: Set[Any]) -> bool:
        """Handle what is ready; True once the sandbox has ended (the
        payload's proxy reaped, or given up on after a kill)."""
        obs = self.obs
        if self.started.ctl in ready or self.started.ctl.fileno() in ready:
            self.control.read()
            self._after_control()
        if self.started.chan_r in ready:
            self._read(self._on_message, self.reader.read_available)
        if self.proxy is not None and (self._pidfd is None or self._pidfd in ready or self._killed):
            got = reap(self.proxy, KILL_WAIT if self._killed else 0.0)
            if got is not None:
                obs.status, obs.rusage = got
                obs.reaped.add(self.proxy)
                return True
            if self._killed:
                return True  # unkillable (uninterruptible sleep): give up waiting
        if self._killed and self.proxy is None:
            return True
        if obs.forced is None:
            reason = self.cg.poll()
            if reason:
                obs.forced, obs.reason = Outcome.CPU_BUDGET, reason
                self.kill()
            elif self._deadline is not None and time.perf_counter() >= self._deadline:
                obs.forced = Outcome.TIMEOUT
                self._dump()
                self.kill()
        return False

    def finish(self) -> Observation:
        """After the end: kill what is left, read what was said last."""
        obs = self.obs
        try:
            obs.ended = self._end_at or time.perf_counter()
            # The payload is gone: nothing it started may run on (nothing
            # of a test outlives it).  Its PID 1 and whatever is left die
            # beside the caller; their teardown is not waited for here.
            if not self._killed:
                # PID 1's death takes its namespace along; the cgroup is
                # emptied by the kernel with it (no need to walk it here)
                self.kill(everything=not self.pid_namespace)
            if self.on_end is not None:
                self.on_end()
            # What the setup said last (a failure of the payload's own
            # setup comes just before its exit) is in the socket by now.
            self.control.read()
            if self.control.error is not None and obs.setup_error is None:
                obs.setup_error = self.control.error
            self._drain(self._on_message)
            self._read_dump()
        except BaseException:
            self.abort()
            raise
        finally:
            self._close_pidfd()
        return obs

    def abort(self) -> None:
        """The caller gives up on this sandbox (an exception of its own):
        kill it and reap what can be reaped."""
        self.kill()
        if self.proxy is not None and self.proxy not in self.obs.reaped and reap(self.proxy, KILL_WAIT) is not None:
            self.obs.reaped.add(self.proxy)
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            spawn.forget_fd(self._pidfd)
            self._pidfd = None

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

    def _dump(self, ask: bool = True) -> None:
        """Ask the payload for the stacks of all its threads; wait for the
        text to stop coming, at most the grace period."""
        if ask:
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
