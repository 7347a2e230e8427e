"""The network relay: a process of its own that carries TCP connections from
listeners inside sandboxes to services on the host's loopback.

::

    A (a sandbox's setup) ──┐
    A (another sandbox)  ───┼── control socket (unix, SOCK_SEQPACKET) ──▶ relay
    caller (pytest)      ───┘
        ADD  {"op": "add", "id", "cap", "targets": [[host, port], ...]} NUL int32 errno per target,
             with the fd of each listener whose errno is 0 (SCM_RIGHTS)        (from A)
        END  {"op": "end", "id"}                                              (from the caller)
    caller ◀── counters (shared memory, read-only for the caller): per sandbox,
               connections reset at the cap, for want of descriptors, or
               because the service did not take them

Each sandbox's setup process (A, trusted, before the payload exists) makes
a listener for every forwarded service inside the sandbox's network
namespace and sends them here on the caller's end of the control socket,
which it inherited (program.py: LISTEN, RELAY); the caller only says when
the sandbox has ended.  The relay accepts on each listener from outside
the namespace and connects to the target the caller named *for that
listener*, never anywhere else: the sandbox sends bytes, not addresses.

When it has to refuse a connection of a sandbox, the relay counts it in
the sandbox's slot of the counters *before* it resets the connection:
whatever the test ran into is there by the time the test can know of it,
so the caller reads the slot when the sandbox ends and never waits for
the relay (END has no answer), and no count is lost to a full socket
buffer.  The caller maps the counters read-only and not into its forks
(MADV_DONTFORK): no sandbox sees them.

One single-threaded loop (epoll, level triggered, at most one read per
direction per wake-up) serves every sandbox of the caller, so a busy
sandbox cannot starve another for long, and nothing here waits for one.

Bounded by construction (a sandbox must not be able to exhaust pytest):
at most ``cap`` connections open at once per sandbox (past it a connection
is reset and counted), at most ``CHUNK`` bytes held per direction of a
connection (a side that does not read stops the other side's reads), and
file descriptors within this process's limit (past it, reset).

Run by :mod:`isolate_runtime.relay` as ``python -I -S relayd.py CTL_FD
COUNTERS_FD PPID``:
standard library only, no import of the package (a fresh interpreter
without site starts in a few milliseconds, and shares nothing with
pytest).  It ends when the caller closes the control socket or dies.
"""
from __future__ import annotations

import errno
import json
import mmap
import os
import select
import socket
import struct
import sys
from typing import Dict, List, Optional, Set, Tuple

#: Most bytes read at once, and most held for one direction of a connection.
CHUNK = 1 << 17
#: Most connections accepted from one listener per wake-up (fairness).
ACCEPT_BURST = 32
#: accept() errors of a listener that is not one any more.
_NOT_LISTENING = frozenset((errno.EINVAL, errno.EBADF, errno.ENOTSOCK, errno.EOPNOTSUPP))
#: accept() errors for want of descriptors or memory: the spare fd takes it.
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
#: Most listeners one ADD may carry (calls.MAX_LISTEN).
MAX_TARGETS = 64
#: Ended sandboxes remembered, so that an ADD that comes after its END (a
#: sandbox discarded while its setup was sending) is closed at once.
REMEMBER_ENDED = 4096
#: The counters: one slot per sandbox id modulo SLOTS (far more than run at
#: once), each: the sandbox id, then connections reset at the cap, for want
#: of descriptors, because the service did not take them.
SLOTS = 4096
SLOT = struct.Struct("=QIII")

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST), as a refused or broken connection does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()


class Box:
    """One sandbox: its listeners, its open connections, its figures."""

    __slots__ = ("id", "cap", "listeners", "conns", "refused", "overloaded", "failed")

    def __init__(self, box_id: int, cap: int) -> None:
        self.id = box_id
        self.cap = cap
        self.listeners: List[socket.socket] = []
        self.conns: Set["Conn"] = set()
        #: Connections reset at the cap; for want of descriptors here;
        #: because the service did not accept them.
        self.refused = self.overloaded = self.failed = 0


class Flow:
    """One direction of a connection: bytes from ``src`` to ``dst``."""

    __slots__ = ("src", "dst", "pending", "eof")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        #: Read from src, not yet accepted by dst (at most CHUNK bytes).
        self.pending: bytes = b""
        #: src has no more to send (its end was read; dst is shut for writing).
        self.eof = False


class Conn:
    """One relayed connection: the sandbox's side and the service's."""

    __slots__ = ("box", "inside", "up", "connecting", "out", "back")

    def __init__(self, box: Box, inside: socket.socket, up: socket.socket) -> None:
        self.box = box
        self.inside = inside
        self.up = up
        self.connecting = True
        self.out = Flow(inside, up)
        self.back = Flow(up, inside)


class Relay:
    def __init__(self, ctl: socket.socket, counters: Optional[mmap.mmap] = None) -> None:
        self.ctl = ctl
        self.counters = counters
        self.ep = select.epoll()
        self.ep.register(ctl.fileno(), _IN)
        self.boxes: Dict[int, Box] = {}
        self.ended: Dict[int, None] = {}
        #: listener fd -> (its sandbox, its listener, the target's family and address)
        self.listeners: Dict[int, Tuple[Box, socket.socket, int, Tuple[str, int]]] = {}
        #: fd of either side -> its connection
        self.conns: Dict[int, Conn] = {}
        self.masks: Dict[int, int] = {}
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        soft, hard = _raise_fd_limit()
        #: Connections open at once, over every sandbox (two fds each).
        self.total_cap = max(16, (soft - 64) // 2)
        self.open = 0
        #: Kept for the moment the process runs out of descriptors.
        self.spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        ctl = self.ctl.fileno()
        while True:
            try:
                events = self.ep.poll()
            except InterruptedError:  # pragma: no cover
                continue
            for fd, ev in events:
                if fd == ctl:
                    if not self.control():
                        return
                elif fd in self.listeners:
                    self.accept(fd)
                else:
                    conn = self.conns.get(fd)
                    if conn is not None:
                        self.pump(conn, ev)

    # ---------------------------------------------------------------- control

    def control(self) -> bool:
        """One message from the caller; False when the caller is gone."""
        try:
            data, anc, _flags, _addr = self.ctl.recvmsg(
                65536, socket.CMSG_SPACE(MAX_TARGETS * 4), getattr(socket, "MSG_CMSG_CLOEXEC", 0))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        fds: List[int] = []
        for level, kind, blob in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(blob) // 4}i", blob[:len(blob) // 4 * 4]))
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        head, _, tail = data.partition(b"\0")
        try:
            msg = json.loads(head)
            if msg["op"] == "add":
                targets = [(str(h), int(p)) for h, p in msg["targets"]]
                errnos = list(struct.unpack(f"={len(tail) // 4}i", tail[:len(tail) // 4 * 4]))
                if len(errnos) == len(targets) and int(msg["id"]) not in self.ended:
                    self.add(int(msg["id"]), targets, errnos, int(msg["cap"]), fds)
                    fds = []
            elif msg["op"] == "end":
                self.end(int(msg["id"]))
        except (ValueError, KeyError, TypeError):  # pragma: no cover - the caller's own words
            pass
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def add(self, box_id: int, targets: List[Tuple[str, int]], errnos: List[int], cap: int,
            fds: List[int]) -> None:
        box = self.boxes.get(box_id)
        if box is not None:  # one ADD per sandbox
            for fd in fds:
                os.close(fd)
            return
        box = self.boxes[box_id] = Box(box_id, cap)
        self.note(box)
        made = [target for target, err in zip(targets, errnos) if err == 0]
        for fd, target in zip(fds, made):
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
            box.listeners.append(sock)
            self.listeners[fd] = (box, sock, family, target)
            self.ep.register(fd, _IN)
        for fd in fds[len(made):]:
            os.close(fd)

    def end(self, box_id: int) -> None:
        """The sandbox is gone: close its listeners (what still waits in
        their queues is reset with them) and every connection of it."""
        box = self.boxes.pop(box_id, None)
        self.ended[box_id] = None
        if len(self.ended) > REMEMBER_ENDED:
            del self.ended[next(iter(self.ended))]
        if box is None:
            return
        for sock in box.listeners:
            fd = sock.fileno()
            del self.listeners[fd]
            self.ep.unregister(fd)
            sock.close()
        for conn in list(box.conns):
            self.close(conn, reset=False)

    def note(self, box: Box) -> None:
        """The sandbox's totals into its slot of the counters (before the
        connections they count are reset: see the module docstring)."""
        if self.counters is not None:
            SLOT.pack_into(self.counters, box.id % SLOTS * SLOT.size, box.id, box.refused, box.overloaded,
                           box.failed)

    # ---------------------------------------------------------------- connections

    def accept(self, fd: int) -> None:
        box, lsock, family, target = self.listeners[fd]
        refuse: List[socket.socket] = []
        try:
            for _ in range(ACCEPT_BURST):
                try:
                    inside, _ = lsock.accept()
                except BlockingIOError:
                    return
                except OSError as e:
                    if e.errno in _OUT_OF_RESOURCES:  # refuse what waits with the spare fd
                        self._take_one(lsock, box, refuse)
                        return
                    if e.errno in _NOT_LISTENING:  # (a fake root destroyed it inside): drop it
                        self._drop_listener(fd)
                        return
                    continue  # a connection's own error, passed on by accept(): the next
                if len(box.conns) >= box.cap:
                    box.refused += 1
                    refuse.append(inside)
                    continue
                if self.open >= self.total_cap:
                    box.overloaded += 1
                    refuse.append(inside)
                    continue
                try:
                    up = socket.socket(family, socket.SOCK_STREAM)
                except OSError:
                    box.overloaded += 1
                    refuse.append(inside)
                    continue
                inside.setblocking(False)
                up.setblocking(False)
                for s in (inside, up):
                    try:
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    except OSError:
                        pass
                err = up.connect_ex(target)
                if err not in (0, errno.EINPROGRESS):
                    box.failed += 1
                    up.close()
                    refuse.append(inside)
                    continue
                conn = Conn(box, inside, up)
                box.conns.add(conn)
                self.open += 1
                self.conns[inside.fileno()] = conn
                self.conns[up.fileno()] = conn
                self.update(conn)
        finally:
            if refuse:
                self.note(box)
                for sock in refuse:
                    _reset(sock)

    def _drop_listener(self, fd: int) -> None:
        # Level triggered: a listener that hangs up for ever (a sandbox's
        # fake root can destroy it with SOCK_DESTROY, or shut it down) would
        # wake the loop for ever, one core spent outside any sandbox's cgroup.
        box, lsock, _family, _target = self.listeners.pop(fd)
        self.ep.unregister(fd)
        box.listeners.remove(lsock)
        lsock.close()

    def _take_one(self, lsock: socket.socket, box: Box, refuse: List[socket.socket]) -> None:
        # Out of descriptors, the waiting connection would keep the listener
        # readable and the loop spinning: free the spare one and take the
        # connection with it, to be reset.
        if self.spare >= 0:
            os.close(self.spare)
            self.spare = -1
        try:
            inside, _ = lsock.accept()
            box.overloaded += 1
            refuse.append(inside)
        except OSError:
            pass
        finally:
            try:
                self.spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self.spare = -1

    def pump(self, conn: Conn, ev: int) -> None:
        if conn.connecting:
            err = conn.up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:  # the service did not take it (it stopped listening)
                conn.box.failed += 1
                self.note(conn.box)
                self.close(conn, reset=True)
                return
            if not ev & _OUT and not ev & select.EPOLLERR:
                # an event of the sandbox's side while the service's is not up yet
                self.update(conn)
                return
            conn.connecting = False
        try:
            self.flow(conn.out)
            self.flow(conn.back)
        except OSError:  # a reset on either side: pass it on to the other
            self.close(conn, reset=True)
            return
        if conn.out.eof and conn.back.eof and not conn.out.pending and not conn.back.pending:
            self.close(conn, reset=False)
        else:
            self.update(conn)

    def flow(self, f: Flow) -> None:
        """Move what can be moved from f.src to f.dst without blocking."""
        if f.pending:
            try:
                n = f.dst.send(f.pending)
            except BlockingIOError:
                return
            f.pending = f.pending[n:]
            if f.pending:
                return
            if f.eof:
                f.dst.shutdown(socket.SHUT_WR)
                return
        if f.eof:
            return
        try:
            n = f.src.recv_into(self.buf)
        except BlockingIOError:
            return
        if n == 0:
            f.eof = True
            f.dst.shutdown(socket.SHUT_WR)
            return
        try:
            sent = f.dst.send(self.view[:n])
        except BlockingIOError:
            sent = 0
        if sent < n:
            f.pending = bytes(self.view[sent:n])

    def update(self, conn: Conn) -> None:
        if conn.connecting:
            self._want(conn.up, _OUT)
            self._want(conn.inside, 0)
            return
        out, back = conn.out, conn.back
        self._want(conn.inside, (0 if out.eof or out.pending else _IN) | (_OUT if back.pending else 0))
        self._want(conn.up, (0 if back.eof or back.pending else _IN) | (_OUT if out.pending else 0))

    def _want(self, sock: socket.socket, mask: int) -> None:
        # An fd with nothing wanted leaves the epoll set: otherwise a hang-up
        # of a side that is waiting for the other would wake the loop forever.
        fd = sock.fileno()
        now = self.masks.get(fd, 0)
        if mask == now:
            return
        if not now:
            self.ep.register(fd, mask)
        elif not mask:
            self.ep.unregister(fd)
        else:
            self.ep.modify(fd, mask)
        if mask:
            self.masks[fd] = mask
        else:
            self.masks.pop(fd, None)

    def close(self, conn: Conn, reset: bool) -> None:
        for sock in (conn.inside, conn.up):
            fd = sock.fileno()
            if fd < 0:
                continue
            if self.masks.pop(fd, 0):
                self.ep.unregister(fd)
            self.conns.pop(fd, None)
            if reset:
                _reset(sock)
            else:
                sock.close()
        if conn in conn.box.conns:
            conn.box.conns.discard(conn)
            self.open -= 1


def _raise_fd_limit() -> Tuple[int, int]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    want = min(want, 1 << 16)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError):
            pass
    return soft, hard


def _die_with(ppid: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:  # noqa: S110 - the control socket's end says the same, later
        pass
    if os.getppid() != ppid:
        sys.exit(0)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd, counters_fd, ppid = int(args[0]), int(args[1]), int(args[2])
    _die_with(ppid)
    ctl = socket.socket(fileno=fd)
    ctl.setblocking(False)
    counters = None
    if counters_fd >= 0:  # (-1: nobody reads them, e.g. benchmarks/relay_candidates.py)
        counters = mmap.mmap(counters_fd, SLOTS * SLOT.size)
        os.close(counters_fd)
    Relay(ctl, counters).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
