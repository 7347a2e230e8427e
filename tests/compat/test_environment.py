"""What a test sees of its machine, plain vs ``--isolate-all``:
files the session made, the filesystem's identity, the hostname, processes,
disk usage, the network a session fixture serves on, and what merely
installing the plugin costs.
"""
from __future__ import annotations

import pytest

from .harness import ISOLATED, NO_ISOLATE, Compat, Run, assert_isolated, assert_same

#: Deselect with ``-m 'not compat'`` (e.g. in CI while the fixes are under way).
pytestmark = pytest.mark.compat

# ------------------------------------------------------------------ files the session made with tempfile

TEMPFILES = {"test_tempfiles.py": """
    import os
    import shutil
    import tempfile
    import unittest

    import pytest

    @pytest.fixture(scope="module")
    def data_file():
        fd, path = tempfile.mkstemp(suffix=".txt")
        os.write(fd, b"made by a module fixture")
        os.close(fd)
        yield path
        os.unlink(path)

    @pytest.fixture(scope="session")
    def data_dir():
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "f.txt"), "w") as f:
                f.write("made by a session fixture")
            yield d

    def test_reads_the_module_fixtures_file(data_file):
        with open(data_file) as f:
            assert f.read() == "made by a module fixture"

    def test_reads_the_session_fixtures_directory(data_dir):
        with open(os.path.join(data_dir, "f.txt")) as f:
            assert f.read() == "made by a session fixture"

    class TestSetUpClass(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.dir = tempfile.mkdtemp()
            with open(os.path.join(cls.dir, "f.txt"), "w") as f:
                f.write("made by setUpClass")

        @classmethod
        def tearDownClass(cls):
            shutil.rmtree(cls.dir)

        def test_reads_it(self):
            with open(os.path.join(self.dir, "f.txt")) as f:
                self.assertEqual(f.read(), "made by setUpClass")
"""}


def test_files_a_higher_scoped_fixture_made_with_tempfile(compat: Compat) -> None:
    compat.write(TEMPFILES)
    plain, iso = compat.both()
    assert plain.outcomes == {"passed": 3}, plain
    assert_isolated(iso)
    assert_same(plain, iso)


UNITTEST_CLASS = {"test_unit.py": """
    import unittest

    class TestWithSetUpClass(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.shared = ["made by setUpClass"]

        @classmethod
        def tearDownClass(cls):
            del cls.shared

        def test_one(self):
            self.assertEqual(self.shared, ["made by setUpClass"])

        def test_two(self):
            self.assertEqual(len(self.shared), 1)
"""}


def test_unittest_setupclass(compat: Compat) -> None:
    """The plainest unittest pattern, no files involved."""
    compat.write(UNITTEST_CLASS)
    plain, iso = compat.both()
    assert plain.outcomes == {"passed": 2}, plain
    assert_same(plain, iso)


# ------------------------------------------------------------------ filesystem identity, hostname

IDENTITY = {"test_identity.py": """
    import os
    import platform
    import shutil
    import socket
    import sys

    import pytest

    HERE = os.path.abspath(__file__)
    FILES = [HERE, os.__file__, pytest.__file__, sys.executable, "/etc/passwd"]

    def same_device_as_directory(path):
        return os.stat(path).st_dev == os.stat(os.path.dirname(path)).st_dev

    # at import: in the pytest process, as the host sees them
    AT_IMPORT = {
        "st_dev": {p: same_device_as_directory(p) for p in FILES},
        "ismount": {p: os.path.ismount(p) for p in FILES},
        "hostname": (socket.gethostname(), platform.node(), os.uname().nodename),
    }

    def test_st_dev_of_a_file_equals_its_directorys():
        assert {p: same_device_as_directory(p) for p in FILES} == AT_IMPORT["st_dev"]

    def test_a_file_is_not_a_mount_point():
        assert {p: os.path.ismount(p) for p in FILES} == AT_IMPORT["ismount"]

    def test_hostname_at_import_equals_the_one_in_the_test():
        assert (socket.gethostname(), platform.node(), os.uname().nodename) == AT_IMPORT["hostname"]
"""}


def test_filesystem_identity_and_hostname(compat: Compat) -> None:
    compat.write(IDENTITY)
    plain, iso = compat.both()
    assert plain.outcomes == {"passed": 3}, plain
    assert_same(plain, iso)


DISK_USAGE = {"test_disk.py": """
    import os
    import shutil

    import pytest

    HERE = os.path.dirname(os.path.abspath(__file__))
    AT_IMPORT = {p: shutil.disk_usage(p) for p in (HERE, "/")}

    @pytest.fixture(scope="session")
    def basetemp_usage(tmp_path_factory):
        return shutil.disk_usage(tmp_path_factory.getbasetemp())

    def test_disk_usage_of_copy_on_write_paths():
        for path, before in AT_IMPORT.items():
            now = shutil.disk_usage(path)
            assert now.total == before.total, path
            # others write to the disk meanwhile: free space within 1 GiB
            assert abs(now.free - before.free) < 1 << 30, path

    def test_disk_usage_of_tmp_path(tmp_path, basetemp_usage):
        assert shutil.disk_usage(tmp_path).total == basetemp_usage.total
"""}


def test_disk_usage(compat: Compat) -> None:
    """``shutil.disk_usage()`` (``statfs``) on a copy-on-write path reports
    the sandbox's scratch tmpfs, where the test's writes go, not the disk:
    documented (docs/limitations.rst).  On ``tmp_path`` and the writable
    paths, which are the host's own, it reports the host's filesystem."""
    compat.write(DISK_USAGE)
    plain, iso = compat.both()
    assert plain.outcomes == {"passed": 2}, plain
    assert_isolated(iso)
    failed = sorted({r[0] for r in iso.reports if r[2] == "failed"})
    assert failed == ["test_disk.py::test_disk_usage_of_copy_on_write_paths"], iso
    assert iso.outcomes == {"failed": 1, "passed": 1}, iso


# ------------------------------------------------------------------ processes the session made

PROCESSES = {"test_pids.py": """
    import os
    import signal
    import subprocess
    import sys
    import unittest

    import psutil
    import pytest

    PROCESS_AT_IMPORT = psutil.Process()

    def test_process_object_made_at_import():
        assert PROCESS_AT_IMPORT.is_running()

    @pytest.mark.parametrize("pid", [os.getpid()])
    def test_pid_in_parametrize(pid):
        assert pid == os.getpid()

    class TestSubprocessOfSetUpClass(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

        @classmethod
        def tearDownClass(cls):
            cls.proc.kill()
            cls.proc.wait()

        def test_it_is_running(self):
            self.assertIsNone(self.proc.poll())

        def test_it_can_be_signalled(self):
            os.kill(self.proc.pid, 0)
"""}


def test_processes_the_session_made_are_not_visible(compat: Compat) -> None:
    """Inherent to the PID namespace, and documented (docs/limitations.rst:
    "The test is PID 2 of its own PID namespace; it sees only its own
    processes"): each of these tests fails isolated, and only these."""
    compat.write(PROCESSES)
    plain, iso = compat.both()
    assert plain.outcomes == {"passed": 4}, plain
    assert_isolated(iso)
    failed = sorted({r[0].split("[")[0] for r in iso.reports if r[2] == "failed"})  # the pid is in an id
    assert failed == ["test_pids.py::TestSubprocessOfSetUpClass::test_it_can_be_signalled",
                      "test_pids.py::TestSubprocessOfSetUpClass::test_it_is_running",
                      "test_pids.py::test_pid_in_parametrize",
                      "test_pids.py::test_process_object_made_at_import"], iso
    # and no test stopped the session or left the subprocess behind
    assert iso.outcomes == {"failed": 4}, iso


def test_processes_the_session_made_with_a_shared_pid_namespace(compat: Compat) -> None:
    """``@pytest.mark.isolated(pid="host")`` shares pytest's PID namespace:
    the process object made at import and the subprocess of ``setUpClass``
    are there again.  What still differs is a process of its own
    (docs/limitations.rst): ``os.getpid()`` is the sandbox's, and
    ``Popen.poll()`` on a process the pytest process started cannot wait
    for it (not the test's child: it reports it ended)."""
    text = PROCESSES["test_pids.py"].replace(
        "    import pytest\n", "    import pytest\n\n    pytestmark = pytest.mark.isolated(pid=\"host\")\n", 1)
    compat.write({"test_pids.py": text})
    plain, iso = compat.both(plain=NO_ISOLATE)
    assert plain.outcomes == {"passed": 4}, plain
    assert_isolated(iso)
    failed = sorted({r[0].split("[")[0] for r in iso.reports if r[2] == "failed"})
    assert failed == ["test_pids.py::TestSubprocessOfSetUpClass::test_it_is_running",
                      "test_pids.py::test_pid_in_parametrize"], iso
    assert iso.outcomes == {"failed": 2, "passed": 2}, iso


# ------------------------------------------------------------------ a session fixture's server

HTTP_SERVER = {"test_server.py": """
    import http.server
    import threading
    import urllib.request

    import pytest

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from the session fixture"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    @pytest.fixture(scope="session")
    def server():
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        yield "http://%s:%d/" % srv.server_address
        srv.shutdown()
        srv.server_close()

    def test_fetch(server):
        with urllib.request.urlopen(server, timeout=5) as response:
            assert response.read() == b"hello from the session fixture"

    def test_fetch_again(server):
        with urllib.request.urlopen(server, timeout=5) as response:
            assert response.status == 200
"""}


def test_a_session_fixtures_http_server(compat: Compat) -> None:
    """The server thread of a session fixture, in the pytest process, is
    reached from each sandbox at the same address, through the relay."""
    compat.write(HTTP_SERVER)
    plain, iso = compat.both()
    assert plain.outcomes == {"passed": 2}, plain
    assert_same(plain, iso)


# ------------------------------------------------------------------ start-up cost and header

STARTUP = {"test_many.py": """
    import pytest

    @pytest.mark.parametrize("i", range(200))
    def test_trivial(i):
        pass
"""}


def _header(run: Run) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("isolate")]


@pytest.mark.slow
def test_installing_the_plugin_costs_nothing_when_nothing_is_isolated(compat: Compat) -> None:
    """A run that isolates nothing neither probes the host nor imports the
    sandbox runtime (the probe cost every such run about 0.2 s).  Checked
    in the pytest process itself, not by timing it: what it costs in time
    is for the benchmarks."""
    compat.write({**STARTUP, "test_zz_last.py": """
        import sys

        def test_nothing_of_the_sandbox_was_loaded():
            assert "pytest_isolate.plugin" in sys.modules  # the plugin is active
            assert sorted(m for m in sys.modules if m.split(".")[0] == "isolate_runtime") == []
    """})
    run = compat.run("loaded", ISOLATED[0], ISOLATED[1], "-p", "no:cacheprovider")
    assert run.outcomes == {"passed": 201}, run


def test_no_header_when_nothing_is_isolated(compat: Compat) -> None:
    compat.write({"test_a.py": "def test_a():\n    pass\n"})
    run = compat.run("loaded", ISOLATED[0], ISOLATED[1])
    assert run.outcomes == {"passed": 1}, run
    assert _header(run) == [], run


def test_at_most_one_short_header_line_when_isolating(compat: Compat) -> None:
    compat.write({"test_a.py": "def test_a():\n    pass\n"}, plugins=["pytest-timeout"])
    run = compat.run("isolated", *ISOLATED)
    assert run.outcomes == {"passed": 1}, run
    header = _header(run)
    assert len(header) <= 1 and all(len(line) <= 100 for line in header), header
