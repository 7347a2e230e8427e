"""Which host services a sandbox reaches, and where each one is relayed to.

A sandbox with its own network namespace sees only its own loopback.  With
``network="services"`` it also reaches the TCP services that the caller (and
any of its descendants) listen on at the host's loopback *when the sandbox
is made*, and with ``forward=(...)`` the host loopback ports named there:
each becomes a listener at the same address and port inside the sandbox,
whose connections the relay (:mod:`isolate_runtime.relayd`) carries to the
real one.  Nothing else of the host is reachable.

Three steps, the last one pure (tested without a kernel)::

    listening()     the host's TCP sockets in LISTEN: sock_diag (only the
                    listening table is walked), /proc/net/tcp as fallback
    owned_inodes()  which of them the caller or its descendants hold
                    (their /proc/PID/fd), once per listener
    plan()          the forwards: (address inside, port, target on the host)

Why not /proc/net/tcp every time: the kernel walks its whole established
hash to print it, 4-8 ms on the development machine with a dozen sockets;
the LISTEN-only sock_diag dump costs tens of microseconds, plus about
1.5 us for every listener on the host's loopback (a busy shared machine
had 500-800 of them, other jobs' test servers: 1-1.6 ms per look).

A caller that knows when its services may change (the pytest plugin: when
it sets up or tears down a fixture of a higher scope, or runs a test in its
own process) can say so (:func:`reuse_looks`, :func:`services_changed`);
sandboxes made in between then reuse the last look for up to
REUSE_SECONDS instead of asking the kernel again.  It can also say which of
its listeners are not services (:func:`ignore_current_services`: the pytest
plugin, for what pytest's process held before its session started, e.g.
pytest-rerunfailures' status server): those are never forwarded, so a test
can neither reach a plugin's own server nor cost every sandbox a listener.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

#: Most services forwarded into one sandbox (calls.MAX_LISTEN).
MAX_FORWARDS = 64

_EXAMPLES = "like 127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379"


@dataclass(frozen=True)
class Listener:
    """A TCP socket in LISTEN on the host."""

    family: int
    #: As the kernel has it: "127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1".
    address: str
    port: int
    inode: int
    #: IPv6 only (IPV6_V6ONLY), for an AF_INET6 socket when known.
    v6only: Optional[bool] = None

    # (string tests, not the ipaddress module: a sandbox is made every few
    # milliseconds, and parsing every listener's address cost more than
    # asking the kernel for them)

    @property
    def loopback_v4(self) -> Optional[str]:
        """The IPv4 loopback address it takes connections on (``0.0.0.0`` and
        a dual-stack ``::`` do on 127.0.0.1), or None."""
        address = self.address
        if self.family == socket.AF_INET6:
            if address == "::" and self.v6only is False:
                return "127.0.0.1"
            if not (address.startswith("::ffff:") and "." in address):
                return None
            address = address[7:]  # an IPv4-mapped address, as inet_ntop writes it
        if address == "0.0.0.0":
            return "127.0.0.1"
        return address if address.startswith("127.") else None

    @property
    def loopback_v6(self) -> bool:
        """Does it take connections on ::1?"""
        return self.family == socket.AF_INET6 and self.address in ("::1", "::")

    @property
    def wildcard_v4(self) -> bool:
        """Does it take connections on every IPv4 address (127.0.0.0/8 included)?"""
        return self.address in ("0.0.0.0", "::ffff:0.0.0.0") or (self.address == "::" and self.v6only is False)

    @property
    def on_loopback(self) -> bool:
        return self.loopback_v4 is not None or self.loopback_v6


@dataclass(frozen=True)
class Forward:
    """One service relayed into a sandbox."""

    #: Where the listener is inside the sandbox: "127.0.0.1", "::1", "127.0.0.2".
    address: str
    port: int
    #: The host address the relay connects to (on the same port).
    target: str
    #: "caller" (a listener of the caller's process tree) or "declared".
    origin: str

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


# ------------------------------------------------------------------ declared endpoints

def parse_endpoint(text: str) -> Tuple[Tuple[str, ...], int]:
    """``"127.0.0.1:5432"`` → (("127.0.0.1",), 5432); ``"localhost:6379"``
    and ``"6379"`` → (("127.0.0.1", "::1"), 6379); ``"[::1]:5432"`` →
    (("::1",), 5432).  Raises ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"expected a host loopback port {_EXAMPLES}")
    raw = text.strip()
    if raw.isdigit():
        host, port_text = "localhost", raw
    elif raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [ADDRESS]:PORT for an IPv6 address, {_EXAMPLES}")
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT or a port, {_EXAMPLES}")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets, {_EXAMPLES}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be a number from 1 to 65535, {_EXAMPLES}")
    if host.lower() == "localhost":
        return ("127.0.0.1", "::1"), int(port_text)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a loopback address: only the host's loopback ports can be forwarded, "
                         f"{_EXAMPLES}") from None
    if not addr.is_loopback:
        raise ValueError(f"{host} is not a loopback address: only the host's loopback ports can be forwarded, "
                         f"{_EXAMPLES}")
    return (str(addr),), int(port_text)


# ------------------------------------------------------------------ the plan (pure)

def plan(listeners: Iterable[Listener], owned: FrozenSet[int], services: bool,
         declared: Sequence[str]) -> List[Forward]:
    """The forwards of one sandbox: with ``services``, every loopback (or
    wildcard) listener whose inode is in ``owned``; and each ``declared``
    endpoint that something listens on now (whoever owns it).  A port that
    nothing listens on is not forwarded: inside, as on the host, connecting
    to it is refused.  At most MAX_FORWARDS, the caller's first."""
    listeners = [lst for lst in listeners if lst.on_loopback]
    out: Dict[Tuple[str, int], Forward] = {}

    def add(address: str, port: int, origin: str) -> None:
        if (address, port) not in out and len(out) < MAX_FORWARDS:
            out[(address, port)] = Forward(address, port, address, origin)

    if services:
        mine = [lst for lst in listeners if lst.inode in owned]
        others = [lst for lst in listeners if lst.inode not in owned]
        for lst in sorted(mine, key=lambda x: (x.port, x.family, x.address)):
            v4 = lst.loopback_v4
            if v4 is not None and not _foreign(lst, v4, others):
                add(v4, lst.port, "caller")
            if lst.loopback_v6 and not _foreign(lst, "::1", others):
                add("::1", lst.port, "caller")
    for text in declared:
        addresses, port = parse_endpoint(text)
        for address in addresses:
            if any(_takes(lst, address, port) for lst in listeners):
                add(address, port, "declared")
    return list(out.values())


def _takes(lst: Listener, address: str, port: int) -> bool:
    """Does ``lst`` take connections to address:port on the host's loopback?"""
    if lst.port != port:
        return False
    if ":" in address:
        return lst.loopback_v6
    return lst.wildcard_v4 or lst.loopback_v4 == address


def _exact(lst: Listener, address: str) -> bool:
    """Is ``lst`` bound to ``address`` itself (not a wildcard)?"""
    return (lst.loopback_v4 == address and not lst.wildcard_v4) if "." in address else lst.address == "::1"


def _foreign(lst: Listener, address: str, others: Sequence[Listener]) -> bool:
    """Would a connection to address:port on the host's loopback reach
    another owner's listener rather than ``lst`` (ours)?  The kernel gives it
    to the most specific bind, and shares it out among equals
    (``SO_REUSEPORT``, or a dual-stack ``::`` beside ``0.0.0.0``): another
    owner's listener on that port that takes the address counts unless ours
    is bound to the address itself and theirs is a wildcard."""
    for o in others:
        if o.port != lst.port or not _takes(o, address, lst.port):
            continue
        if _exact(lst, address) and not _exact(o, address):
            continue
        return True
    return False


# ------------------------------------------------------------------ what listens (sock_diag)

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_INET_DIAG_SKV6ONLY = 11


_MAPPED = bytes(10) + b"\xff\xff"
_LOOP6, _ANY6, _ANY4 = bytes(15) + b"\x01", bytes(16), bytes(4)
#: Listener objects by what the kernel said of them: a host with hundreds of
#: loopback listeners (a busy shared CI machine) costs a lookup each, not an
#: object each, every time a sandbox is made.
_known: Dict[Tuple[int, bytes, int, int, Optional[bool]], Listener] = {}


def _loopback_or_any(family: int, src: bytes) -> bool:
    if family == socket.AF_INET:
        return src[0] == 127 or src == _ANY4
    if src == _LOOP6 or src == _ANY6:
        return True
    return src[:12] == _MAPPED and (src[12] == 127 or src[12:] == _ANY4)


def _diag(sock: socket.socket, family: int) -> List[Listener]:
    """The listening TCP sockets of ``family`` on loopback or a wildcard address."""
    # (the kernel adds INET_DIAG_SKV6ONLY to every listening AF_INET6 socket)
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
    sock.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + req)
    out: List[Listener] = []
    alen = 4 if family == socket.AF_INET else 16
    v6 = family == socket.AF_INET6
    order = sys.byteorder
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise OSError(errno.EIO, "sock_diag: no answer")
        off = 0
        end = len(data)
        while off + 16 <= end:
            length, kind = _NLMSG.unpack_from(data, off)
            if kind == _NLMSG_DONE:
                return out
            if kind == _NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, off + 16)[0]
                raise OSError(err, os.strerror(err))
            body = off + 16
            src = data[body + 8:body + 8 + alen]
            if _loopback_or_any(family, src):
                port = int.from_bytes(data[body + 4:body + 6], "big")
                inode = int.from_bytes(data[body + 68:body + 72], order)
                v6only: Optional[bool] = None
                if v6:
                    attr = body + 72
                    while attr + 4 <= off + length:
                        alen_, atype = _RTA.unpack_from(data, attr)
                        if alen_ < 4:
                            break
                        if atype == _INET_DIAG_SKV6ONLY and alen_ >= 5:
                            v6only = bool(data[attr + 4])
                        attr += (alen_ + 3) & ~3
                key = (family, src, port, inode, v6only)
                lst = _known.get(key)
                if lst is None:
                    if len(_known) > 4096:
                        _known.clear()
                    lst = _known[key] = Listener(family, socket.inet_ntop(family, src), port, inode, v6only)
                out.append(lst)
            off += (length + 3) & ~3


_NLMSG = struct.Struct("=IH")
_RTA = struct.Struct("=HH")


def _proc_tcp(proc: str = "/proc") -> List[Listener]:
    """The fallback: /proc/net/tcp{,6} (slow on a busy host; see the module doc)."""
    out: List[Listener] = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"{proc}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "0A":
                continue
            hexaddr, hexport = parts[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # the kernel prints each 32-bit word in host order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) if _LITTLE else raw
            out.append(Listener(family, socket.inet_ntop(family, raw), int(hexport, 16), int(parts[9])))
    return out


_LITTLE = struct.pack("=I", 1) == struct.pack("<I", 1)


def listening() -> List[Listener]:
    """The host's TCP sockets in LISTEN on loopback or a wildcard address (in
    this process's network namespace)."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
            return _diag(sock, socket.AF_INET) + _diag(sock, socket.AF_INET6)
    except OSError:  # no sock_diag here (a kernel without it, a seccomp filter)
        return [lst for lst in _proc_tcp() if lst.on_loopback]


# ------------------------------------------------------------------ who holds them

def _children_of(proc: str) -> Dict[int, List[int]]:
    """ppid -> pids, from every /proc/PID/stat (kernels without
    /proc/PID/task/TID/children)."""
    out: Dict[int, List[int]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{proc}/{name}/stat", os.O_RDONLY | os.O_CLOEXEC)
            try:
                stat = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(b")") + 2:].split(None, 2)[1])
        out.setdefault(ppid, []).append(int(name))
    return out


def _children_files(proc: str, pid: int) -> Optional[List[int]]:
    """The children of ``pid`` from /proc/PID/task/TID/children (None: this
    kernel has no such files, CONFIG_PROC_CHILDREN)."""
    try:
        tasks = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return []
    out: List[int] = []
    for tid in tasks:
        try:
            with open(f"{proc}/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"{proc}/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None
        except OSError:
            continue
    return out


def _same_pid_namespace(proc: str, pid: int, mine: str) -> bool:
    try:
        return os.readlink(f"{proc}/{pid}/ns/pid") == mine
    except OSError:
        return False


def owned_inodes(inodes: Set[int], root: int, proc: str = "/proc") -> Set[int]:
    """Which of ``inodes`` the process ``root`` or any of its descendants in
    its PID namespace holds a descriptor of.  Sandboxes (other PID
    namespaces) are not looked into: they are not the caller's services,
    and their descriptors are theirs."""
    found: Set[int] = set()
    try:
        mine = os.readlink(f"{proc}/{root}/ns/pid")
    except OSError:
        return found
    table: Optional[Dict[int, List[int]]] = None
    todo = [root]
    seen: Set[int] = set()
    while todo and found != inodes:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if pid != root and not _same_pid_namespace(proc, pid, mine):
            continue
        found |= _socket_inodes(proc, pid) & inodes
        if found == inodes:
            break
        kids = _children_files(proc, pid) if table is None else None
        if kids is None:
            # no children files here: one pass over every process instead
            table = _children_of(proc) if table is None else table
            kids = table.get(pid, [])
        todo.extend(kids)
    return found


def _socket_inodes(proc: str, pid: int) -> Set[int]:
    out: Set[int] = set()
    base = f"{proc}/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


# ------------------------------------------------------------------ one sandbox's forwards

#: Whose each loopback listener is, by socket inode (unique while the
#: socket lives): True for the caller's tree.  A verdict is made once per
#: listener, so a sandbox made while the same listeners exist looks at no
#: descriptor, and another job's listeners coming and going on a shared
#: host cost one look each.  (An inode handed to the caller later with
#: SCM_RIGHTS would keep its first verdict.)
_verdicts: Dict[int, bool] = {}
_verdicts_for = -1
#: The last plan and what it was made from (the listeners are the same
#: objects while the kernel reports the same sockets: see _known).
_last: Optional[Tuple[Tuple[Listener, ...], bool, Tuple[str, ...], int, Tuple[Forward, ...]]] = None

#: How long a look at the listeners may serve later sandboxes, for a caller
#: that said when its services change (see the module docstring).
REUSE_SECONDS = 1.0
_reuse = False
_changes = 0
#: The last look: (the caller's count of changes then, when, what listened).
_look: Optional[Tuple[int, float, Tuple[Listener, ...]]] = None


def _forget_inherited() -> None:
    """In a fork of the caller (a sandbox's process among them): the looks
    were the parent's, made in its network namespace."""
    global _reuse, _look, _last, _verdicts_for
    _reuse, _look, _last, _verdicts_for = False, None, None, -1
    _verdicts.clear()


os.register_at_fork(after_in_child=_forget_inherited)


#: Listeners of the caller that are not services (ignore_current_services).
_ignored: FrozenSet[int] = frozenset()


def ignore_current_services() -> Tuple[str, ...]:
    """The loopback listeners this process and its descendants hold now are
    not services: no sandbox gets them (unless declared in ``forward``).
    Returns them as ``address:port``, for the caller to say so."""
    global _ignored, _last
    listeners = [lst for lst in listening() if lst.on_loopback]
    mine = owned_inodes({lst.inode for lst in listeners}, os.getpid()) if listeners else set()
    _ignored = frozenset(mine)
    _last = None
    services_changed()
    return tuple(sorted({f"{'[' + lst.address + ']' if ':' in lst.address else lst.address}:{lst.port}"
                         for lst in listeners if lst.inode in mine}))


def reuse_looks(on: bool) -> None:
    """From now on (``on``), the caller calls :func:`services_changed`
    whenever the services it runs may have changed; until then a sandbox
    reuses the last look at the host's listeners if it is younger than
    REUSE_SECONDS.  Off (the default): every sandbox looks."""
    global _reuse, _look
    _reuse, _look = on, None


def services_changed() -> None:
    """The caller's services may have changed: the next sandbox looks again."""
    global _changes
    _changes += 1


def _listeners_now() -> Tuple[Listener, ...]:
    global _look
    now = time.monotonic()
    look = _look
    if _reuse and look is not None and look[0] == _changes and now - look[1] < REUSE_SECONDS:
        return look[2]
    listeners = tuple(listening())
    _look = (_changes, now, listeners)
    return listeners


def for_sandbox(services: bool, declared: Sequence[str], root: Optional[int] = None) -> List[Forward]:
    """The forwards of a sandbox made now by process ``root`` (default: this one)."""
    global _verdicts_for, _last
    if not services and not declared:
        return []
    root = os.getpid() if root is None else root
    listeners = _listeners_now()
    declared = tuple(declared)
    last = _last
    if last is not None and last[1] == services and last[2] == declared and last[3] == root and last[0] == listeners:
        return list(last[4])
    owned: FrozenSet[int] = frozenset()
    if services and listeners:
        if _verdicts_for != root:
            _verdicts.clear()
            _verdicts_for = root
        unknown = {lst.inode for lst in listeners} - _verdicts.keys()
        if unknown:
            mine = owned_inodes(unknown, root)
            for inode in unknown:
                _verdicts[inode] = inode in mine
            if len(_verdicts) > 2 * len(listeners) + 256:  # forget listeners that are gone
                current = {lst.inode for lst in listeners}
                for inode in [i for i in _verdicts if i not in current]:
                    del _verdicts[inode]
        owned = frozenset(lst.inode for lst in listeners if _verdicts.get(lst.inode) and lst.inode not in _ignored)
    forwards = plan(listeners, owned, services, declared)
    _last = (listeners, services, declared, root, tuple(forwards))
    return forwards
