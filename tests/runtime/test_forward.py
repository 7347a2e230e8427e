"""Which services a sandbox reaches: the plan from what listens, without a kernel."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import List, Tuple

import pytest
from isolate_runtime import forward
from isolate_runtime.forward import Forward, Listener, parse_endpoint, plan

V4, V6 = socket.AF_INET, socket.AF_INET6


def _strs(forwards: List[Forward]) -> List[Tuple[str, str, str]]:
    return [(str(f), f.target, f.origin) for f in forwards]


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5432", (("127.0.0.1",), 5432)),
    ("127.0.0.2:80", (("127.0.0.2",), 80)),
    ("localhost:6379", (("127.0.0.1", "::1"), 6379)),
    ("LocalHost:6379", (("127.0.0.1", "::1"), 6379)),
    ("6379", (("127.0.0.1", "::1"), 6379)),
    ("[::1]:5432", (("::1",), 5432)),
    (" 127.0.0.1:1 ", (("127.0.0.1",), 1)),
])
def test_endpoints(text: str, expected: Tuple[Tuple[str, ...], int]) -> None:
    assert parse_endpoint(text) == expected


EXAMPLES = "like 127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379"
ONLY = f"only the host's loopback ports can be forwarded, {EXAMPLES}"


@pytest.mark.parametrize("text, why", [
    ("10.0.0.5:5432", f"10.0.0.5 is not a loopback address: {ONLY}"),
    ("db:5432", f"'db' is not a loopback address: {ONLY}"),
    ("[fe80::1]:22", f"fe80::1 is not a loopback address: {ONLY}"),
    ("127.0.0.1:0", f"the port must be a number from 1 to 65535, {EXAMPLES}"),
    ("127.0.0.1:65536", f"the port must be a number from 1 to 65535, {EXAMPLES}"),
    ("localhost:http", f"the port must be a number from 1 to 65535, {EXAMPLES}"),
    ("127.0.0.1", f"expected HOST:PORT or a port, {EXAMPLES}"),
    (":5432", f"expected HOST:PORT or a port, {EXAMPLES}"),
    ("::1:5432", f"write an IPv6 address in brackets, {EXAMPLES}"),
    ("[::1]5432", f"expected [ADDRESS]:PORT for an IPv6 address, {EXAMPLES}"),
    ("", f"expected HOST:PORT or a port, {EXAMPLES}"),
])
def test_bad_endpoints_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_endpoint(text)
    assert str(e.value) == why


OURS = frozenset({1, 2, 3, 4, 5, 6})


def test_the_callers_listeners_are_forwarded_at_their_address() -> None:
    listeners = [Listener(V4, "127.0.0.1", 8000, 1), Listener(V6, "::1", 8001, 2),
                 Listener(V4, "127.0.0.2", 8002, 3)]
    assert _strs(plan(listeners, OURS, True, ())) == [
        ("127.0.0.1:8000", "127.0.0.1", "caller"), ("[::1]:8001", "::1", "caller"),
        ("127.0.0.2:8002", "127.0.0.2", "caller")]


def test_wildcards_are_forwarded_on_the_loopback_they_take() -> None:
    listeners = [Listener(V4, "0.0.0.0", 8000, 1), Listener(V6, "::", 8001, 2, v6only=False),
                 Listener(V6, "::", 8002, 3, v6only=True), Listener(V6, "::", 8003, 4, v6only=None),
                 Listener(V6, "::ffff:127.0.0.1", 8004, 5), Listener(V6, "::ffff:0.0.0.0", 8005, 6)]
    assert _strs(plan(listeners, OURS, True, ())) == [
        ("127.0.0.1:8000", "127.0.0.1", "caller"),
        ("127.0.0.1:8001", "127.0.0.1", "caller"), ("[::1]:8001", "::1", "caller"),  # dual stack
        ("[::1]:8002", "::1", "caller"),  # IPv6 only
        ("[::1]:8003", "::1", "caller"),  # not known (from /proc/net/tcp6): the IPv6 side only
        ("127.0.0.1:8004", "127.0.0.1", "caller"), ("127.0.0.1:8005", "127.0.0.1", "caller")]


def test_listeners_off_loopback_and_of_others_are_not_forwarded() -> None:
    listeners = [Listener(V4, "10.1.2.3", 8000, 1), Listener(V6, "fe80::1", 8001, 2),
                 Listener(V4, "127.0.0.1", 8002, 99), Listener(V4, "0.0.0.0", 8003, 98)]
    assert plan(listeners, OURS, True, ()) == []
    assert plan(listeners, frozenset(), False, ()) == []


def test_with_services_off_only_declared_ports_are_forwarded() -> None:
    listeners = [Listener(V4, "127.0.0.1", 8000, 1), Listener(V4, "127.0.0.1", 5432, 99)]
    assert _strs(plan(listeners, OURS, False, ("127.0.0.1:5432",))) == [("127.0.0.1:5432", "127.0.0.1", "declared")]


def test_a_declared_port_is_forwarded_where_something_listens() -> None:
    listeners = [Listener(V4, "127.0.0.1", 5432, 90), Listener(V6, "::", 6379, 91, v6only=False),
                 Listener(V4, "0.0.0.0", 11211, 92), Listener(V6, "::1", 9000, 93)]
    declared = ("localhost:5432", "localhost:6379", "127.0.0.5:11211", "9000", "localhost:1")
    assert _strs(plan(listeners, frozenset(), True, declared)) == [
        ("127.0.0.1:5432", "127.0.0.1", "declared"),  # not ::1: nothing listens there
        ("127.0.0.1:6379", "127.0.0.1", "declared"), ("[::1]:6379", "::1", "declared"),
        ("127.0.0.5:11211", "127.0.0.5", "declared"),  # 0.0.0.0 takes all of 127/8
        ("[::1]:9000", "::1", "declared")]  # and nothing for port 1: refused inside, as on the host


def test_a_port_that_is_ours_and_declared_is_forwarded_once() -> None:
    listeners = [Listener(V4, "127.0.0.1", 8000, 1)]
    assert _strs(plan(listeners, OURS, True, ("127.0.0.1:8000", "8000"))) == [
        ("127.0.0.1:8000", "127.0.0.1", "caller")]


def test_a_dual_stack_listener_whose_ipv4_port_is_someone_elses_keeps_to_ipv6() -> None:
    listeners = [Listener(V6, "::", 8000, 1, v6only=False), Listener(V4, "127.0.0.1", 8000, 99)]
    assert _strs(plan(listeners, OURS, True, ())) == [("[::1]:8000", "::1", "caller")]


def test_an_address_another_owner_also_takes_is_not_forwarded() -> None:
    """The kernel gives a connection to the most specific bind and shares it
    out among equals (SO_REUSEPORT): relaying there could reach theirs."""
    listeners = [Listener(V4, "0.0.0.0", 8000, 1), Listener(V4, "127.0.0.1", 8000, 99),  # theirs is more specific
                 Listener(V4, "127.0.0.1", 8001, 2), Listener(V4, "127.0.0.1", 8001, 98),  # equals: shared out
                 Listener(V4, "127.0.0.1", 8002, 3), Listener(V4, "0.0.0.0", 8002, 97),  # ours is more specific
                 Listener(V6, "::", 8003, 4, v6only=True), Listener(V6, "::1", 8003, 96)]
    assert _strs(plan(listeners, OURS, True, ())) == [("127.0.0.1:8002", "127.0.0.1", "caller")]


def test_at_most_max_forwards() -> None:
    listeners = [Listener(V4, "127.0.0.1", 10000 + i, i) for i in range(100)]
    got = plan(listeners, frozenset(range(100)), True, ())
    assert len(got) == forward.MAX_FORWARDS and got[0].port == 10000


def test_proc_net_tcp_is_read_as_the_kernel_writes_it(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0\n"
        "   1: 0100007F:C34A 0100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0\n"
        "   2: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4244 1 0\n")
    (tmp_path / "net" / "tcp6").write_text(
        "  sl  local_address                         remote_address                        st tx_queue rx_queue "
        "tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000000000000000000001000000:1F42 00000000000000000000000000000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000  1000        0 4245 1 0\n")
    got = forward._proc_tcp(str(tmp_path))
    if not forward._LITTLE:  # pragma: no cover - the sample is what a little-endian kernel writes
        pytest.skip("the sample was written by a little-endian kernel")
    assert got == [Listener(V4, "127.0.0.1", 8000, 4242), Listener(V4, "0.0.0.0", 8001, 4244),
                   Listener(V6, "::1", 8002, 4245)]
