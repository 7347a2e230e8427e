"""The caller's side of the network relay (:mod:`isolate_runtime.relayd`).

::

    _launch        forward.for_sandbox(...)   what this sandbox reaches
                   Forwarding(forwards)       the relay process (started the
                                              first time), a sandbox id, and
                                              the header A sends with the
                                              listeners (program.py: RELAY)
    wait/discard   Forwarding.end()           the sandbox is gone: END
                   Forwarding.outcome()       what was forwarded (READY's
                                              errnos), and what the relay had
                                              to refuse (its counters, which
                                              the relay writes and the caller
                                              only reads, before the test can
                                              see a refusal: nothing waits)

The relay is a process of its own, not a thread of the caller: in a
multi-threaded process every ``os.fork()`` of the test's own code warns
(Python 3.12+, "This process is multi-threaded, use of fork() may lead to
deadlocks"), which fails a ``filterwarnings = error`` suite; and it serves
connections while the caller is busy elsewhere (logging reports, setting
up fixtures, waiting for another sandbox).  It is started when a sandbox
first has something to forward, and ends with the caller or :func:`stop`.

The caller's end of its control socket is inherited by every sandbox's
setup process A, which sends its listeners on it; it is one of the
caller's descriptors a sandbox closes (``spawn.parent_fds``): A closes it
right after sending, and the payload never holds it.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from . import _syscalls
from .forward import Forward

#: Most relayed connections one sandbox may have open at once; past it a
#: connection is reset and the sandbox's result says so.
CONNECTION_CAP = 256


@dataclass(frozen=True)
class Counters:
    """What the relay had to refuse of one sandbox (its slot of the counters)."""

    #: Connections reset because the sandbox had CONNECTION_CAP open.
    refused: int = 0
    #: Connections reset because the relay had no descriptors left.
    overloaded: int = 0
    #: Connections reset because their service did not accept them.
    failed: int = 0


class Relay:
    """One relay process and the caller's end of its control socket."""

    def __init__(self) -> None:
        from . import relayd, spawn

        # The counters: written by the relay, read here through a read-only
        # descriptor (so the mapping can never be made writable) and not in
        # any fork of this process (MADV_DONTFORK): no sandbox sees them.
        self.size = relayd.SLOTS * relayd.SLOT.size
        counters_fd = os.memfd_create("isolate-relay-counters", os.MFD_CLOEXEC)
        try:
            os.ftruncate(counters_fd, self.size)
            readonly = os.open(f"/proc/self/fd/{counters_fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.counters = _syscalls.map_readonly_private_to_this_process(readonly, self.size)
            finally:
                os.close(readonly)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", relayd.__file__, str(theirs.fileno()), str(counters_fd),
                     str(os.getpid())],
                    pass_fds=(theirs.fileno(), counters_fd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True)
            except BaseException:
                ours.close()
                _syscalls.unmap(self.counters, self.size)
                raise
            finally:
                theirs.close()
        finally:
            os.close(counters_fd)
        ours.setblocking(False)
        self.sock = ours
        #: The process that started it: a fork of the caller must start its own.
        self.owner = os.getpid()
        self.failure = ""
        self._ends: List[bytes] = []
        spawn.parent_fds.add(ours.fileno())

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    def alive(self) -> bool:
        return not self.failure and self.proc.poll() is None

    def end(self, box: int) -> None:
        self._ends.append(json.dumps({"op": "end", "id": box}).encode())
        while self._ends:
            try:
                self.sock.send(self._ends[0])
            except BlockingIOError:  # the relay is behind: sent with the next sandbox's END
                return
            except OSError as e:
                self.failure = self.failure or f"it did not take the message: {e.strerror or e}"
                return
            del self._ends[0]

    def counted(self, box: int) -> Counters:
        """The relay's counters for ``box`` so far (zero before it took the
        sandbox's listeners)."""
        from .relayd import SLOT, SLOTS

        got, refused, overloaded, failed = SLOT.unpack(
            _syscalls.read_mapped(self.counters, box % SLOTS * SLOT.size, SLOT.size))
        return Counters(refused, overloaded, failed) if got == box else Counters()

    def close(self, timeout: float = 5.0) -> None:
        from . import spawn

        spawn.parent_fds.discard(self.fd)
        self.sock.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - it exits on the closed socket
            self.proc.kill()
            self.proc.wait()
        _syscalls.unmap(self.counters, self.size)


def _status(proc: "subprocess.Popen[bytes]") -> str:
    code = proc.poll()
    if code is None:
        return "still running"
    return f"exit status {code}" if code >= 0 else f"killed by signal {-code}"


_relay: Optional[Relay] = None
#: Relays inherited by a fork of the caller: not this process's to use or
#: stop, but kept referenced (their socket belongs to the parent).
_inherited: List[Relay] = []
_boxes = itertools.count(1)
#: Why the relay could not be started, once (every later sandbox says so too).
_start_failure = ""


def get() -> Tuple[Optional[Relay], str]:
    """The running relay, started now if need be; or None and why not."""
    global _relay, _start_failure
    if _relay is not None and _relay.owner != os.getpid():
        _inherited.append(_relay)
        _relay = None
    if _relay is not None and not _relay.alive():
        _relay.close(0.1)  # the sandboxes it served say so in their results; the next ones get a new one
        _relay = None
    if _relay is None:
        if _start_failure:
            return None, _start_failure
        try:
            _relay = Relay()
        except OSError as e:
            _start_failure = f"it could not be started ({sys.executable or 'no interpreter'}: {e.strerror or e})"
            return None, _start_failure
    return _relay, ""


def stop() -> None:
    """Stop the relay (it is started again by the next sandbox that forwards)."""
    global _relay, _start_failure
    _start_failure = ""
    if _relay is not None and _relay.owner == os.getpid():
        _relay.close()
    elif _relay is not None:
        _inherited.append(_relay)
    _relay = None


class Forwarding:
    """One sandbox's forwards, from its program to its result."""

    def __init__(self, forwards: Sequence[Forward]) -> None:
        self.forwards = tuple(forwards)
        self.box = next(_boxes)
        self.relay, self.failure = get()
        self.ended = False

    @property
    def relay_fd(self) -> int:
        return self.relay.fd if self.relay is not None else -1

    def header(self) -> str:
        """What A sends the relay before the errnos of its listeners."""
        return json.dumps({"op": "add", "id": self.box, "cap": CONNECTION_CAP,
                           "targets": [[f.target, f.port] for f in self.forwards]})

    def end(self) -> None:
        """The sandbox is gone: its listeners and connections must go too."""
        if not self.ended and self.relay is not None:
            self.relay.end(self.box)
        self.ended = True

    def outcome(self, listen_errnos: Sequence[int]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(the services forwarded, notes on what the relay could not do);
        ``listen_errnos``: READY's word on each listener (empty: the setup
        never got that far)."""
        self.end()
        if self.relay is None:
            return (), (f"the network relay is not running: {self.failure}; "
                        f"not forwarded: {', '.join(map(str, self.forwards))}",)
        notes: List[str] = []
        forwarded = []
        for fwd, err in itertools.zip_longest(self.forwards, listen_errnos[:len(self.forwards)], fillvalue=0):
            if err:
                notes.append(f"{fwd} not forwarded: its listener could not be made inside the sandbox "
                             f"({os.strerror(err)})")
            else:
                forwarded.append(str(fwd))
        if not self.relay.alive():
            proc = self.relay.proc
            why = _status(proc) if proc.poll() is not None else self.relay.failure
            notes.append(f"the network relay stopped ({why}): connections to the forwarded services were reset or "
                         "refused from then on")
        counted = self.relay.counted(self.box)
        if counted.refused:
            notes.append(f"the network relay refused {counted.refused} connection(s): the sandbox had "
                         f"{CONNECTION_CAP} relayed connections open at once, the most one sandbox may have "
                         f"(services: {', '.join(forwarded)})")
        if counted.overloaded:
            notes.append(f"the network relay reset {counted.overloaded} connection(s): it had no file descriptors "
                         "left")
        if counted.failed:
            notes.append(f"{counted.failed} relayed connection(s) were reset: their service on the host did "
                         "not accept them (it had stopped listening)")
        return tuple(forwarded), tuple(notes)
