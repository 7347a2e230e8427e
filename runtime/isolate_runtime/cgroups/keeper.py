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

Messages (JSON, one per datagram)::

    caller -> keeper  {"op": "mkdir", "id": n, "dirs": [...],   reply {"id": n, "error": null | "..."}
                       "rmdir": [[... deepest first], ...]}
                      {"op": "rmdir", "rmdir": [[...], ...]}
                      {"op": "sync", "id": n}                    reply {"id": n} once nothing is pending

Every message wakes the keeper, and on a machine with few CPUs the woken
keeper runs where pytest would: so the caller holds a dead sandbox's
directories back and hands them over with the next ``mkdir`` (one wake-up
per sandbox, not two), or on their own once HOLD_MAX are held, one is
HOLD_SECONDS old, or at ``sync``.  Held back, they are also more often
empty by the time the keeper tries them (the sandbox's processes have had
longer to finish dying), so it retries less.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
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


class Keeper:
    """The caller's handle on its keeper process."""

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._pid = 0
        self._owner = 0
        self._next = 0
        self._answers: Dict[int, Optional[str]] = {}
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
        return True

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
    open_ = True
    while open_ or pending:
        wait = 0.005 if pending else None
        if not open_:
            wait = 0.005
        ready, _, _ = select.select([sock] if open_ else [], [], [], wait)
        if ready:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                open_ = False
            else:
                msg = json.loads(data)
                op = msg.get("op")
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
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            pids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
