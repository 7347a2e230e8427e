"""The services your fixtures start stay reachable from the
sandbox; nothing else of the host does.  End to end, with pytester in
subprocess mode: the inner pytest is a child of this test's process, so a
server started *here* is a host service that the inner pytest did not start.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

import pytest_isolate.stats

from ..conftest import skip_unless

SCHEMA = Path(pytest_isolate.stats.__file__).with_name("stats-schema.json")

THREAD_SERVER = """
    import socket, threading
    import pytest

    def serve(family, host):
        srv = socket.socket(family)
        srv.bind((host, 0))
        srv.listen(256)
        def loop():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=echo, args=(c,), daemon=True).start()
        def echo(c):
            with c:
                f = c.makefile("rwb")
                for line in f:
                    f.write(b"fixture:" + line)
                    f.flush()
        threading.Thread(target=loop, daemon=True).start()
        return srv

    def talk(host, port, text=b"hi"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_connection((host, port), timeout=5) as c:
            c.sendall(text + b"\\n")
            return c.makefile("rb").readline().strip()
"""


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_a_session_fixtures_http_server_thread_is_reachable(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """The issue's first scenario, as a new user would write it."""
    pytester.makepyfile(test_http="""
        import threading, urllib.request, urllib.error
        from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
        import pytest

        class Hello(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"hello")

            def log_message(self, *args):
                pass

        @pytest.fixture(scope="session")
        def server():
            srv = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            yield srv.server_address[1]
            srv.shutdown()
            srv.server_close()

        def test_fetch(server):
            assert urllib.request.urlopen(f"http://127.0.0.1:{server}/", timeout=5).read() == b"hello"

        @pytest.mark.isolated(network="none")
        def test_fetch_own_loopback_only(server):
            with pytest.raises(urllib.error.URLError, match="Connection refused"):
                urllib.request.urlopen(f"http://127.0.0.1:{server}/", timeout=5)
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-v", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "isolate: network: services (the default): each sandbox reaches its own loopback and, relayed, the TCP "
        "services that pytest and its subprocesses listen on at 127.0.0.1/::1 when the sandbox is made; nothing "
        "else of the host",
        "test_http.py::test_fetch PASSED*",
        "    isolate: peak *, forwarded 127.0.0.1:*",
        "test_http.py::test_fetch_own_loopback_only PASSED*",
    ])
    lines = result.stdout.lines
    after = next(i for i, line in enumerate(lines) if "test_fetch_own_loopback_only PASSED" in line) + 1
    assert lines[after].startswith("    isolate: peak ") and "forwarded" not in lines[after]


def test_a_module_fixtures_server_subprocess_is_reachable(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile(test_sub=f"""
        import subprocess, sys, socket
        import pytest

        SERVER = ("import socket\\n"
                  "s = socket.socket()\\n"
                  "s.bind(('127.0.0.1', 0))\\n"
                  "s.listen()\\n"
                  "print(s.getsockname()[1], flush=True)\\n"
                  "while True:\\n"
                  "    c, _ = s.accept()\\n"
                  "    c.sendall(b'from a subprocess\\\\n')\\n"
                  "    c.close()\\n")

        @pytest.fixture(scope="module")
        def server():
            proc = subprocess.Popen([{sys.executable!r}, "-c", SERVER], stdout=subprocess.PIPE)
            port = int(proc.stdout.readline())
            yield port
            proc.kill()
            proc.wait()
            proc.stdout.close()

        @pytest.mark.parametrize("i", range(3))
        def test_reach(server, i):
            with socket.create_connection(("127.0.0.1", server), timeout=5) as c:
                assert c.makefile("rb").readline() == b"from a subprocess\\n"
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3)


class _Foreign:
    """A loopback server of this (outer) test process: not the inner
    pytest's, nor any of its descendants'."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.sendall(b"host service\n")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def foreign() -> Iterator[_Foreign]:
    srv = _Foreign()
    yield srv
    srv.close()


REACH = """
    import errno, socket, pytest

    def reach(port, host="127.0.0.1"):
        try:
            with socket.create_connection((host, port), timeout=5) as c:
                return c.makefile("rb").readline().decode().strip()
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e))
"""


def test_a_host_service_pytest_did_not_start_is_unreachable_unless_declared(
        pytester: pytest.Pytester, full_sandbox: None, foreign: _Foreign, monkeypatch: pytest.MonkeyPatch) -> None:
    port = foreign.port
    pytester.makepyfile(test_host=REACH + f"""
    def test_not_declared():
        assert reach({port}) == "ECONNREFUSED"

    @pytest.mark.isolated(network=["127.0.0.1:{port}"])
    def test_declared_by_marker():
        assert reach({port}) == "host service"

    @pytest.mark.isolated(network="localhost:{port}")
    def test_declared_by_name():
        assert reach({port}) == "host service"
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-v", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_declared_by_marker PASSED*", f"    isolate: *, forwarded *127.0.0.1:{port}"])

    # the same declared from the command line, the environment and the ini file: the header says where from
    pytester.makepyfile(test_host=REACH + f"""
    def test_declared():
        assert reach({port}) == "host service"
    """)
    result = pytester.runpytest_subprocess("--isolate-all", f"--isolate-network=127.0.0.1:{port}",
                                           "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"isolate: network: services + 127.0.0.1:{port} (from --isolate-network): each "
                                 "sandbox reaches its own loopback and, relayed, the TCP services that pytest and "
                                 "its subprocesses listen on at 127.0.0.1/::1 when the sandbox is made, and these "
                                 "host loopback ports when something listens there; nothing else of the host"])
    monkeypatch.setenv("PYTEST_ISOLATE_NETWORK", f"localhost:1, localhost:{port}")
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"isolate: network: services + localhost:1, localhost:{port} "
                                 "(from environment PYTEST_ISOLATE_NETWORK): *"])
    monkeypatch.delenv("PYTEST_ISOLATE_NETWORK")
    pytester.makeini(f"[pytest]\nisolate_network =\n    127.0.0.1:{port}\n    [::1]:5432\n")
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"isolate: network: services + 127.0.0.1:{port}, [[]::1]:5432 "
                                 "(from ini isolate_network (tox.ini)): *"])


@pytest.mark.parametrize("where, raw, why", [
    ("marker", "['10.0.0.5:5432']", "10.0.0.5 is not a loopback address: only the host's loopback ports can be "
     "forwarded, like 127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379"),
    ("marker", "['127.0.0.1:5432', 'db:5432']", "db:5432: 'db' is not a loopback address: only the host's "
     "loopback ports can be forwarded, like 127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379"),
    ("marker", "['none', '127.0.0.1:1']", "'none' is a mode of its own: give it alone, not in a list of ports"),
    ("marker", "[]", "expected 'services' (the default), 'none' or 'host', or host loopback ports to forward like "
     "127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379, not an empty list"),
    ("cli", "127.0.0.1:99999", "the port must be a number from 1 to 65535, like 127.0.0.1:5432, [::1]:5432, "
     "localhost:6379 or 6379"),
    ("env", "wifi", "expected 'services' (the default), 'none' or 'host', or host loopback ports to forward like "
     "127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379"),
    ("ini", "::1:5432", "write an IPv6 address in brackets, like 127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379"),
])
def test_bad_network_values_are_usage_errors_naming_their_source(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, raw: str, why: str) -> None:
    args = ["--isolate-all", "--collect-only", "-p", "no:cacheprovider"]
    marker = ""
    if where == "marker":
        marker = f"network={raw}"
        shown, source = raw, "marker on test_bad.py::test_b"
    elif where == "cli":
        args.append(f"--isolate-network={raw}")
        shown, source = repr(raw), "--isolate-network"
    elif where == "env":
        monkeypatch.setenv("PYTEST_ISOLATE_NETWORK", raw)
        shown, source = repr(raw), "environment PYTEST_ISOLATE_NETWORK"
    else:
        pytester.makeini(f"[pytest]\nisolate_network = {raw}\n")
        shown, source = repr(raw), "ini isolate_network (tox.ini)"
    pytester.makepyfile(test_bad=f"""
        import pytest

        @pytest.mark.isolated({marker})
        def test_b():
            pass
    """)
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == f"ERROR: pytest-isolate: invalid network {shown} from {source}: {why}"


def test_a_closed_service_is_refused_inside_too(pytester: pytest.Pytester, full_sandbox: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once this is closed
    pytester.makepyfile(test_closed=REACH + f"""
    @pytest.fixture(scope="module")
    def stopped():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        s.close()  # the fixture's service stopped before the test
        return port

    def test_a_fixtures_service_that_stopped(stopped):
        assert reach(stopped) == "ECONNREFUSED"

    @pytest.mark.isolated(network=["127.0.0.1:{closed}", "[::1]:{closed}"])
    def test_a_declared_port_nothing_listens_on():
        assert reach({closed}) == "ECONNREFUSED"
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2)


def test_ipv6_loopback_and_many_concurrent_connections(pytester: pytest.Pytester, full_sandbox: None) -> None:
    skip_unless(_ipv6(), "this host has no IPv6 loopback")
    pytester.makepyfile(test_v6=THREAD_SERVER + """
    @pytest.fixture(scope="session")
    def v6():
        srv = serve(socket.AF_INET6, "::1")
        yield srv.getsockname()[1]
        srv.close()

    @pytest.fixture(scope="session")
    def v4():
        srv = serve(socket.AF_INET, "127.0.0.1")
        yield srv.getsockname()[1]
        srv.close()

    def test_ipv6(v6):
        assert talk("::1", v6) == b"fixture:hi"

    def test_many_at_once(v4):
        socks = [socket.create_connection(("127.0.0.1", v4), timeout=10) for _ in range(100)]
        for i, c in enumerate(socks):
            c.sendall(b"%d\\n" % i)
        assert [c.makefile("rb").readline() for c in socks] == [b"fixture:%d\\n" % i for i in range(100)]
        for c in socks:
            c.close()
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-v", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_ipv6 PASSED*", "    isolate: *, forwarded *[[]::1]:*"])


def test_a_connection_flood_is_capped_and_the_report_says_so(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile(test_flood=THREAD_SERVER + """
    @pytest.fixture(scope="session")
    def port():
        srv = serve(socket.AF_INET, "127.0.0.1")
        yield srv.getsockname()[1]
        srv.close()

    def test_flood(port):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        n = min(2000, min(hard, 4096) - 100)
        socks = []
        for _ in range(n):
            try:  # a reset can come while the connection is being made
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except ConnectionResetError:
                pass
        answered = 0
        for c in socks:
            try:
                c.sendall(b"x\\n")
            except OSError:
                pass
        for c in socks:
            try:
                answered += c.recv(100) == b"fixture:x\\n"
            except OSError:
                pass
        print(f"opened {n}")
        assert answered == 256
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-rA", "-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=1)
    n = int(next(line for line in result.stdout.lines if line.startswith("opened "))[7:])
    result.stdout.fnmatch_lines([
        "*- pytest-isolate: network relay, at sandbox teardown -*",
        f"the network relay refused {n - 256} connection(s): the sandbox had 256 relayed connections open at once, "
        "the most one sandbox may have (services: 127.0.0.1:*)",
    ])


def test_the_stats_record_the_forwarded_ports(pytester: pytest.Pytester, full_sandbox: None) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytester.makepyfile(test_rec=THREAD_SERVER + """
    @pytest.fixture(scope="module")
    def port():
        srv = serve(socket.AF_INET, "127.0.0.1")
        with open("port", "w") as f:
            f.write(str(srv.getsockname()[1]))
        yield srv.getsockname()[1]
        srv.close()

    def test_with(port):
        assert talk("127.0.0.1", port) == b"fixture:hi"

    @pytest.mark.isolated(network="none")
    def test_without(port):
        pass
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-json=stats.json", "-p", "no:cacheprovider",
                                           timeout=120)
    result.assert_outcomes(passed=2)
    document: Dict[str, Any] = json.loads((pytester.path / "stats.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    records = {r["nodeid"].split("::")[1]: r for r in document["tests"]}
    # (and any service of the pytest process itself: pytest-rerunfailures
    # listens on loopback when pytest-xdist is installed too)
    assert f"127.0.0.1:{(pytester.path / 'port').read_text()}" in records["test_with"]["forwarded"]
    assert records["test_without"]["forwarded"] == []


def test_pytest_isolate_adds_no_thread_to_the_pytest_process(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """The relay is a process of its own: a thread in the pytest process would
    make every os.fork() of a parent-side fixture warn on Python 3.12+
    ("This process is multi-threaded, use of fork() may lead to deadlocks"),
    an error under filterwarnings = error."""
    pytester.makepyfile(test_threads=f"""
    import os, socket, subprocess, threading
    import pytest

    SERVER = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); " \\
             "print(s.getsockname()[1], flush=True); c, _ = s.accept(); c.sendall(b'sub'); c.close()"

    @pytest.fixture(scope="module")
    def port():
        proc = subprocess.Popen([{sys.executable!r}, "-c", SERVER], stdout=subprocess.PIPE)
        yield int(proc.stdout.readline())
        proc.kill()
        proc.wait()
        proc.stdout.close()

    def test_relayed(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            assert c.recv(3) == b"sub"

    @pytest.fixture(scope="module")
    def forks_in_the_parent():
        # set up in the pytest process after test_relayed's sandbox
        threads = [t.name for t in threading.enumerate()]
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return threads

    def test_then(forks_in_the_parent):
        assert forks_in_the_parent == ["MainThread"]
    """)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    # (pytest-rerunfailures starts a thread of its own when pytest-xdist is
    # installed too: not ours to count)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-p", "no:rerunfailures",
                                           timeout=120)
    result.assert_outcomes(passed=2)


def test_under_xdist_each_worker_relays_its_own_services(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_x=THREAD_SERVER + """
    import os

    @pytest.fixture(scope="session")
    def port():
        srv = serve(socket.AF_INET, "127.0.0.1")
        yield srv.getsockname()[1]
        srv.close()

    @pytest.mark.parametrize("i", range(8))
    def test_reach(port, i):
        assert talk("127.0.0.1", port, b"%d" % i) == b"fixture:%d" % i
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-n", "2", "-v", "-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*gw0*PASSED*", "*gw1*PASSED*"], consecutive=False)


def test_under_isolate_jobs_sandboxes_in_flight_at_once_reach_one_session_fixtures_server(
        pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Many sandboxes, one service, one relay: the server answers a request
    only once another one is waiting too, so each pair of tests is served
    only while both their sandboxes are in flight (run one at a time, the
    first request would wait for a second that never comes)."""
    pytester.makepyfile(test_jobs="""
        import threading, urllib.request
        from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
        import pytest

        together = threading.Barrier(2, timeout=60)

        class Pair(BaseHTTPRequestHandler):
            def do_GET(self):
                together.wait()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"served with another")

            def log_message(self, *args):
                pass

        @pytest.fixture(scope="session")
        def server():
            srv = ThreadingHTTPServer(("127.0.0.1", 0), Pair)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            yield srv.server_address[1]
            srv.shutdown()
            srv.server_close()

        @pytest.mark.parametrize("i", range(4))
        def test_fetch(server, i):
            got = urllib.request.urlopen(f"http://127.0.0.1:{server}/", timeout=90).read()
            assert got == b"served with another"
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-jobs", "2", "-v", "-p", "no:cacheprovider",
                                           timeout=240)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["isolate: jobs: 2 isolated tests at once (from --isolate-jobs)*"])
    assert len([line for line in result.stdout.lines if line.startswith("    isolate: peak ")
                and "forwarded 127.0.0.1:" in line]) == 4


def test_services_started_in_the_pytest_process_between_sandboxes_are_seen(
        pytester: pytest.Pytester, full_sandbox: None) -> None:
    """The plugin lets sandboxes reuse the last look at the host's listeners
    until the pytest process sets up or tears down a fixture of a higher
    scope or runs a test itself: each of those is seen by the next sandbox."""
    pytester.makepyfile(test_a=THREAD_SERVER + """
    @pytest.fixture(scope="module")
    def port_a():
        srv = serve(socket.AF_INET, "127.0.0.1")
        yield srv.getsockname()[1]
        srv.close()

    @pytest.mark.isolated
    def test_a(port_a):
        assert talk("127.0.0.1", port_a) == b"fixture:hi"
    """, test_b=THREAD_SERVER + """
    import os
    STARTED = []

    @pytest.fixture(scope="module")
    def port_b():
        srv = serve(socket.AF_INET, "127.0.0.1")
        yield srv.getsockname()[1]
        srv.close()

    @pytest.mark.isolated
    def test_b(port_b):
        assert talk("127.0.0.1", port_b) == b"fixture:hi"

    def test_in_process_starts_one():  # not isolated: runs in the pytest process
        STARTED.append(serve(socket.AF_INET, "127.0.0.1"))
        os.environ["STARTED_PORT"] = str(STARTED[0].getsockname()[1])

    @pytest.mark.isolated
    def test_then_reaches_it():
        assert talk("127.0.0.1", int(os.environ["STARTED_PORT"])) == b"fixture:hi"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=4)


def test_the_marker_help_names_the_modes(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--markers")
    assert "network: 'services' (own loopback plus pytest's loopback services), 'none', 'host', or host loopback " \
           "ports to add like ['127.0.0.1:5432']" in result.stdout.str()



def test_what_pytest_listened_on_before_the_session_is_not_a_service(pytester: pytest.Pytester,
                                                                     full_sandbox: None) -> None:
    """A plugin's own server, opened at configure (pytest-rerunfailures'
    status server, with pytest-xdist installed), stays out of every sandbox;
    a session fixture's server opened later is relayed; declaring the
    plugin's port brings it in."""
    pytester.makeconftest("""
        import os, socket
        import pytest

        def pytest_configure(config):
            srv = socket.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen(8)  # the kernel completes connections to it without accept()
            config._plugin_server = srv
            os.environ["PLUGIN_PORT"] = str(srv.getsockname()[1])

        @pytest.fixture(scope="session")
        def service():
            srv = socket.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen(8)
            yield srv.getsockname()[1]
            srv.close()
    """)
    pytester.makepyfile(test_ports="""
        import os, socket
        import pytest

        def reach(port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                return "reached"
            except ConnectionRefusedError:
                return "refused"

        def test_plugin_server_stays_out(service):
            assert reach(service) == "reached"
            assert reach(int(os.environ["PLUGIN_PORT"])) == "refused"
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
    # negative control: in-process, the plugin's server is there
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 'reached' == 'refused'*"])
