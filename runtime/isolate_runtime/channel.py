"""The result channel from the payload to the caller: untrusted, data only.

A pipe created before the fork: the caller keeps the read end, the
payload's process inherits the write end.  Frames are
``length (4 bytes, big-endian) | kind (1 byte) | body``, the body UTF-8 JSON.

Everything on this pipe was written by code the caller does not trust (the
payload, or whatever it started), so the caller's side is written as a
parser of hostile input:

- no decoder that can run code: JSON only, never pickle;
- a byte budget for the whole sandbox (:class:`FrameReader`): a frame whose
  header asks for more than what is left is refused before anything is
  buffered, so the caller's memory never grows past the budget; every frame
  counts at least :data:`FRAME_FLOOR` bytes, because what the caller makes
  of a frame costs it more than the frame's bytes (pytest turned 16 MiB of
  90-byte warnings into 150,000 warning objects and 170 MB);
- bounded decoding: integers of at most 64 digits, at most
  :data:`MAX_VALUES` values per frame (an array of empty arrays would
  otherwise cost ~20 bytes of the caller's memory per byte sent), nesting
  bounded by the interpreter's recursion limit, lone surrogates replaced;
- any violation raises :class:`ProtocolViolation`; the launcher then kills
  the sandbox and reports it, and the caller goes on.

The sandbox side binds ``os.write`` at import: a payload that patches or
mocks ``os.write`` does not change how the runtime's own frames go out.
"""
from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, Callable, Iterator, List, Optional, Tuple

_HEADER = struct.Struct(">IB")

MESSAGE = ord("M")  # a value passed to send_message()
RESULT = ord("R")   # the callable payload's return value
RAISED = ord("E")   # {"type", "module", "message", "traceback"}: what the callable raised
KINDS = (MESSAGE, RESULT, RAISED)

#: Default budget of bytes one sandbox may send (all frames together).
DEFAULT_LIMIT = 16 << 20
#: The least one frame counts against the budget, however short it is.
FRAME_FLOOR = 1024
#: Most values (array elements, object members, scalars) one frame may hold.
MAX_VALUES = 200_000
#: Most digits of an integer literal.
MAX_INT_DIGITS = 64
#: Deepest nesting of arrays and objects in one frame.  Whatever walks a
#: value later (a reporter's json.dumps, xdist's serializer, a repr) does
#: it recursively, from deep in pytest's stack: a bound well below the
#: interpreter's recursion limit leaves them room (pytest's reports nest
#: about ten deep).
MAX_DEPTH = 100

# Bound here: a test that mocks os.write must not change the runtime's own writes.
_os_write = os.write
_os_read = os.read


class ProtocolViolation(Exception):
    """What the sandbox sent breaks the protocol: ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class OverLimit(ProtocolViolation):
    """The sandbox sent more than its byte budget."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the sandbox sent more than its limit of {describe_size(limit)} of messages")
        self.limit = limit


def describe_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# ------------------------------------------------------------------ encoding (sandbox side)

def encode(kind: int, value: Any) -> bytes:
    """One frame holding ``value`` as JSON.  Raises ``TypeError`` for
    anything that is not plain data (dict with str keys, list, tuple, str,
    int, float, bool, None)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate (e.g. a file name decoded with surrogateescape) goes
    # out as a JSON escape instead of failing the encoding.
    body = text.encode("utf-8", "backslashreplace")
    return _HEADER.pack(len(body) + 1, kind) + body


def write_frame(fd: int, frame: bytes) -> None:
    """Write a whole frame; a write that writes nothing is an error (a
    mocked or broken ``write`` must not loop forever)."""
    data = memoryview(frame)
    while data:
        try:
            n = _os_write(fd, data)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not isinstance(n, int) or n <= 0:
            raise OSError(f"write to the result channel wrote {n!r} bytes")
        data = data[n:]


_write_fd: Optional[int] = None
_limit = DEFAULT_LIMIT
_sent = 0


def set_write_fd(fd: Optional[int], limit: int = DEFAULT_LIMIT) -> None:
    global _write_fd, _limit, _sent
    _write_fd = fd
    _limit = limit
    _sent = 0


def budget_left() -> int:
    """Inside a sandbox: how many more bytes the caller will accept."""
    return _limit - _sent


def in_sandbox() -> bool:
    """True inside a callable payload run by the runtime."""
    return _write_fd is not None


def frame_cost(size: int) -> int:
    """What a frame of ``size`` bytes (header included) counts against the budget."""
    return max(size, FRAME_FLOOR)


def send(kind: int, value: Any) -> None:
    fd = _write_fd
    if fd is None:
        raise RuntimeError("not inside an isolate_runtime sandbox")
    try:
        frame = encode(kind, value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"only plain data crosses the sandbox boundary (dict with str keys, list, str, int, "
                        f"float, bool, None): {e}") from None
    global _sent
    cost = frame_cost(len(frame))
    if _sent + cost > _limit:
        counted = "" if cost == len(frame) else f" (counted as {cost}: each message counts at least 1 KiB)"
        raise ValueError(f"a message of {len(frame)} bytes{counted} would take the sandbox past its limit of "
                         f"{describe_size(_limit)} ({_sent} bytes counted so far)")
    _sent += cost
    write_frame(fd, frame)


def send_message(value: Any) -> None:
    """From inside a sandboxed callable: deliver ``value`` (plain data: JSON
    types) to the caller's ``on_message`` callback as soon as it is read.
    Tuples arrive as lists."""
    send(MESSAGE, value)


# ------------------------------------------------------------------ decoding (caller side)

def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


_decoder = json.JSONDecoder(parse_int=_parse_int)
#: A JSON string once its escaped backslashes and quotes are taken out: no
#: quote inside, so the pattern cannot backtrack (linear in the body).
_STRINGS = re.compile(rb'"[^"]*"')
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: Every byte but the four the count needs.
_NOT_COUNTED = bytes(b for b in range(256) if b not in b'",[{')


def _count_values(body: bytes) -> int:
    """An upper bound of the values in ``body``; exact (strings stripped)
    only when the cheap bound is too high.  Linear time, a few copies of the
    body at most, whatever the body is: it runs before the body is known to
    be JSON."""
    cheap = body.count(b",") + body.count(b"[") + body.count(b"{") + 1
    if cheap <= MAX_VALUES:
        return cheap
    # In JSON a backslash only ever starts a two-character escape inside a
    # string: take out the escaped backslashes, then the escaped quotes
    # (left to right, as a parser pairs them); every quote left opens or
    # closes a string.
    bare = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_COUNTED)
    strings = bare.count(b'"') // 2
    if strings > 2 * MAX_VALUES:  # a member has at most two strings: too many values already
        return strings // 2
    bare = _STRINGS.sub(b"", bare)
    return bare.count(b",") + bare.count(b"[") + bare.count(b"{") + 1


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Is any array or object of ``value`` nested more than ``limit`` deep?
    (Iterative: the value may be nested as deep as the decoder allows.)"""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        items = v.values() if isinstance(v, dict) else v
        stack.extend((x, depth + 1) for x in items if isinstance(x, (list, dict)))
    return False


def decode(body: bytes) -> Any:
    """The value in one frame's body; :class:`ProtocolViolation` if it is not
    bounded, valid UTF-8 JSON."""
    if _count_values(body) > MAX_VALUES:
        raise ProtocolViolation(f"a message with more than {MAX_VALUES} values")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolViolation(f"a message that is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        value, end = _decoder.raw_decode(text)
    except RecursionError:
        raise ProtocolViolation("a message nested too deeply") from None
    except ValueError as e:
        raise ProtocolViolation(f"a message that is not JSON ({e})") from None
    if text[end:].strip():
        raise ProtocolViolation("a message with data after its JSON value")
    # (as many brackets as the bound, at most: never deeper than that)
    if isinstance(value, (list, dict)) and body.count(b"[") + body.count(b"{") > MAX_DEPTH \
            and _deeper_than(value, MAX_DEPTH):
        raise ProtocolViolation(f"a message nested more than {MAX_DEPTH} deep")
    if "\\ud" in text or "\\uD" in text:
        try:
            value = _scrub(value)
        except RecursionError:  # nesting the decoder took may be too deep for the scrub
            raise ProtocolViolation("a message nested too deeply") from None
    return value


class FrameReader:
    """Incremental, bounded reader of the result channel (caller side).

    ``limit`` bytes in all may be read, each frame counting at least
    :data:`FRAME_FLOOR`; a frame announced longer than what is left raises
    :class:`OverLimit` before its body is buffered.
    """

    def __init__(self, fd: int, limit: int = DEFAULT_LIMIT) -> None:
        self.fd = fd
        self.limit = limit
        self.consumed = 0
        self._buf = bytearray()
        self.eof = False

    def read_available(self, most: int = 1 << 20) -> List[Tuple[int, Any]]:
        """Read what is there without blocking (the fd must be non-blocking),
        at most ``most`` bytes, and return the complete frames decoded."""
        got = 0
        while got < most and not self.eof:
            try:
                chunk = _os_read(self.fd, min(65536, most - got))
            except BlockingIOError:
                break
            except InterruptedError:  # pragma: no cover
                continue
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            got += len(chunk)
            # Never buffer past the budget: check headers as they arrive.
            self._check_budget()
        return list(self._frames())

    @property
    def buffered(self) -> int:
        """Bytes read and not yet a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> List[Tuple[int, Any]]:
        """Take ``data`` as if read from the channel now (another process
        read it meanwhile), bounded and checked the same way."""
        self._buf += data
        self._check_budget()
        return list(self._frames())

    def _check_budget(self) -> None:
        # Every byte read counts, framed or not; and a frame whose header
        # already asks for more than is left is refused before its body.
        if self.consumed + len(self._buf) > self.limit:
            raise OverLimit(self.limit)
        if len(self._buf) >= _HEADER.size:
            length, _kind = _HEADER.unpack_from(self._buf)
            if self.consumed + frame_cost(4 + length) > self.limit:
                raise OverLimit(self.limit)

    def _frames(self) -> Iterator[Tuple[int, Any]]:
        while len(self._buf) >= _HEADER.size:
            length, kind = _HEADER.unpack_from(self._buf)
            if length < 1:
                raise ProtocolViolation("a frame of length 0")
            if self.consumed + frame_cost(4 + length) > self.limit:
                raise OverLimit(self.limit)
            end = 4 + length
            if len(self._buf) < end:
                return
            body = bytes(self._buf[_HEADER.size:end])
            del self._buf[:end]
            self.consumed += frame_cost(end)
            if kind not in KINDS:
                raise ProtocolViolation(f"a frame of unknown kind {kind}")
            yield kind, decode(body)

    def finish(self) -> None:
        """At EOF: bytes left over are a truncated frame."""
        if self._buf:
            raise ProtocolViolation(f"a truncated frame ({len(self._buf)} bytes left over when the channel closed)")


OnMessage = Callable[[Any], None]
