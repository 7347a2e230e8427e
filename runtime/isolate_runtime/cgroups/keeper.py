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
were met this way (their verdict is a timeout).  It also reads the
sandboxes' result channels meanwhile (into memory files it hands back,
bounded by what the caller would still take), so that no payload waits
for the busy caller, and notes when each payload ended (its wall time).
A process the keeper holds a pidfd of cannot be confused with another one
that reused its pid.

Messages (JSON, one per datagram)::

    caller -> keeper  {"op": "mkdir", "id": n, "dirs": [...],   reply {"id": n, "error": null | "..."}
                       "rmdir": [[... deepest first], ...]}
                      {"op": "rmdir", "rmdir": [[...], ...]}
                      {"op": "sync", "id": n}                    reply {"id": n} once nothing is pending
                      {"op": "watch", "id": n, "boxes":          (with each box's descriptors, in order:
                       [[box, deadline, grace, room, nfds], ...]} its dump pipe, its result channel, the
                                                                   payload's pidfd, then every pidfd a
                                                                   kill ends)
                      {"op": "unwatch", "id": n, "reply": bool}  reply {"id": n, "fired":
                                                                   [[box, killed at or null], ...],
                                                                   "ended": [[box, at], ...], "drained":
                                                                   [[box, bytes], ...]} with a memory
                                                                   file per drained box, in order

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
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

#: After this long a cgroup that still holds processes gets them killed;
#: after GIVE_UP it is left for the next session's cleanup.
KILL_AFTER = 1.0
GIVE_UP = 10.0
#: A dead sandbox's directories are handed over with the next mkdir, or on
#: their own once this many are held or the oldest is this old.
HOLD_MAX = 8
HOLD_SECONDS = 1.0
#: Most descriptors one message carries (the kernel's SCM_MAX_FD): a watch
#: message holds at most this many (six per sandbox at most).
WATCH_MAX = 253
#: The signal that asks a payload for its stacks (spawn.DUMP_SIGNAL).
_DUMP_SIGNAL = signal.SIGUSR2


@dataclass(frozen=True)
class Watched:
    """What the keeper saw of the sandboxes it watched (by their ids)."""

    #: Those whose deadline it met, with when it killed them (None: not
    #: yet, their grace was still running).
    fired: Dict[int, Optional[float]]
    #: Those whose payload ended meanwhile, and when.
    ended: Dict[int, float]
    #: What it read of their result channels, in order.
    drained: Dict[int, bytes]


class Keeper:
    """The caller's handle on its keeper process."""

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._pid = 0
        self._owner = 0
        self._next = 0
        self._answers: Dict[int, Optional[str]] = {}
        self._watched: Dict[int, Watched] = {}
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
        if not self._await(ticket, timeout):
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
        if not self._await(ticket, timeout):
            return False
        self._answers.pop(ticket)
        return True

    def _await(self, ticket: int, timeout: float) -> bool:
        """Receive until the keeper has answered ``ticket`` (the answer is
        then in ``_answers``); False when it did not within ``timeout``
        seconds or is gone."""
        end = time.monotonic() + timeout
        while ticket not in self._answers:
            if not self.running or not self._receive(max(0.0, end - time.monotonic())):
                return False
        return True

    def _receive(self, timeout: float) -> bool:
        assert self._sock is not None
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return False
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._sock, 65536, WATCH_MAX)
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self.stop()
            return False
        msg = json.loads(data)
        ticket = int(msg["id"])
        self._answers[ticket] = msg.get("error")
        if "fired" in msg:
            drained: Dict[int, bytes] = {}
            for (box, size), fd in zip(msg.get("drained", []), fds):
                drained[int(box)] = os.pread(fd, int(size), 0)
            self._watched[ticket] = Watched(
                {int(b): (float(at) if at is not None else None) for b, at in msg["fired"]},
                {int(b): float(at) for b, at in msg.get("ended", [])}, drained)
        for fd in fds:
            os.close(fd)
        return True

    def watch(self, boxes: Sequence[Tuple[int, Optional[float], float, int, Sequence[int]]]) -> int:
        """Hand deadlines over while the caller is busy: each of ``boxes``
        is (an id, its deadline on ``time.perf_counter``'s clock or None, the most
        grace between the stacks asked for and the kill, the most bytes of
        its result channel the caller would still take, descriptors: the
        read ends of the payload's dump pipe and result channel, the
        payload's pidfd, then the pidfds of every process a kill ends).  The
        keeper gets copies (the caller keeps its own).  A ticket for
        :meth:`unwatch`, or 0 when the keeper is not there (nothing was
        handed over; also when the descriptors are more than one message
        carries: hand them over in batches)."""
        boxes = list(boxes)
        if not boxes or not self.running or sum(len(fds) for *_, fds in boxes) > WATCH_MAX:
            return 0
        assert self._sock is not None
        self._next += 1
        msg = {"op": "watch", "id": self._next,
               "boxes": [[box, deadline, grace, room, len(fds)] for box, deadline, grace, room, fds in boxes]}
        fds = [fd for _, _, _, _, pidfds in boxes for fd in pidfds]
        try:
            socket.send_fds(self._sock, [json.dumps(msg).encode()], fds)
        except OSError:
            self.stop()
            return 0
        return self._next

    def unwatch(self, ticket: int, timeout: float = 5.0) -> Optional["Watched"]:
        """Take the watch of :meth:`watch` ``ticket`` back: what the keeper
        saw (:class:`Watched`); ``None`` if it did not answer (the caller
        cannot tell, and treats every deadline that passed as met)."""
        if ticket == 0:
            return Watched({}, {}, {})
        if not self._send({"op": "unwatch", "id": ticket, "reply": True}):
            return None
        if not self._await(ticket, timeout):
            return None
        self._answers.pop(ticket)
        return self._watched.pop(ticket, Watched({}, {}, {}))

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
        watched = [w for ws in watches.values() for w in ws]
        due = [w.due for w in watched if w.due is not None]
        if due:
            left = max(0.0, min(due) - time.perf_counter())
            wait = left if wait is None else min(wait, left)
        looked = {fd: w for w in watched for fd in w.looked_at()}
        ready, _, _ = select.select(([sock.fileno()] if open_ else []) + list(looked), [], [], wait)
        now = time.perf_counter()
        for fd in ready:
            if fd in looked:
                looked[fd].ready(fd, now)
        for w in watched:
            w.act(time.perf_counter())
        if sock.fileno() in ready:
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, WATCH_MAX)
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
                    for w in ws:
                        w.drain()  # what came last
                    reply = {"id": msg["id"], "fired": [[w.box, w.killed_at] for w in ws if w.fired],
                             "ended": [[w.box, w.ended_at] for w in ws if w.ended_at is not None],
                             "drained": [[w.box, w.drained] for w in ws if w.drained]}
                    memfds = [w.memfd for w in ws if w.drained and w.memfd >= 0]
                    try:
                        if msg.get("reply"):
                            socket.send_fds(sock, [json.dumps(reply).encode()], memfds)
                    finally:
                        for w in ws:
                            w.close()
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
    Nobody else reads the sandbox's result channel meanwhile: the keeper
    does, into a memory file it hands the caller with the answer (up to
    ``room`` bytes: what the caller would still accept), so that a payload
    never waits for the busy caller; and it notes when the payload ended."""

    QUIET = 0.05
    EVERY = 0.02

    def __init__(self, box: int, deadline: Optional[float], grace: float, room: int, fds: List[int]) -> None:
        self.box = box
        #: The dump pipe's read end (only looked at: FIONREAD), the result
        #: channel's (read into ``memfd``), the payload's pidfd, then those
        #: of every process to kill.
        self.fds = fds
        self.grace = max(0.05, min(grace, 5.0))
        self.room = max(0, room)
        #: When to act next (None: nothing left to do).
        self.due: Optional[float] = deadline
        self.fired = 0.0
        self.killed_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.memfd = -1
        self.drained = 0
        self.eof = False
        self._pending = -1
        self._changed = 0.0

    def looked_at(self) -> List[int]:
        """What to select on: the result channel while there is room for
        more, the payload's pidfd until it ended."""
        if len(self.fds) < 3:
            return []
        out = [self.fds[1]] if self.drained < self.room and not self.eof else []
        return out + ([self.fds[2]] if self.ended_at is None else [])

    def ready(self, fd: int, now: float) -> None:
        if len(self.fds) < 3:
            return
        if fd == self.fds[1]:
            self.drain()
        elif fd == self.fds[2] and self.ended_at is None:
            self.ended_at = now
            if not self.fired:
                self.due = None  # ended before its deadline: its verdict is its own

    def drain(self) -> None:
        """Read what the channel holds (non-blocking: its file status is the
        caller's), up to the room left."""
        if len(self.fds) < 3:
            return
        while self.drained < self.room:
            try:
                chunk = os.read(self.fds[1], min(65536, self.room - self.drained))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not chunk:  # every writer is gone
                self.eof = True
                return
            if self.memfd < 0:
                self.memfd = os.memfd_create("isolate-keeper-drained", os.MFD_CLOEXEC)
            os.write(self.memfd, chunk)
            self.drained += len(chunk)

    def act(self, now: float) -> None:
        if self.due is None or now < self.due or len(self.fds) < 3:
            return
        if not self.fired:
            ended, _, _ = select.select([self.fds[2]], [], [], 0)
            if ended:
                if self.ended_at is None:
                    self.ended_at = now
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
        for fd in self.fds + ([self.memfd] if self.memfd >= 0 else []):
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds, self.memfd = [], -1


def _pending_bytes(fd: int) -> int:
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return int(buf[0])


def _take_watch(boxes: Any, fds: List[int]) -> List["_Watched"]:
    out: List[_Watched] = []
    for box, deadline, grace, room, n in boxes:
        mine, fds = fds[:int(n)], fds[int(n):]
        out.append(_Watched(int(box), float(deadline) if deadline is not None else None, float(grace), int(room),
                            mine))
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
