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


RELAY = """
    import array, errno, json, os, socket, threading, time
    import pytest
    import hostile as h

    @pytest.fixture(scope="session")
    def service():
        # the inner pytest's own loopback service (its sandboxes reach it,
        # relayed): records every byte it is sent, in the parent
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        got = []
        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=echo, args=(c,), daemon=True).start()
        def echo(c):
            with c:
                while True:
                    try:
                        data = c.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    got.append(data.decode(errors="replace"))
                    c.sendall(data)
        threading.Thread(target=serve, daemon=True).start()
        yield srv.getsockname()[1]
        h.record("service-got", "".join(got)[:10000])
        srv.close()

    def connect(port, host="127.0.0.1"):
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(b"escaped")

    def ask_the_service_to_proxy(port, target):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"CONNECT 127.0.0.1:{target} HTTP/1.1\\r\\n\\r\\n".encode())
            s.sendall(f"PROXY TCP4 127.0.0.1 127.0.0.1 1 {target}\\r\\n".encode())
            s.recv(1000)

    def forge_an_add(target):
        # what A sends the relay: a listener of ours, aimed at the forbidden port
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        port = lsock.getsockname()[1]
        msg = json.dumps({"op": "add", "id": 999999, "cap": 256, "targets": [["127.0.0.1", target]]}).encode()
        msg += b"\\0" + bytes(4)
        sent = {}
        for fd in h.pipe_fds():
            try:
                s = socket.socket(fileno=os.dup(fd))
                s.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [lsock.fileno()]))])
                sent[fd] = "sent"
                s.close()
            except OSError as e:
                sent[fd] = errno.errorcode.get(e.errno or 0, str(e))
        h.record("forged-add-sent-to", sent)
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(b"escaped")
            c.settimeout(1)
            try:
                c.recv(10)
            except OSError:
                pass

    def relay_memory():
        with open("/proc/self/maps") as f:
            return [line.strip() for line in f if "isolate-relay" in line]

    def test_reach_through_the_relay(service):
        forbidden = int(h.env("FORBIDDEN"))
        h.attempt("direct", connect, forbidden)
        h.attempt("proxy-words", ask_the_service_to_proxy, service, forbidden)
        h.attempt("forged-add", forge_an_add, forbidden)
        h.record("relay-memory", relay_memory())
        # a flood: 1000 connections, then wait until the last one is answered or reset
        socks = []
        outcome = {}
        for _ in range(1000):
            try:
                socks.append(socket.create_connection(("127.0.0.1", service), timeout=5))
            except OSError as e:  # reset while being made
                key = errno.errorcode.get(e.errno or 0, "?")
                outcome[key] = outcome.get(key, 0) + 1
        for s in socks:
            try:
                s.sendall(b"x")
                key = "answered" if s.recv(1) == b"x" else "EOF"
            except OSError as e:
                key = errno.errorcode.get(e.errno or 0, "?")
            outcome[key] = outcome.get(key, 0) + 1
        h.record("flood", outcome)
"""


def test_the_relay_reaches_only_the_inner_pytests_service_and_caps_a_flood(
        hostile: Hostile, servers: Dict[str, Tuple[socket.socket, str]]) -> None:
    """The sandbox reaches the inner pytest's own service and nothing else: not
    a host service (direct, by asking the relayed service to proxy, by
    forging the message its setup sends the relay), not the relay's memory;
    a flood of connections is stopped at the cap, its report says so, and
    the session goes on."""
    hostile.write(RELAY)
    inner = hostile.run(env={"CONTAINMENT_FORBIDDEN": servers["tcp4"][1]}, timeout=120)
    visitors = _visitors(servers)
    assert not visitors, f"a host server was reached through the relay: {visitors}; {hostile.all_evidence()}"
    inner.assert_healthy({"test_reach_through_the_relay": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    assert hostile.evidence("direct") == "ECONNREFUSED"
    assert "CONNECT 127.0.0.1:" in hostile.evidence("service-got"), "the relayed service did not get the bytes"
    assert hostile.evidence("relay-memory") == [], "the relay's counters are mapped in the sandbox"
    flood = hostile.evidence("flood")
    assert flood.get("answered") == 256 and sum(flood.values()) == 1000, flood
    (section,) = [content for when, title, content in inner.sections("test_reach_through_the_relay")
                  if title == "pytest-isolate: network relay, at sandbox teardown"]
    assert section.startswith("the network relay refused 744 connection(s): the sandbox had 256 relayed "
                              "connections open at once, the most one sandbox may have (services: 127.0.0.1:"), section
