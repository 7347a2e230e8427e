"""Just enough D-Bus to call one method of systemd and read its answer.

A client for a peer-to-peer connection to a unix socket (systemd's private
socket, as ``systemctl`` and ``systemd-run`` use it): SASL ``EXTERNAL``
authentication, then one method call and its reply, marshalled in
little-endian by the D-Bus specification
(https://dbus.freedesktop.org/doc/dbus-specification.html).  No message
bus, no signals, no file descriptors; standard library only, so that
asking systemd for a delegated cgroup adds no dependency.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

METHOD_CALL, METHOD_RETURN, ERROR = 1, 2, 3
#: Header field codes.
PATH, INTERFACE, MEMBER, ERROR_NAME, REPLY_SERIAL, DESTINATION, SENDER, SIGNATURE = 1, 2, 3, 4, 5, 6, 7, 8
_FIELD_TYPES = {PATH: "o", INTERFACE: "s", MEMBER: "s", ERROR_NAME: "s", REPLY_SERIAL: "u",
                DESTINATION: "s", SENDER: "s", SIGNATURE: "g"}
_FIXED = {"y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4), "u": ("I", 4),
          "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "h": ("I", 4)}
#: Replies larger than this are not from systemd.
MAX_MESSAGE = 1 << 20


class DBusError(Exception):
    """The peer answered with a D-Bus error (``name``: e.g.
    ``org.freedesktop.DBus.Error.AccessDenied``), or the exchange failed."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name, message)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


@dataclass(frozen=True)
class Variant:
    """A value with its D-Bus signature, for ``v`` slots."""

    signature: str
    value: Any


# ------------------------------------------------------------------ marshalling

def _single(sig: str, i: int = 0) -> int:
    """End index of the single complete type starting at ``sig[i]``."""
    c = sig[i]
    if c == "a":
        return _single(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while sig[j] != close:
            j = _single(sig, j)
        return j + 1
    return i + 1


def _split(sig: str) -> List[str]:
    out, i = [], 0
    while i < len(sig):
        j = _single(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _align_of(t: str) -> int:
    if t[0] in _FIXED:
        return _FIXED[t[0]][1]
    return {"s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1}[t[0]]


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def pad(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def put(self, t: str, value: Any) -> None:
        c = t[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.pad(size)
            self.buf += struct.pack("<" + fmt, int(value) if c == "b" else value)
        elif c in "so":
            data = str(value).encode()
            self.pad(4)
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
        elif c == "g":
            data = str(value).encode()
            self.buf += struct.pack("<B", len(data)) + data + b"\0"
        elif c == "v":
            assert isinstance(value, Variant)
            self.put("g", value.signature)
            self.put(value.signature, value.value)
        elif c == "a":
            item = t[1:]
            self.pad(4)
            at = len(self.buf)
            self.buf += b"\0\0\0\0"
            self.pad(_align_of(item))  # the padding before the first element is not counted
            start = len(self.buf)
            for element in (value.items() if item[0] == "{" else value):
                self.put(item, element)
            struct.pack_into("<I", self.buf, at, len(self.buf) - start)
        elif c in "({":
            self.pad(8)
            for part, v in zip(_split(t[1:-1]), value):
                self.put(part, v)
        else:  # pragma: no cover - not used by our calls
            raise ValueError(f"cannot marshal D-Bus type {t!r}")


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def pad(self, n: int) -> None:
        self.pos += -self.pos % n

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DBusError("org.freedesktop.DBus.Error.InvalidArgs", "truncated message")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def get(self, t: str) -> Any:
        c = t[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.pad(size)
            v = struct.unpack("<" + fmt, self.take(size))[0]
            return bool(v) if c == "b" else v
        if c in "so":
            self.pad(4)
            n = struct.unpack("<I", self.take(4))[0]
            s = self.take(n + 1)[:-1]
            return s.decode("utf-8", "replace")
        if c == "g":
            n = self.take(1)[0]
            return self.take(n + 1)[:-1].decode()
        if c == "v":
            sig = self.get("g")
            return Variant(sig, self.get(sig))
        if c == "a":
            self.pad(4)
            n = struct.unpack("<I", self.take(4))[0]
            item = t[1:]
            self.pad(_align_of(item))
            end = self.pos + n
            out = []
            while self.pos < end:
                out.append(self.get(item))
            return dict(out) if item[0] == "{" else out
        if c in "({":
            self.pad(8)
            return tuple(self.get(part) for part in _split(t[1:-1]))
        raise DBusError("org.freedesktop.DBus.Error.InvalidSignature", f"cannot read D-Bus type {t!r}")


#: Header flag: the sender does not want a reply.
NO_REPLY_EXPECTED = 0x1


def encode(kind: int, serial: int, fields: Dict[int, Any], signature: str = "", body: Sequence[Any] = (),
           flags: int = 0) -> bytes:
    """One message: header, header fields, body."""
    payload = _Writer()
    for t, v in zip(_split(signature), body):
        payload.put(t, v)
    if signature:
        fields = {**fields, SIGNATURE: signature}
    head = _Writer()
    head.buf += struct.pack("<cBBBII", b"l", kind, flags, 1, len(payload.buf), serial)
    head.put("a(yv)", [(code, Variant(_FIELD_TYPES[code], v)) for code, v in sorted(fields.items())])
    head.pad(8)
    return bytes(head.buf + payload.buf)


@dataclass(frozen=True)
class Message:
    kind: int
    serial: int
    fields: Dict[int, Any]
    body: Tuple[Any, ...]


def decode(data: bytes) -> Message:
    if data[:1] != b"l":
        raise DBusError("org.freedesktop.DBus.Error.NotSupported", "a big-endian peer")
    r = _Reader(data)
    _, kind, _flags, _version, _length, serial = struct.unpack("<cBBBII", r.take(12))
    fields = {code: v.value for code, v in r.get("a(yv)")}
    r.pad(8)
    body = tuple(r.get(t) for t in _split(fields.get(SIGNATURE, "")))
    return Message(kind, serial, fields, body)


def _message_length(head: bytes) -> int:
    """Total length of a message from its first 16 bytes."""
    body_len, _serial, fields_len = struct.unpack("<III", head[4:16])
    return int(16 + fields_len + (-(16 + fields_len) % 8) + body_len)


# ------------------------------------------------------------------ connection

#: See :meth:`Connection._nudge`.
NUDGE_SECONDS = 0.2


class Connection:
    """An authenticated peer-to-peer connection to a unix socket."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self._serial = 0
        try:
            self.sock.connect(path)
            self._auth()
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> bytes:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            if not chunk or len(data) > 4096:
                raise DBusError("org.freedesktop.DBus.Error.AuthFailed", f"{self.path} closed the connection "
                                "while authenticating")
            data += chunk
        return data[:-2]

    def _auth(self) -> None:
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        answer = self._line()
        if not answer.startswith(b"OK "):
            raise DBusError("org.freedesktop.DBus.Error.AuthFailed",
                            f"{self.path} refused uid {os.geteuid()}: {answer.decode(errors='replace')}")
        self.sock.sendall(b"BEGIN\r\n")

    def _recv_exact(self, n: int, deadline: float, nudge: bool = False) -> bytes:
        data = b""
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            ready, _, _ = select.select([self.sock], [], [], min(left, NUDGE_SECONDS) if nudge else left)
            if not ready:
                if nudge and not data:
                    self._nudge()
                continue
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise DBusError("org.freedesktop.DBus.Error.NoReply", f"{self.path} closed the connection")
            data += chunk
        return data

    def _nudge(self) -> None:
        """systemd's sd-bus (seen with 252) leaves a first message that arrived
        in the same read as ``BEGIN`` in its buffer until the socket becomes
        readable again (systemd/systemd#24875 fixed the same for a server's
        own first write).  A ``Ping`` that asks for no reply makes it
        readable; replies are matched by serial, so nothing else changes."""
        self._serial += 1
        self.sock.sendall(encode(METHOD_CALL, self._serial, {PATH: "/", INTERFACE: "org.freedesktop.DBus.Peer",
                                                              MEMBER: "Ping"}, flags=NO_REPLY_EXPECTED))

    def call(self, destination: Optional[str], path: str, interface: str, member: str, signature: str = "",
             body: Sequence[Any] = ()) -> Tuple[Any, ...]:
        """Call a method; its reply's body, or :class:`DBusError`."""
        self._serial += 1
        serial = self._serial
        fields: Dict[int, Any] = {PATH: path, INTERFACE: interface, MEMBER: member}
        if destination:
            fields[DESTINATION] = destination
        self.sock.sendall(encode(METHOD_CALL, serial, fields, signature, body))
        deadline = time.monotonic() + self.timeout
        while True:
            head = self._recv_exact(16, deadline, nudge=True)
            total = _message_length(head)
            if total > MAX_MESSAGE:
                raise DBusError("org.freedesktop.DBus.Error.LimitsExceeded", f"a {total}-byte message")
            msg = decode(head + self._recv_exact(total - 16, deadline))
            if msg.fields.get(REPLY_SERIAL) != serial:
                continue  # a signal or an unrelated message
            if msg.kind == ERROR:
                text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                raise DBusError(str(msg.fields.get(ERROR_NAME, "org.freedesktop.DBus.Error.Failed")), text)
            return msg.body
