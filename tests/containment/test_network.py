"""With network="none", host servers on localhost and abstract unix sockets get no visitor."""
from __future__ import annotations

import socket
from typing import Any, Dict, Iterator, Tuple

import pytest

from .harness import Hostile

REACH = """
    import socket
    import hostile as h

    def connect(family, address):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(address)
            s.sendall(b"escaped")

    def send_udp(address):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"escaped", address)

    def test_reach_the_hosts_servers():
        h.attempt("tcp4", connect, socket.AF_INET, ("127.0.0.1", int(h.env("TCP4"))))
        if h.env("TCP6") != "0":
            h.attempt("tcp6", connect, socket.AF_INET6, ("::1", int(h.env("TCP6"))))
        h.attempt("udp4", send_udp, ("127.0.0.1", int(h.env("UDP4"))))
        h.attempt("abstract", connect, socket.AF_UNIX, "\\0" + h.env("ABSTRACT"))
        h.attempt("host-ip", connect, socket.AF_INET, (h.env("HOST_IP"), int(h.env("TCP_ANY"))))
"""


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


@pytest.fixture
def servers(hostile: Hostile) -> Iterator[Dict[str, Tuple[socket.socket, str]]]:
    """Listening host sockets (non-blocking), and what each one's address is."""
    made: Dict[str, Tuple[socket.socket, str]] = {}

    def listen(name: str, family: int, kind: int, address: Any) -> None:
        s = socket.socket(family, kind)
        s.bind(address)
        if kind == socket.SOCK_STREAM:
            s.listen(8)
        s.setblocking(False)
        made[name] = (s, str(s.getsockname()[1]) if family != socket.AF_UNIX else address[1:])

    try:
        listen("tcp4", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0))
        listen("tcp_any", socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 0))
        listen("udp4", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0))
        listen("abstract", socket.AF_UNIX, socket.SOCK_STREAM, "\0containment-" + hostile.tag)
        try:
            listen("tcp6", socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0))
        except OSError:  # no IPv6 on this host
            pass
        yield made
    finally:
        for s, _ in made.values():
            s.close()


def _visitors(servers: Dict[str, Tuple[socket.socket, str]]) -> Dict[str, str]:
    got = {}
    for name, (s, _) in servers.items():
        try:
            if s.type == socket.SOCK_DGRAM:
                data, _peer = s.recvfrom(100)
                got[name] = f"datagram {data!r}"
            else:
                conn, peer = s.accept()
                conn.close()
                got[name] = f"connection from {peer!r}"
        except BlockingIOError:
            continue
    return got


def test_host_localhost_servers_and_abstract_sockets_are_unreachable(
        hostile: Hostile, servers: Dict[str, Tuple[socket.socket, str]]) -> None:
    hostile.write(REACH)
    env = {"CONTAINMENT_" + name.upper(): addr for name, (_, addr) in servers.items()}
    env.setdefault("CONTAINMENT_TCP6", "0")
    env["CONTAINMENT_HOST_IP"] = _host_ip()
    inner = hostile.run(env=env)
    visitors = _visitors(servers)
    assert not visitors, f"host servers were reached from network='none': {visitors}; {hostile.all_evidence()}"
    inner.assert_healthy({"test_reach_the_hosts_servers": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    assert hostile.evidence("tcp4") == "ECONNREFUSED" and hostile.evidence("abstract") == "ECONNREFUSED"
