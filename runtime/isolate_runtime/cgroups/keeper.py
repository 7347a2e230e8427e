"""Making and removing sandbox cgroups beside the caller, not on its thread.

Creating a cgroup costs a few hundred microseconds per hierarchy (a v1
memory cgroup allocates its per-CPU state: ~0.4 ms each here, ~2 ms for the
five directories of one sandbox on a hybrid host), and removing one about
half that.  Both are pure kernel work the caller need not wait for: the
next sandbox's cgroup can be made while the current test runs, and a dead
sandbox's removed while the next one runs.

The keeper is a small process forked from the caller at the first sandbox
that needs a cgroup.  It only ever makes the directories the caller names,
removes the directories the caller hands back once they are empty (killing
what is left in them after a grace: only processes in those very cgroups),
and answers on a socket only the caller holds.  It dies with the caller; a
cgroup it did not get to remove is found as stale by the next session.

It also keeps time for the caller while the caller is busy elsewhere
(setting up a later test's higher-scoped fixtures under ``--isolate-jobs``)
and cannot watch the sandboxes in flight: it is handed their deadlines and
pidfds, asks a sandbox still running at its deadline for its stacks
(DUMP_SIGNAL) and kills it a grace later, exactly as the caller's own watch
would; when the caller takes the watch back, it is told which deadlines
were met this way (their verdict is a timeout).  Nobody reads a sandbox's
result channel meanwhile: a payload whose channel is full waits for the
caller, and that time does not count against its deadline (the keeper
moves the deadline on by it, and tells the caller, which does the same).
A process the keeper holds a pidfd of cannot be confused with another one
that reused its pid.

Messages (JSON, one per datagram)::

    caller -> keeper  {"op": "mkdir", "id": n, "dirs": [...],   reply {"id": n, "error": null | "..."}
                       "rmdir": [[... deepest first], ...]}
                      {"op": "rmdir", "rmdir": [[...], ...]}
                      {"op": "sync", "id": n}                    reply {"id": n} once nothing is pending
                      {"op": "watch", "id": n, "boxes":          (with each box's descriptors, in order:
                       [[box, deadline, grace, nfds], ...]}       its dump pipe, its result channel, the
                                                                   payload's pidfd, then every pidfd a
                                                                   kill ends)
                      {"op": "unwatch", "id": n, "reply": bool}  reply {"id": n, "fired":
                                                                   [[box, killed at or null], ...],
                                                                   "blocked": [[box, seconds], ...]}

Every message wakes the keeper, and on a machine with few CPUs the woken
keeper runs where pytest would: so the caller holds a dead sandbox's
directories back and hands them over with the next ``mkdir`` (one wake-up
per sandbox, not two), or on their own once HOLD_MAX are held, one is
HOLD_SECONDS old, or at ``sync``.  Held back, they are also more often
empty by the time the keeper tries them (the sandbox's processes have had
longer to finish dying), so it retries less.
"""
from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import select
import signal
import socket
import termios
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

#: After this long a cgroup that still holds processes gets them killed;
#: after GIVE_UP it is left for the next session's cleanup.
KILL_AFTER = 1.0
GIVE_UP = 10.0
#: A dead sandbox's directories are handed over with the next mkdir, or on
#: their own once this many are held or the oldest is this old.
HOLD_MAX = 8
HOLD_SECONDS = 1.0
#: Most sandboxes handed over in one watch message (two pidfds or three each).
WATCH_MAX = 64
#: The signal that asks a payload for its stacks (spawn.DUMP_SIGNAL).
_DUMP_SIGNAL = signal.SIGUSR2


class Keeper:
    """The caller's handle on its keeper process."""

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._pid = 0
        self._owner = 0
        self._next = 0
        self._answers: Dict[int, Optional[str]] = {}
        self._fired: Dict[int, Dict[int, Optional[float]]] = {}
        self._blocked: Dict[int, Dict[int, float]] = {}
        #: Directories to remove, not yet handed over, and since when.
        self._held: List[List[str]] = []
        self._held_since = 0.0

    @property
    def running(self) -> bool:
        return self._sock is not None and self._owner == os.getpid()

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def start(self) -> None:
        """Fork the keeper (once per process)."""
        if self.running:
            return
        from .._syscalls import fork

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = fork()
        if pid == 0:
            code = 0
            try:
                mine.close()
                _serve(theirs)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self._sock, self._pid, self._owner = mine, pid, os.getpid()

    def _send(self, msg: Dict[str, Any]) -> bool:
        if not self.running:
            return False
        assert self._sock is not None
        try:
            self._sock.send(json.dumps(msg).encode())
            return True
        except OSError:
            self.stop()
            return False

    def make(self, dirs: Sequence[str]) -> int:
        """Ask for ``dirs`` to be made (in order); a ticket for :meth:`made`,
        or 0 when the keeper is not there."""
        self._next += 1
        held, self._held = self._held, []
        return self._next if self._send({"op": "mkdir", "id": self._next, "dirs": list(dirs), "rmdir": held}) else 0

    def made(self, ticket: int, timeout: float = 5.0) -> Optional[str]:
        """Wait for a :meth:`make`: ``None`` when the directories exist, else
        why not."""
        if ticket == 0:
            return "the cgroup keeper is not running"
        end = time.monotonic() + timeout
        while ticket not in self._answers:
            if not self.running or not self._receive(max(0.0, end - time.monotonic())):
                return "the cgroup keeper did not answer"
        return self._answers.pop(ticket)

    def remove(self, dirs: Sequence[str]) -> bool:
        """Hand ``dirs`` (deepest first) over for removal once empty (with
        the next :meth:`make`, or on their own: see the module doc)."""
        if not self.running:
            return False
        now = time.monotonic()
        if not self._held:
            self._held_since = now
        self._held.append(list(dirs))
        if len(self._held) >= HOLD_MAX or now - self._held_since >= HOLD_SECONDS:
            return self.flush()
        return True

    def flush(self) -> bool:
        """Hand over every directory held back for removal now."""
        if not self._held:
            return self.running
        held, self._held = self._held, []
        return self._send({"op": "rmdir", "rmdir": held})

    def sync(self, timeout: float) -> bool:
        """Wait until every removal handed over is done (or given up)."""
        self._next += 1
        ticket = self._next
        if not self.flush() or not self._send({"op": "sync", "id": ticket}):
            return False
        end = time.monotonic() + timeout
        while ticket not in self._answers:
            if not self.running or not self._receive(max(0.0, end - time.monotonic())):
                return False
        self._answers.pop(ticket)
        return True

    def _receive(self, timeout: float) -> bool:
        assert self._sock is not None
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return False
        try:
            data = self._sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.stop()
            return False
        msg = json.loads(data)
        self._answers[int(msg["id"])] = msg.get("error")
        if "fired" in msg:
            self._fired[int(msg["id"])] = {int(b): (float(at) if at is not None else None) for b, at in msg["fired"]}
            self._blocked[int(msg["id"])] = {int(b): float(t) for b, t in msg.get("blocked", [])}
        return True

    def watch(self, boxes: Sequence[Tuple[int, float, float, Sequence[int]]]) -> int:
        """Hand deadlines over while the caller is busy: each of ``boxes``
        is (an id, its deadline on ``time.perf_counter``'s clock, the most
        grace between the stacks asked for and the kill, descriptors: the
        read ends of the payload's dump pipe and result channel (only
        looked at), the payload's pidfd, then the pidfds of every process a
        kill ends).  The keeper duplicates the
        pidfds (the caller keeps its own).  A ticket for :meth:`unwatch`,
        or 0 when the keeper is not there (nothing was handed over)."""
        boxes = list(boxes)[:WATCH_MAX]
        if not boxes or not self.running:
            return 0
        assert self._sock is not None
        self._next += 1
        msg = {"op": "watch", "id": self._next,
               "boxes": [[box, deadline, grace, len(fds)] for box, deadline, grace, fds in boxes]}
        fds = [fd for _, _, _, pidfds in boxes for fd in pidfds]
        try:
            socket.send_fds(self._sock, [json.dumps(msg).encode()], fds)
        except OSError:
            self.stop()
            return 0
        return self._next

    def unwatch(self, ticket: int, timeout: float = 5.0) -> Optional[Tuple[Dict[int, Optional[float]],
                                                                           Dict[int, float]]]:
        """Take the watch of :meth:`watch` ``ticket`` back: the sandboxes
        whose deadline the keeper met, each with when it killed them (None:
        not yet, its grace was still running), and how long the others
        waited on a full result channel; ``None`` if the keeper did not
        answer (the caller cannot tell, and treats every deadline that
        passed as met)."""
        if ticket == 0:
            return {}, {}
        if not self._send({"op": "unwatch", "id": ticket, "reply": True}):
            return None
        end = time.monotonic() + timeout
        while ticket not in self._answers:
            if not self.running or not self._receive(max(0.0, end - time.monotonic())):
                return None
        self._answers.pop(ticket)
        return self._fired.pop(ticket, {}), self._blocked.pop(ticket, {})

    def stop(self, timeout: float = 5.0) -> None:
        """Close the socket: the keeper finishes what it was handed and exits."""
        if self._sock is None or self._owner != os.getpid():
            self._sock = None
            self._held = []
            return
        self.flush()
        if self._sock is None:  # the keeper was gone: flush() stopped
            return
        self._sock.close()
        self._sock = None
        end = time.monotonic() + timeout
        while True:
            try:
                got, _ = os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:
                return
            if got or time.monotonic() >= end:
                if not got:
                    try:
                        os.kill(self._pid, signal.SIGKILL)
                        os.waitpid(self._pid, 0)
                    except OSError:
                        pass
                return
            time.sleep(0.005)

    def forget(self) -> None:
        """In a child forked from the caller: the keeper is not its own (the
        descriptor stays, close-on-exec; a sandbox closes it with the
        caller's other descriptors)."""
        if self._sock is not None:
            self._sock.detach()
        self._sock = None
        self._held = []


# ------------------------------------------------------------------ the keeper process

def _serve(sock: socket.socket) -> None:
    """The keeper's loop (never returns normally)."""
    try:
        import prctl

        prctl.set_pdeathsig(signal.SIGKILL)
    except Exception:  # noqa: S110 - without it, the socket's end still ends it
        pass
    keep = sock.fileno()
    try:
        inherited = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        inherited = list(range(3, 1024))
    for fd in inherited:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass
    pending: List[Tuple[List[str], float]] = []
    syncs: Set[int] = set()
    watches: Dict[int, List[_Watched]] = {}
    open_ = True
    while open_ or pending:
        wait = 0.005 if pending else None
        if not open_:
            wait = 0.005
        due = [w.due for ws in watches.values() for w in ws if w.due is not None]
        if due:
            left = max(0.0, min(due) - time.perf_counter())
            wait = left if wait is None else min(wait, left)
        ready, _, _ = select.select([sock] if open_ else [], [], [], wait)
        for ws in watches.values():
            for w in ws:
                w.act(time.perf_counter())
        if ready:
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3 * WATCH_MAX)
            except OSError:
                data, fds = b"", []
            if not data:
                open_ = False
            else:
                msg = json.loads(data)
                op = msg.get("op")
                if op == "watch":
                    watches[int(msg["id"])] = _take_watch(msg["boxes"], fds)
                    fds = []
                elif op == "unwatch":
                    ws = watches.pop(int(msg["id"]), [])
                    now = time.perf_counter()
                    fired = [[w.box, w.killed_at] for w in ws if w.fired]
                    blocked = [[w.box, w.blocked_for(now)] for w in ws if not w.fired]
                    for w in ws:
                        w.close()
                    if msg.get("reply"):
                        sock.send(json.dumps({"id": msg["id"], "fired": fired, "blocked": blocked}).encode())
                for fd in fds:  # none are expected with any other message
                    os.close(fd)
                if op == "mkdir":
                    sock.send(json.dumps({"id": msg["id"], "error": _mkdirs(msg["dirs"])}).encode())
                if op in ("mkdir", "rmdir"):
                    now = time.monotonic()
                    pending.extend((list(dirs), now) for dirs in msg.get("rmdir", ()))
                elif op == "sync":
                    syncs.add(int(msg["id"]))
        pending = [(dirs, since) for dirs, since in pending if not _remove(dirs, since)]
        if not pending and syncs and open_:
            for ticket in sorted(syncs):
                sock.send(json.dumps({"id": ticket}).encode())
            syncs.clear()
        if not open_ and pending and all(time.monotonic() - since > GIVE_UP for _, since in pending):
            break


class _Watched:
    """One sandbox whose deadline the keeper keeps while the caller is busy:
    as the caller's own watch does, at its deadline it asks a payload still
    running for its stacks, and kills the sandbox once the text has stopped
    coming into the dump pipe (50 ms without more), at most a grace later.
    While its result channel is full the payload waits for the caller, who
    is not reading: that time moves the deadline on."""

    QUIET = 0.05
    EVERY = 0.02
    #: How often a full result channel is looked for.
    LOOK = 0.05

    def __init__(self, box: int, deadline: float, grace: float, fds: List[int]) -> None:
        self.box = box
        #: The dump pipe's and the result channel's read ends (only looked
        #: at: FIONREAD), the payload's pidfd, then those of every process
        #: to kill.
        self.fds = fds
        self.deadline = deadline
        self.grace = max(0.05, min(grace, 5.0))
        #: When to act next (None: nothing left to do).
        self.due: Optional[float] = min(deadline, time.perf_counter() + self.LOOK)
        self.fired = 0.0
        self.killed_at: Optional[float] = None
        self._pending = -1
        self._changed = 0.0
        self._blocked = 0.0
        self._blocked_since: Optional[float] = None
        self._room = _pipe_size(fds[1]) if len(fds) > 1 else 0

    def blocked_for(self, now: float) -> float:
        """Seconds the payload waited on its full result channel."""
        return self._blocked + (now - self._blocked_since if self._blocked_since is not None else 0.0)

    def _look(self, now: float) -> bool:
        """Is the result channel full now (the payload cannot go on)?"""
        full = self._room > 0 and _pending_bytes(self.fds[1]) > self._room - 4096
        if full and self._blocked_since is None:
            self._blocked_since = now
        elif not full and self._blocked_since is not None:
            self._blocked += now - self._blocked_since
            self._blocked_since = None
        return full

    def act(self, now: float) -> None:
        if self.due is None or now < self.due or len(self.fds) < 3:
            return
        if not self.fired:
            full = self._look(now)
            deadline = self.deadline + self.blocked_for(now)
            if full or now < deadline:
                self.due = min(deadline, now + self.LOOK) if not full else now + self.LOOK
                return
            ended, _, _ = select.select([self.fds[2]], [], [], 0)
            if ended:  # the payload ended before its deadline: its verdict is its own
                self.due = None
                return
            self.fired = self._changed = now
            _send_signal(self.fds[2], _DUMP_SIGNAL)
            self.due = now + self.EVERY
            return
        pending = _pending_bytes(self.fds[0])
        if pending != self._pending:
            self._pending, self._changed = pending, now
        quiet = pending > 0 and now - self._changed >= self.QUIET
        if not quiet and now < self.fired + self.grace:
            self.due = now + self.EVERY
            return
        for fd in self.fds[2:]:
            _send_signal(fd, signal.SIGKILL)
        self.due, self.killed_at = None, now

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def _pipe_size(fd: int) -> int:
    try:
        return int(fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032)))
    except OSError:
        return 0


def _pending_bytes(fd: int) -> int:
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return int(buf[0])


def _take_watch(boxes: Any, fds: List[int]) -> List["_Watched"]:
    out: List[_Watched] = []
    for box, deadline, grace, n in boxes:
        mine, fds = fds[:int(n)], fds[int(n):]
        out.append(_Watched(int(box), float(deadline), float(grace), mine))
    for fd in fds:
        os.close(fd)
    return out


def _send_signal(pidfd: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except OSError:  # it is gone
        pass


def _mkdirs(dirs: Sequence[str]) -> Optional[str]:
    made: List[str] = []
    for d in dirs:
        try:
            os.mkdir(d, 0o755)
            made.append(d)
        except OSError as e:
            for m in reversed(made):
                try:
                    os.rmdir(m)
                except OSError:
                    pass
            return f"cannot create cgroup {d}: {e.strerror}"
    return None


def _remove(dirs: List[str], since: float) -> bool:
    """One attempt at removing ``dirs``; True when done (or given up)."""
    left = []
    for d in dirs:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.EAGAIN):
                continue  # not ours to fix: left for the next session's cleanup
            left.append(d)
    dirs[:] = left
    if not left:
        return True
    for d in left:  # cgroups a sandbox made below its own (a fake root may)
        for root, subdirs, _files in os.walk(d, topdown=False):
            for sub in subdirs:
                try:
                    os.rmdir(os.path.join(root, sub))
                except OSError:
                    pass
    age = time.monotonic() - since
    if age > KILL_AFTER:
        for d in left:
            _kill_in(d)
    return age > GIVE_UP


def _kill_in(d: str) -> None:
    """SIGKILL what is still in cgroup ``d`` (and nothing else)."""
    try:
        with open(os.path.join(d, "cgroup.kill"), "w") as f:
            f.write("1")
        return
    except OSError:
        pass
    def members() -> List[int]:
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    from . import _fs

    _fs.kill_members(members(), members)
