"""The framed result channel from the sandbox to the parent.

A pipe created before the fork: the parent keeps the read end (close-on-exec),
the sandbox's processes inherit the write end.  Frames are
``length (4 bytes, big-endian) | kind (1 byte) | body``; writes of one frame
go out in a single ``os.write`` loop, so frames from processes that write one
after another never interleave.
"""
from __future__ import annotations

import errno
import os
import pickle
import struct
from typing import Any, Iterator, List, Optional, Tuple

_HEADER = struct.Struct(">IB")

SETUP_ERROR = ord("S")  # pickled SetupError from A or the init
SPAWNED = ord("P")      # pickled {"init": host pid of the sandbox's PID 1}
MESSAGE = ord("M")      # pickled object passed to send_message()
RESULT = ord("R")       # pickled return value of a callable payload
RAISED = ord("E")       # pickled (exception or None, repr, traceback text)
STATUS = ord("W")       # struct ">i": the payload process's wait status
WRITTEN = ord("F")      # pickled tuple of paths the payload wrote
LAYERS = ord("L")       # pickled {layer: "applied" | reason}
SPAWNED_PIDS = ord("p")  # struct ">ii": host pids of PID 1 and the payload (C executor)
CALL_FAILED = ord("X")   # struct ">Ii": index of the failed kernel call, errno (C executor)

#: Largest frame body accepted (a defence against a payload writing garbage).
MAX_FRAME = 1 << 30

_write_fd: Optional[int] = None


def encode(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(len(body) + 1, kind) + body


def write_frame(fd: int, kind: int, body: bytes) -> None:
    data = memoryview(encode(kind, body))
    while data:
        try:
            n = os.write(fd, data)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        data = data[n:]


def send(kind: int, obj: Any, fd: Optional[int] = None) -> None:
    target = _write_fd if fd is None else fd
    if target is None:
        raise RuntimeError("not inside an isolate_runtime sandbox")
    write_frame(target, kind, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def send_message(obj: Any) -> None:
    """From inside a sandboxed callable: deliver ``obj`` (picklable) to the
    parent's ``on_message`` callback as soon as it is read."""
    send(MESSAGE, obj)


def in_sandbox() -> bool:
    """True inside a callable payload run by the runtime."""
    return _write_fd is not None


def set_write_fd(fd: Optional[int]) -> None:
    global _write_fd
    _write_fd = fd


class FrameReader:
    """Incremental decoder for the parent side."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self.eof = False
        self.garbage = False

    def read_available(self, limit: int = 1 << 20) -> List[Tuple[int, bytes]]:
        """Read what is there without blocking (fd must be non-blocking) and
        return complete frames."""
        got = 0
        while got < limit and not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:  # pragma: no cover - defensive
                if e.errno == errno.EINTR:
                    continue
                raise
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            got += len(chunk)
        return list(self._frames())

    def _frames(self) -> Iterator[Tuple[int, bytes]]:
        while len(self._buf) >= _HEADER.size and not self.garbage:
            length, kind = _HEADER.unpack_from(self._buf)
            if length < 1 or length > MAX_FRAME:
                # Someone wrote raw bytes into the channel: stop decoding,
                # the outcome falls back to the process status.
                self.garbage = True
                self._buf.clear()
                return
            end = 4 + length
            if len(self._buf) < end:
                return
            body = bytes(self._buf[_HEADER.size:end])
            del self._buf[:end]
            yield kind, body
