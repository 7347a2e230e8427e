"""network="services" and forward=(...): the caller's loopback services reach
the sandbox through the relay, and nothing else of the host does.

Real kernel, real relay process.  Each positive test has its negative
control in the same test (network="none", or a service that is not the
caller's): remove the relay and it fails.
"""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import psutil
import pytest
from isolate_runtime import Outcome, SandboxResult, SandboxSpec, launcher, prepare, relay
from isolate_runtime.spec import CallablePayload

Sandbox = Callable[..., SandboxResult]


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6()


class EchoServer:
    """A server thread of the caller (as a session fixture would start one):
    echoes each line; remembers how many connections it saw end."""

    def __init__(self, host: str = "127.0.0.1", family: int = socket.AF_INET, hold: Optional[int] = None) -> None:
        self.sock = socket.socket(family)
        self.sock.bind((host, 0))
        self.sock.listen(512)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed = 0
        #: With ``hold``: answer nobody until that many are connected.
        self.barrier = threading.Barrier(hold, timeout=20) if hold else None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.barrier is not None:
                    self.barrier.wait()
                f = conn.makefile("rwb")
                for line in f:
                    f.write(line)
                    f.flush()
            except (OSError, threading.BrokenBarrierError):
                pass
        with self.lock:
            self.closed += 1

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@contextmanager
def echo_server(*args: Any, **kwargs: Any) -> Iterator[EchoServer]:
    srv = EchoServer(*args, **kwargs)
    try:
        yield srv
    finally:
        srv.close()


def _talk(host: str, port: int, text: str = "ping") -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as c:
        c.settimeout(5)
        try:
            c.connect((host, port))
            c.sendall(text.encode() + b"\n")
            got = c.makefile("rb").readline().decode().strip()
            return got or "EOF"
        except OSError as e:
            return errno.errorcode.get(e.errno or 0, repr(e))


def _ok(r: SandboxResult) -> Any:
    assert r.outcome is Outcome.OK, (r, r.traceback)
    return r.value


@pytest.fixture(autouse=True)
def only_the_services_of_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest process running these tests may listen on loopback itself
    (pytest-rerunfailures starts a status server when pytest-xdist is
    installed too): those are the caller's services as well, and would be
    forwarded into every sandbox here.  Hidden, so that each test sees
    exactly the services it starts."""
    from isolate_runtime import forward

    before = {lst.inode for lst in forward.listening()}
    real = forward._listeners_now
    monkeypatch.setattr(forward, "_listeners_now", lambda: tuple(lst for lst in real() if lst.inode not in before))


# ---------------------------------------------------------------- the caller's services

@pytest.mark.parametrize("spawn_mode", ["auto", "fork"])
def test_a_server_thread_of_the_caller_is_reachable_and_only_with_services(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, spawn_mode: str) -> None:
    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", spawn_mode)
    with echo_server() as srv:
        r = sandbox(_talk, "127.0.0.1", srv.port, network="services")
        assert _ok(r) == "ping"
        assert r.forwarded == (f"127.0.0.1:{srv.port}",)
        assert r.network_notes == ()
        # negative control: own loopback only
        r = sandbox(_talk, "127.0.0.1", srv.port, network="none")
        assert _ok(r) == "ECONNREFUSED" and r.forwarded == ()


SUBPROCESS_SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    print(s.getsockname()[1], flush=True)
    while True:
        c, _ = s.accept()
        with c:
            f = c.makefile("rwb")
            for line in f:
                f.write(b"sub:" + line)
                f.flush()
""")


def test_a_server_subprocess_of_the_caller_is_reachable(sandbox: Sandbox) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SUBPROCESS_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        r = sandbox(_talk, "127.0.0.1", port, network="services")
        assert _ok(r) == "sub:ping" and r.forwarded == (f"127.0.0.1:{port}",)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


FOREIGN_SERVER = textwrap.dedent("""
    import os, socket, sys
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    r, w = os.pipe()
    if os.fork():  # the parent exits: the server is nobody's descendant
        os.close(w)
        print(os.read(r, 100).decode(), flush=True)
        os._exit(0)
    os.setsid()
    os.close(r)
    os.write(w, f"{os.getpid()} {s.getsockname()[1]}".encode())
    os.close(w)
    for fd in (0, 1, 2):
        os.close(fd)
    while True:
        c, _ = s.accept()
        c.sendall(b"foreign\\n")
        c.close()
""")


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """A loopback service on the host that the caller did not start (its
    parent exited: not a descendant).  Yields its port."""
    out = subprocess.run([sys.executable, "-c", FOREIGN_SERVER], capture_output=True, text=True, check=True)
    pid, port = (int(x) for x in out.stdout.split())
    try:
        assert pid not in {p.pid for p in psutil.Process().children(recursive=True)}
        yield port
    finally:
        os.kill(pid, 9)


def test_a_loopback_service_the_caller_did_not_start_stays_out_unless_declared(
        sandbox: Sandbox, foreign_server: int) -> None:
    assert _talk("127.0.0.1", foreign_server) == "foreign"  # it is there, on the host
    r = sandbox(_talk, "127.0.0.1", foreign_server, network="services")
    assert _ok(r) == "ECONNREFUSED" and r.forwarded == ()
    r = sandbox(_talk, "127.0.0.1", foreign_server, network="services", forward=(f"127.0.0.1:{foreign_server}",))
    assert _ok(r) == "foreign" and r.forwarded == (f"127.0.0.1:{foreign_server}",)
    # declared with network="none": only what is declared
    r = sandbox(_talk, "127.0.0.1", foreign_server, network="none", forward=(f"localhost:{foreign_server}",))
    assert _ok(r) == "foreign" and r.forwarded == (f"127.0.0.1:{foreign_server}",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_closed_service_is_refused_inside_too(sandbox: Sandbox) -> None:
    port = _free_port()  # nothing listens there any more
    assert _talk("127.0.0.1", port) == "ECONNREFUSED"
    r = sandbox(_talk, "127.0.0.1", port, network="services", forward=(f"127.0.0.1:{port}",))
    assert _ok(r) == "ECONNREFUSED" and r.forwarded == ()


def _talk_after(delay_file: str, host: str, port: int) -> List[str]:
    first = _talk(host, port)
    with open(delay_file, "w") as f:
        f.write("asked")
    for _ in range(500):
        if open(delay_file).read() == "closed":
            break
        time.sleep(0.01)
    return [first, _talk(host, port)]


def test_a_service_that_stops_during_the_test_resets_its_connections(sandbox: Sandbox, tmp_path: Any) -> None:
    flag = tmp_path / "flag"
    flag.write_text("")
    srv = EchoServer()
    try:

        def stop_when_asked() -> None:
            for _ in range(500):
                if flag.read_text() == "asked":
                    srv.close()
                    flag.write_text("closed")
                    return
                time.sleep(0.01)

        stopper = threading.Thread(target=stop_when_asked)
        stopper.start()
        r = sandbox(_talk_after, str(flag), "127.0.0.1", srv.port, network="services", writable=(str(tmp_path),))
        stopper.join()
    finally:
        srv.close()
    assert _ok(r) in (["ping", "ECONNRESET"], ["ping", "EOF"])
    assert r.forwarded == (f"127.0.0.1:{srv.port}",)
    assert r.network_notes == ("1 relayed connection(s) were reset: their service on the host did not accept them "
                               "(it had stopped listening)",)


@pytest.mark.skipif(not HAS_IPV6, reason="this host has no IPv6 loopback")
def test_ipv6_loopback_services_are_reachable_at_the_same_address(sandbox: Sandbox) -> None:
    with echo_server("::1", socket.AF_INET6) as v6, echo_server("0.0.0.0") as wild:
        r = sandbox(lambda: [_talk("::1", v6.port), _talk("127.0.0.1", v6.port), _talk("127.0.0.1", wild.port),
                             _talk("::1", wild.port)], network="services")
        assert _ok(r) == ["ping", "ECONNREFUSED", "ping", "ECONNREFUSED"]
        assert set(r.forwarded) == {f"[::1]:{v6.port}", f"127.0.0.1:{wild.port}"}
        r = sandbox(_talk, "::1", v6.port, network="none")
        assert _ok(r) == "ECONNREFUSED"


def _dual_stack_listener() -> Tuple[socket.socket, int]:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0))
    s.listen()
    return s, int(s.getsockname()[1])


@pytest.mark.skipif(not HAS_IPV6, reason="this host has no IPv6 loopback")
def test_a_dual_stack_wildcard_listener_is_reachable_on_both_loopbacks(sandbox: Sandbox) -> None:
    s, port = _dual_stack_listener()
    with s:
        r = sandbox(lambda: None, network="services")
    assert _ok(r) is None
    assert set(r.forwarded) >= {f"127.0.0.1:{port}", f"[::1]:{port}"}


def _bind(port: int) -> str:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return "bound"
        except OSError as e:
            return errno.errorcode.get(e.errno or 0, str(e))


def test_binding_a_forwarded_port_inside_fails_as_on_the_host(sandbox: Sandbox) -> None:
    with echo_server() as srv:
        assert _ok(sandbox(_bind, srv.port, network="services")) == "EADDRINUSE"
        assert _ok(sandbox(_bind, srv.port, network="none")) == "bound"


# ---------------------------------------------------------------- many connections, the cap

def _concurrent(port: int, n: int) -> List[str]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    for i, s in enumerate(socks):
        s.sendall(f"c{i}\n".encode())
    got = [s.makefile("rb").readline().decode().strip() for s in socks]
    for s in socks:
        s.close()
    return got


def test_many_concurrent_connections_are_relayed(sandbox: Sandbox) -> None:
    with echo_server() as srv:
        r = sandbox(_concurrent, srv.port, 200, network="services")
        assert _ok(r) == [f"c{i}" for i in range(200)]
        assert r.network_notes == ()


def _flood(port: int, n: int) -> Dict[str, int]:
    """Open n connections (the kernel completes each one inside before the
    relay sees it), then ask each whether it reaches the service; every
    one stays open until all have been asked."""
    socks = []
    outcome: Dict[str, int] = {}

    def count(key: str) -> None:
        outcome[key] = outcome.get(key, 0) + 1

    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError as e:
            count(errno.errorcode.get(e.errno or 0, "?"))
            s.close()
            continue
        socks.append(s)
    for s in socks:
        try:
            s.sendall(b"x\n")
        except OSError:
            pass
    for s in socks:
        try:
            count("answered" if s.recv(10) else "EOF")
        except OSError as e:
            count(errno.errorcode.get(e.errno or 0, "?"))
    for s in socks:
        s.close()
    return outcome


def test_a_connection_flood_is_stopped_at_the_cap_and_the_result_says_so(sandbox: Sandbox) -> None:
    with echo_server() as srv:
        r = sandbox(_flood, srv.port, 1000, network="services")
        got = _ok(r)
        assert got.get("answered") == relay.CONNECTION_CAP, got
        assert got.get("ECONNRESET", 0) + got.get("EPIPE", 0) + got.get("EOF", 0) == 1000 - relay.CONNECTION_CAP
        assert srv.accepted == relay.CONNECTION_CAP
    (note,) = r.network_notes
    assert note == (f"the network relay refused {1000 - relay.CONNECTION_CAP} connection(s): the sandbox had 256 "
                    "relayed connections open at once, the most one sandbox may have "
                    f"(services: 127.0.0.1:{srv.port})")


# ---------------------------------------------------------------- gone with the sandbox

def _leave_open(port: int) -> str:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"hi\n")
    got = s.makefile("rb").readline().decode().strip()
    s.detach()  # still open when the payload ends: its sandbox's end must end it
    return got


def _relay_sockets() -> int:
    """How many sockets the relay process holds (its control socket is one)."""
    assert relay._relay is not None
    base = f"/proc/{relay._relay.proc.pid}/fd"
    out = 0
    for fd in os.listdir(base):
        try:
            out += os.readlink(f"{base}/{fd}").startswith("socket:")
        except OSError:
            pass
    return out


def _settles(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_relays_listeners_and_connections_are_gone_with_the_sandbox(sandbox: Sandbox) -> None:
    with echo_server() as srv:
        r = sandbox(_leave_open, srv.port, network="services")
        assert _ok(r) == "hi"
        assert _settles(lambda: srv.closed == 1), "the service's end of the sandbox's connection is still open"
        assert _settles(lambda: _relay_sockets() == 1), "the relay still holds the sandbox's listener or connections"


def _my_socket_inodes() -> List[int]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.append(int(target[8:-1]))
    with open("/proc/net/tcp") as f:  # the sandbox's own: its listeners are there
        listening = [int(line.split()[9]) for line in f.read().splitlines()[1:] if line.split()[3] == "0A"]
    return out + [-1] + listening


@pytest.mark.parametrize("spawn_mode", ["auto", "fork"])
def test_the_payload_holds_neither_the_listeners_nor_the_relays_socket(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, spawn_mode: str) -> None:
    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", spawn_mode)
    with echo_server() as srv:
        r = sandbox(_my_socket_inodes, network="services")
        got = _ok(r)
        held, listening = got[:got.index(-1)], got[got.index(-1) + 1:]
        assert len(listening) == 1, "the forwarded service's listener is not in the sandbox"
        assert relay._relay is not None
        relay_inode = os.fstat(relay._relay.fd).st_ino
        assert relay_inode not in held and not set(listening) & set(held), (held, listening)
        assert r.forwarded == (f"127.0.0.1:{srv.port}",)


# ---------------------------------------------------------------- several sandboxes, one service

def test_sandboxes_running_at_once_share_one_service_without_waiting_for_each_other(full_isolation: None) -> None:
    n = 4
    with echo_server(hold=n) as srv:  # answers only once all four are connected
        held = [prepare(SandboxSpec(CallablePayload(_talk, ("127.0.0.1", srv.port)), network="services"))
                for _ in range(n)]
        for sb in held:
            sb.release()
        results = [sb.wait() for sb in held]  # waited for one by one: the others are served meanwhile
    assert [_ok(r) for r in results] == ["ping"] * n
    assert srv.accepted == n


# ---------------------------------------------------------------- what listens, and whose

def test_the_listening_table_agrees_with_proc_net_tcp() -> None:
    from isolate_runtime import forward

    with echo_server() as srv:
        diag = {(x.family, x.address, x.port, x.inode) for x in forward.listening()}
        proc = {(x.family, x.address, x.port, x.inode) for x in forward._proc_tcp()}
        assert diag == proc
        assert any(port == srv.port for _f, _a, port, _i in diag)


def test_the_caller_owns_its_listeners_and_its_childrens_not_a_strangers(foreign_server: int) -> None:
    from isolate_runtime import forward

    proc = subprocess.Popen([sys.executable, "-c", SUBPROCESS_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child_port = int(proc.stdout.readline())
        with echo_server() as srv:
            by_port = {x.port: x.inode for x in forward.listening()}
            owned = forward.owned_inodes({by_port[srv.port], by_port[child_port], by_port[foreign_server]},
                                         os.getpid())
            assert owned == {by_port[srv.port], by_port[child_port]}
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_with_no_service_nothing_is_forwarded_and_no_relay_is_started(sandbox: Sandbox) -> None:
    launcher.settle()  # stops the relay
    r = sandbox(lambda: None, network="services")
    assert _ok(r) is None
    assert r.forwarded == () and relay._relay is None


def test_forward_with_network_host_is_a_spec_error() -> None:
    from isolate_runtime import SpecError

    with pytest.raises(SpecError, match="network='host' shares the host's network: there is nothing to forward"):
        SandboxSpec(CallablePayload(print), network="host", forward=("127.0.0.1:5432",))
    with pytest.raises(SpecError, match=r"invalid forward '10.0.0.5:5432': 10.0.0.5 is not a loopback address"):
        SandboxSpec(CallablePayload(print), forward=("10.0.0.5:5432",))
    with pytest.raises(SpecError, match="expected 'none', 'services' or 'host'"):
        SandboxSpec(CallablePayload(print), network="bridge")


# ---------------------------------------------------------------- when something goes wrong

@pytest.mark.parametrize("spawn_mode", ["auto", "fork"])
def test_a_listener_that_cannot_be_made_inside_is_reported_not_forwarded(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, spawn_mode: str) -> None:
    from isolate_runtime import forward

    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", spawn_mode)
    with echo_server() as srv:
        real = forward.for_sandbox

        def with_a_bad_one(services: bool, declared: Any, root: Optional[int] = None) -> List[forward.Forward]:
            # 192.0.2.1 (TEST-NET-1) is on no interface inside: bind() fails
            return [forward.Forward("192.0.2.1", srv.port, "127.0.0.1", "declared")] + real(services, declared, root)

        monkeypatch.setattr(forward, "for_sandbox", with_a_bad_one)
        r = sandbox(_talk, "127.0.0.1", srv.port, network="services")
    assert _ok(r) == "ping"
    assert r.forwarded == (f"127.0.0.1:{srv.port}",)
    assert r.network_notes == (f"192.0.2.1:{srv.port} not forwarded: its listener could not be made inside the "
                               "sandbox (Cannot assign requested address)",)


def _talk_twice(flag: str, port: int) -> List[str]:
    first = _talk("127.0.0.1", port)
    with open(flag, "w") as f:
        f.write("kill")
    for _ in range(500):
        if open(flag).read() == "killed":
            break
        time.sleep(0.01)
    return [first, _talk("127.0.0.1", port)]


def test_a_relay_that_dies_is_reported_and_the_next_sandbox_gets_a_new_one(sandbox: Sandbox, tmp_path: Any) -> None:
    flag = tmp_path / "flag"
    flag.write_text("")
    with echo_server() as srv:

        def kill_when_asked() -> None:
            for _ in range(500):
                if flag.read_text() == "kill" and relay._relay is not None:
                    relay._relay.proc.kill()
                    relay._relay.proc.wait()
                    flag.write_text("killed")
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_asked)
        killer.start()
        r = sandbox(_talk_twice, str(flag), srv.port, network="services", writable=(str(tmp_path),))
        killer.join()
        assert _ok(r) == ["ping", "ECONNREFUSED"]
        assert r.network_notes == ("the network relay stopped (killed by signal 9): connections to the forwarded "
                                   "services were reset or refused from then on",)
        r = sandbox(_talk, "127.0.0.1", srv.port, network="services")
        assert _ok(r) == "ping" and r.network_notes == ()


def test_a_relay_that_cannot_start_is_reported(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    launcher.settle()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    try:
        with echo_server() as srv:
            r = sandbox(_talk, "127.0.0.1", srv.port, network="services")
        assert _ok(r) == "ECONNREFUSED" and r.forwarded == ()
        assert r.network_notes == ("the network relay is not running: it could not be started (/nonexistent/python: "
                                   f"No such file or directory); not forwarded: 127.0.0.1:{srv.port}",)
    finally:
        relay.stop()


def test_a_caller_that_says_when_its_services_change_is_not_looked_at_in_between(sandbox: Sandbox) -> None:
    """reuse_looks(True) (the pytest plugin): the next sandbox reuses the last
    look at the host's listeners until services_changed() or REUSE_SECONDS."""
    from isolate_runtime import forward

    forward.reuse_looks(True)
    try:
        assert _ok(sandbox(lambda: None, network="services")) is None  # the look
        with echo_server() as srv:
            r = sandbox(_talk, "127.0.0.1", srv.port, network="services")
            assert _ok(r) == "ECONNREFUSED" and r.forwarded == (), "the last look was not reused"
            forward.services_changed()
            r = sandbox(_talk, "127.0.0.1", srv.port, network="services")
            assert _ok(r) == "ping" and r.forwarded == (f"127.0.0.1:{srv.port}",)
    finally:
        forward.reuse_looks(False)
    with echo_server() as srv:  # off again: every sandbox looks
        assert _ok(sandbox(_talk, "127.0.0.1", srv.port, network="services")) == "ping"


def test_listeners_the_caller_held_before_are_not_services(sandbox: Sandbox,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """ignore_current_services(): what listens now is not a service (the
    plugin calls it at session start, for plugins' own servers)."""
    from isolate_runtime import forward, ignore_current_services

    monkeypatch.setattr(forward, "_ignored", frozenset())
    with echo_server() as before:
        assert f"127.0.0.1:{before.port}" in ignore_current_services()
        with echo_server() as after:
            r = sandbox(lambda: (_talk("127.0.0.1", before.port), _talk("127.0.0.1", after.port)),
                        network="services")
            assert list(_ok(r)) == ["ECONNREFUSED", "ping"] and r.forwarded == (f"127.0.0.1:{after.port}",)
        # declared, it is forwarded like any host port
        r = sandbox(_talk, "127.0.0.1", before.port, network="services", forward=(f"127.0.0.1:{before.port}",))
        assert _ok(r) == "ping"


def test_a_listener_that_stops_listening_is_dropped_not_woken_for_for_ever() -> None:
    """A sandbox's fake root can destroy the relay's listener inside it
    (``ss -K``: SOCK_DESTROY); epoll then reports it ready for ever, and an
    accept() that fails for that must not keep it in the loop."""
    from isolate_runtime import relayd

    ctl, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lsock = socket.socket()
    relay = relayd.Relay(ctl)
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        fd = os.dup(lsock.fileno())
        relay.add(1, [("127.0.0.1", lsock.getsockname()[1])], [0], 4, [fd])
        lsock.shutdown(socket.SHUT_RDWR)  # (the same socket: the relay's fd is a dup)
        assert [f for f, _ev in relay.ep.poll(1.0)] == [fd]
        relay.accept(fd)
        assert fd not in relay.listeners and not relay.boxes[1].listeners
        assert relay.ep.poll(0.2) == [], "the loop still wakes for the dead listener"
    finally:
        lsock.close()
        peer.close()
        relay.ep.close()
        ctl.close()
