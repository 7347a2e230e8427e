"""The sandbox on the real kernel: each test fails if its layer is removed."""
from __future__ import annotations

import errno
import os
import platform
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import psutil
import pytest
from isolate_runtime import CallablePayload, Outcome, SandboxResult, SandboxSpec, prepare

from ..conftest import skip_unless

Sandbox = Callable[..., SandboxResult]
ROOT = os.geteuid() == 0
PROJECT = Path(__file__).resolve().parents[2]


# 1. PID namespace -------------------------------------------------------------

def _process_view() -> Dict[str, Any]:
    ps = subprocess.run(["ps", "-e", "-o", "pid="], capture_output=True, text=True, check=True)
    return {"pid": os.getpid(), "psutil": sorted(psutil.pids()), "ps": sorted(int(x) for x in ps.stdout.split())}


def test_payload_sees_only_the_sandbox_processes(sandbox: Sandbox) -> None:
    r = sandbox(_process_view)
    assert r.outcome is Outcome.OK, r
    view = r.value
    assert 1 < view["pid"] < 10, "the payload must be neither PID 1 nor a host pid"
    assert view["psutil"] == [1, view["pid"]], "psutil sees host processes"
    # ps itself (and its shell-less parent, us) are the only extra processes
    assert set(view["ps"]) <= {1, view["pid"], view["pid"] + 1, view["pid"] + 2}
    assert os.getpid() not in view["psutil"] or os.getpid() < 10


def _shared_pid_view(caller: int, covered: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"sees_caller": caller in psutil.pids()}
    try:
        os.kill(caller, 0)
        out["signal"] = "ok"
    except OSError as e:
        out["signal"] = errno.errorcode.get(e.errno or 0, str(e))
    # the covers over host-global kernel state hold without a PID namespace too
    out["read_only"] = {p: bool(os.statvfs(p).f_flag & os.ST_RDONLY) for p in covered}
    return out


def test_pid_host_shares_the_callers_pid_namespace(sandbox: Sandbox) -> None:
    covered = [p for p in ("/proc/sys", "/proc/sysrq-trigger") if os.path.exists(p)]
    r = sandbox(_shared_pid_view, os.getpid(), covered, pid="host")
    assert r.outcome is Outcome.OK, r
    assert r.value == {"sees_caller": True, "signal": "ok", "read_only": {p: True for p in covered}}
    assert r.layers["pid"] == "off (pid='host')"
    assert all(state == "applied" for name, state in r.layers.items() if name != "pid"), r.layers


# 2. Copy-on-write filesystem ----------------------------------------------------

def _writes(targets: List[str], keep: str) -> Dict[str, str]:
    results: Dict[str, str] = {}
    for path in targets + [keep]:
        try:
            with open(path, "a") as f:
                f.write("written inside the sandbox\n")
            results[path] = "ok"
        except OSError as e:
            results[path] = errno.errorcode.get(e.errno or 0, str(e.errno))
    return results


def _host_writable(path: str) -> bool:
    target = path if os.path.exists(path) else os.path.dirname(path)
    return os.access(target, os.W_OK)


def test_writes_vanish_are_reported_and_writable_paths_persist(sandbox: Sandbox, tmp_path: Path) -> None:
    home = os.path.expanduser("~")
    usr_file = "/usr/share/isolate-sandbox-test.txt"
    # new files directly in / and in /etc: directories the sandbox makes in
    # place of the host's (its new root, an overlay's root) keep the caller's
    # host permissions
    targets = ["/etc/hosts", usr_file, str(PROJECT / "isolate-sandbox-test.txt"), os.path.join(home, ".isolate-test"),
               "/isolate-sandbox-test.txt", "/etc/isolate-sandbox-test.txt"]
    before = {p: Path(p).read_bytes() if os.path.exists(p) else None for p in targets}
    keep = str(tmp_path / "kept.txt")
    r = sandbox(_writes, targets, keep, writable=(str(tmp_path),))
    assert r.outcome is Outcome.OK, r
    for path in targets:
        # an ordinary process of this user: it may write exactly where it could on the host
        expected = "ok" if _host_writable(path) else "EACCES"
        assert r.value[path] == expected, (path, r.value[path])
        after = Path(path).read_bytes() if os.path.exists(path) else None
        assert after == before[path], f"{path} changed on the host"
        if expected == "ok":
            assert path in r.written_paths, f"{path} missing from {r.written_paths}"
    assert r.value[keep] == "ok"
    assert Path(keep).read_text() == "written inside the sandbox\n", "the declared writable path lost its file"
    assert keep not in r.written_paths


def test_tmp_and_dev_shm_are_copy_on_write_and_proc_dev_sys(sandbox: Sandbox) -> None:
    """What a session fixture made in /tmp or /dev/shm before the sandbox
    existed is visible; what the test writes there stays private and is
    not listed among the discarded writes (temporary files)."""
    markers = {where: Path(where) / f"isolate-host-marker-{os.getpid()}" for where in ("/tmp", "/dev/shm")}
    for marker in markers.values():
        marker.write_text("host")
    try:
        def probe() -> Dict[str, Any]:
            seen = {}
            for where, marker in markers.items():
                seen[where] = marker.read_text()
                marker.write_text("changed inside")
                Path(where, "inside").write_text("x")
            sys_ro = all(os.statvfs(p).f_flag & os.ST_RDONLY for p in ("/sys", "/sys/fs/cgroup") if os.path.isdir(p))
            return {"seen": seen, "dev": sorted(os.listdir("/dev")), "sys_ro": sys_ro,
                    "modes": {p: oct(os.stat(p).st_mode & 0o7777) for p in markers},
                    "shm": os.access("/dev/shm", os.W_OK), "pts": os.path.exists("/dev/pts/ptmx")}

        r = sandbox(probe)
        assert r.outcome is Outcome.OK, r
        assert r.value["seen"] == {"/tmp": "host", "/dev/shm": "host"}, "the host's /tmp or /dev/shm is hidden"
        assert r.value["modes"] == {p: oct(os.stat(p).st_mode & 0o7777) for p in markers}
        assert {"null", "zero", "urandom", "shm", "pts"} <= set(r.value["dev"])
        assert "vda" not in r.value["dev"] and "sda" not in r.value["dev"], "host block devices are visible"
        assert r.value["sys_ro"] and r.value["shm"] and r.value["pts"]
        for where, marker in markers.items():
            assert marker.read_text() == "host" and not Path(where, "inside").exists(), f"a write reached {where}"
        assert not [p for p in r.written_paths if p.startswith(("/tmp/", "/dev/shm/"))], r.written_paths
    finally:
        for marker in markers.values():
            marker.unlink()


def _same_device_as_directory(paths: List[str]) -> Dict[str, Any]:
    return {"same": {p: os.stat(p).st_dev == os.stat(os.path.dirname(p)).st_dev for p in paths},
            "ismount": {p: os.path.ismount(p) for p in paths}}


def _identity_files() -> List[str]:
    """Files below copy-on-write overlays that share their directory's
    device number on the host (a file bound over another would not)."""
    files = [os.path.realpath(p) for p in ("/etc/passwd", os.__file__, sys.executable, __file__)]
    files = [p for p in dict.fromkeys(files) if os.path.isfile(p)]
    return [p for p in files if _same_device_as_directory([p])["same"][p]]


def test_a_file_shows_its_directorys_device_number(sandbox: Sandbox) -> None:
    """Overlays over layers on different filesystems (the upper on tmpfs)
    need ``xino=on``, or ``os.path.ismount(file)`` is True and ``find
    -xdev``, ``du -x`` stop at every file."""
    from isolate_runtime import probe

    caps = probe()
    skip_unless(caps.overlay_xino, caps.xino_reason)
    files = _identity_files()
    assert files
    r = sandbox(_same_device_as_directory, files)
    assert r.outcome is Outcome.OK, r
    assert r.value == {"same": {p: True for p in files}, "ismount": {p: False for p in files}}


def test_without_xino_sandboxes_still_run(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that refuses ``xino=on`` (the probe says so) gets overlays
    without it: the sandbox works, only the device numbers differ."""
    import dataclasses

    from isolate_runtime import probe

    probe_mod = sys.modules["isolate_runtime.probe"]
    caps = probe()
    key = next(k for k, v in probe_mod._cache.items() if v is caps)
    monkeypatch.setitem(probe_mod._cache, key, dataclasses.replace(caps, overlay_xino=False))
    files = _identity_files()
    r = sandbox(_same_device_as_directory, files)
    assert r.outcome is Outcome.OK, r
    assert not all(r.value["same"].values()), "xino=on is not what makes the device numbers equal"


# 3. Network --------------------------------------------------------------------

def _host_has_ipv6() -> bool:
    try:
        socket.socket(socket.AF_INET6).close()
        return True
    except OSError:
        return False


HOST_IPV6 = _host_has_ipv6()


def _network() -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    families = [(socket.AF_INET, "127.0.0.1")] + ([(socket.AF_INET6, "::1")] if HOST_IPV6 else [])
    for family, host in families:
        with socket.socket(family) as srv:
            srv.bind((host, 0))
            srv.listen()
            with socket.create_connection(srv.getsockname()[:2], timeout=2) as c:
                conn, _ = srv.accept()
                conn.sendall(b"pong")
                out[host] = c.recv(4).decode()
                conn.close()
    t = time.monotonic()
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=5).close()
        out["external"] = "connected"
    except OSError as e:
        out["external"] = errno.errorcode.get(e.errno or 0, str(e))
    out["external_seconds"] = time.monotonic() - t
    with socket.socket(socket.AF_UNIX) as u:
        try:
            u.connect(out_abstract)
            out["abstract"] = "connected"
        except OSError as e:
            out["abstract"] = errno.errorcode.get(e.errno or 0, str(e))
    return out


out_abstract = "\0isolate-test-abstract-" + str(os.getpid())


def test_loopback_works_and_nothing_else_is_reachable(sandbox: Sandbox) -> None:
    with socket.socket(socket.AF_UNIX) as host_sock:
        host_sock.bind(out_abstract)
        host_sock.listen()
        r = sandbox(_network)
    assert r.outcome is Outcome.OK, r
    assert r.value["127.0.0.1"] == "pong"
    assert r.value.get("::1") == ("pong" if HOST_IPV6 else None)
    assert r.value["external"] == "ENETUNREACH" and r.value["external_seconds"] < 1
    assert r.value["abstract"] == "ECONNREFUSED", "the host's abstract unix socket is reachable"


def test_network_host_keeps_the_hosts_network(sandbox: Sandbox) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        r = sandbox(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close(), network="host")
        assert r.outcome is Outcome.OK, r
        assert r.layers["network"].startswith("off")
        r2 = sandbox(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
        assert r2.outcome is Outcome.RAISED and getattr(r2.error, "type_name", "") == "ConnectionRefusedError"


def _listening_fds() -> List[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            with socket.socket(fileno=os.dup(int(name))) as sock:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    found.append(int(name))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("network", ["services", "host"])
def test_no_listening_socket_of_the_caller_is_in_reach(sandbox: Sandbox, network: str) -> None:
    """Holding one, the payload could accept the connections meant for the
    caller's server (other sandboxes' among them) or shut it down."""
    with socket.socket() as srv, socket.socket(socket.AF_UNIX) as unix, socket.socket() as later:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        unix.bind("\0isolate-test-listening-" + str(os.getpid()))
        unix.listen()
        later.bind(("127.0.0.1", 0))  # bound, and made to listen once the sandbox is made
        assert {srv.fileno(), unix.fileno()} <= set(_listening_fds())
        prepared = prepare(SandboxSpec(CallablePayload(_listening_fds), network=network))
        time.sleep(0.5)  # its setup done: held at the gate
        later.listen()
        r = prepared.run()
    assert r.outcome is Outcome.OK, r
    assert r.value == [], f"the caller's listening sockets in the sandbox: fds {r.value}"


# 4. Identity and privileges ------------------------------------------------------

def _identity_and_attacks() -> Dict[str, Any]:
    import ctypes

    out: Dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
    try:
        socket.sethostname("isolate-attacker")
        out["hostname_set"] = True
    except OSError as e:
        out["hostname_set"] = errno.errorcode.get(e.errno or 0)
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
    out["mount"] = rc == 0 or errno.errorcode.get(ctypes.get_errno())
    with open("/proc/self/status") as f:
        out["capeff"] = [line.split()[1] for line in f if line.startswith("CapEff")][0]
    return out


@pytest.mark.parametrize("as_root", [False, True], ids=["own-ids", "fake-root"])
def test_identity_and_no_power_over_the_host(sandbox: Sandbox, as_root: bool) -> None:
    host_name = socket.gethostname()
    mounts_before = Path("/proc/self/mountinfo").read_text()
    links_before = sorted(os.listdir("/sys/class/net"))
    r = sandbox(_identity_and_attacks, root=as_root)
    assert r.outcome is Outcome.OK, r
    v = r.value
    if as_root:
        assert (v["uid"], v["gid"]) == (0, 0)
    else:
        assert (v["uid"], v["gid"]) == (os.getuid(), os.getgid())
        if not ROOT:
            assert v["capeff"] == "0000000000000000", "an ordinary user's payload kept capabilities"
            assert v["hostname_set"] == "EPERM" and v["mount"] == "EPERM"
    # whatever it could do inside, the host is untouched
    assert socket.gethostname() == host_name
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert sorted(os.listdir("/sys/class/net")) == links_before


def test_hostname_is_the_hosts_unless_asked(sandbox: Sandbox) -> None:
    r = sandbox(socket.gethostname)
    assert r.value == socket.gethostname(), "a test comparing gethostname() with a value taken at import breaks"
    r = sandbox(socket.gethostname, hostname="isolate-sandbox")
    assert r.value == "isolate-sandbox"


# 5. Nothing survives -----------------------------------------------------------

DAEMON = textwrap.dedent("""
    import os, sys, time
    if os.fork(): os._exit(0)
    os.setsid()
    if os.fork(): os._exit(0)
    # atomically: the caller waits for the name, then reads
    with open(sys.argv[1] + ".tmp", "w") as f: f.write(str(os.getpid()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(300)
""")


def _start_daemon(tag: str) -> str:
    subprocess.run([sys.executable, "-c", DAEMON, "/tmp/daemon.pid", tag], check=True)
    # the grandchild writes it after subprocess.run() returned: wait (bounded), not a fixed 0.2 s
    pidfile = Path("/tmp/daemon.pid")
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pidfile.read_text()


def _host_procs_with(tag: str) -> List[int]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if tag in (p.info["cmdline"] or []):
            found.append(p.pid)
    return found


def test_double_forked_setsid_daemon_leaves_nothing(sandbox: Sandbox) -> None:
    tag = f"isolate-daemon-{os.getpid()}-{time.monotonic_ns()}"
    r = sandbox(_start_daemon, tag)
    assert r.outcome is Outcome.OK, r
    assert int(r.value) < 20, "the daemon ran outside the sandbox's PID namespace"
    deadline = time.monotonic() + 5
    while _host_procs_with(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _host_procs_with(tag) == []


CALLER = textwrap.dedent("""
    import os, sys, time
    from isolate_runtime import run, SandboxSpec, CallablePayload
    def payload():
        import subprocess
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]])
        time.sleep(300)
    print("starting", flush=True)
    run(SandboxSpec(CallablePayload(payload)))
""")


def test_sigkill_of_the_caller_kills_the_whole_sandbox(full_isolation: None) -> None:
    tag = f"isolate-orphan-{os.getpid()}-{time.monotonic_ns()}"
    caller = subprocess.Popen([sys.executable, "-c", CALLER, tag], stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None and caller.stdout.readline().strip() == "starting"
        deadline = time.monotonic() + 10
        while not _host_procs_with(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _host_procs_with(tag), "the sandboxed grandchild never started"
        caller.kill()
        caller.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _host_procs_with(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _host_procs_with(tag) == [], "sandbox processes outlived the caller"
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
        if caller.stdout is not None:
            caller.stdout.close()


# Outcomes ------------------------------------------------------------------------

def _raise() -> None:
    raise KeyError("inside")


def _loop() -> None:
    while True:
        pass


@pytest.mark.parametrize("fn,args,outcome,check", [
    (_raise, (), Outcome.RAISED, lambda r: getattr(r.error, "type_name", "") == "KeyError" and "inside" in r.traceback),
    (os._exit, (0,), Outcome.EXITED, lambda r: r.exit_code == 0),
    (os._exit, (3,), Outcome.EXITED, lambda r: r.exit_code == 3),
    (os.kill, (2, signal.SIGSEGV), Outcome.CRASHED, lambda r: r.signal_name == "SIGSEGV"),
    (os.abort, (), Outcome.CRASHED, lambda r: r.signal_name == "SIGABRT"),
], ids=["raise", "exit0", "exit3", "segv", "abort"])
def test_outcomes(sandbox: Sandbox, fn: Callable[..., Any], args: Any, outcome: Outcome,
                  check: Callable[[SandboxResult], bool]) -> None:
    r = sandbox(fn, *args)
    assert r.outcome is outcome, r
    assert check(r), r
    with pytest.raises(AttributeError, match=f"no value: the sandbox ended with {outcome.value}"):
        _ = r.value


def test_timeout_dumps_stacks_then_kills(sandbox: Sandbox) -> None:
    t = time.monotonic()
    r = sandbox(_loop, timeout_seconds=0.5)
    assert r.outcome is Outcome.TIMEOUT, r
    assert "in _loop" in r.stack_dump and "most recent call first" in r.stack_dump
    assert time.monotonic() - t < 5


def test_messages_stream_in_order(sandbox: Sandbox) -> None:
    from isolate_runtime import SandboxSpec, run, send_message
    from isolate_runtime.spec import CallablePayload

    got: List[Any] = []

    def talk() -> str:
        for i in range(100):
            send_message(("m", i, "x" * (i * 500)))
        return "done"

    r = run(SandboxSpec(CallablePayload(talk)), on_message=got.append)
    assert r.value == "done"
    assert [m[1] for m in got] == list(range(100))


def test_setup_failure_is_reported_distinctly(sandbox: Sandbox, tmp_path: Path) -> None:
    missing = str(tmp_path / "does-not-exist")
    r = sandbox(int, writable=(missing,))
    assert r.outcome is Outcome.SETUP_FAILED, r
    assert r.setup_error is not None and r.setup_error.step == "root filesystem"
    assert r.setup_error.errno == errno.ENOENT
    assert "does-not-exist" in str(r.error)


def _threads_and_raise() -> None:
    import threading

    results: List[int] = []
    t = threading.Thread(target=lambda: results.append(threading.get_native_id()))
    t.start()
    t.join()
    assert results and results[0] != threading.get_native_id()
    signal.raise_signal(signal.SIGTERM)  # raise() uses the C library's cached thread id


def test_payload_threads_and_raise_signal(sandbox: Sandbox) -> None:
    r = sandbox(_threads_and_raise)
    assert r.outcome is Outcome.CRASHED and r.signal_name == "SIGTERM", r


def _cwd_view() -> Dict[str, Any]:
    with open("created-inside.txt", "w") as f:
        f.write("x")
    return {"cwd": os.getcwd(), "files": sorted(os.listdir("."))}


def test_working_directory_under_tmp_is_visible_copy_on_write(sandbox: Sandbox, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A checkout under /tmp would be hidden by the private /tmp: the working
    # directory (and spec.visible paths) get a copy-on-write view instead.
    project = Path("/tmp") / f"isolate-view-{os.getpid()}-{time.monotonic_ns()}"
    project.mkdir()
    try:
        (project / "data.txt").write_text("host")
        monkeypatch.chdir(project)
        r = sandbox(_cwd_view)
        assert r.outcome is Outcome.OK, r
        assert r.value == {"cwd": str(project), "files": ["created-inside.txt", "data.txt"]}
        assert sorted(os.listdir(project)) == ["data.txt"]
        assert str(project / "created-inside.txt") in r.written_paths
    finally:
        for child in project.iterdir():
            child.unlink()
        project.rmdir()


def test_stack_dump_stops_at_the_payload() -> None:
    from isolate_runtime.watch import trim_dump

    dump = ("Thread 0x1 (most recent call first):\n"
            "  File \"/x/worker.py\", line 3 in spin\n"
            "  File \"/usr/lib/threading.py\", line 9 in run\n\n"
            "Current thread 0x2 (most recent call first):\n"
            "  File \"/x/t.py\", line 5 in _loop\n"
            f"  File \"/site{os.sep}isolate_runtime{os.sep}launcher.py\", line 1 in _run_payload\n"
            "  File \"/site/_pytest/main.py\", line 2 in main\n")
    assert trim_dump(dump) == ("Thread 0x1 (most recent call first):\n"
                               "  File \"/x/worker.py\", line 3 in spin\n"
                               "  File \"/usr/lib/threading.py\", line 9 in run\n\n"
                               "Current thread 0x2 (most recent call first):\n"
                               "  File \"/x/t.py\", line 5 in _loop\n")


def test_teardown_after_the_result_is_finished_by_settle(sandbox: Sandbox) -> None:
    from isolate_runtime import launcher

    r = sandbox(os.getpid)
    assert r.outcome is Outcome.OK
    launcher.settle()
    assert launcher._tearing_down == []
    assert psutil.Process().children() == [], "settle() left sandbox processes behind"


# Root runs ------------------------------------------------------------------------

def _privileges(path: str) -> Dict[str, Any]:
    import struct

    out: Dict[str, Any] = {}
    with open("/proc/self/status") as f:
        out.update({k: v.strip() for k, v in (line.split(":", 1) for line in f)
                    if k in ("CapEff", "CapBnd", "NoNewPrivs")})
    open(path, "w").close()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("plain", 0o755)):
        try:
            os.chmod(path, mode)
            out[name] = "ok"
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno or 0)
    # a file capability (CAP_DAC_READ_SEARCH, effective) set inside is stored
    # for the host's uid 0, and honoured on the host
    try:
        os.setxattr(path, "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 2, 0, 0, 0))
        out["fcap"] = "ok"
    except OSError as e:
        out["fcap"] = errno.errorcode.get(e.errno or 0)
    return out


@pytest.mark.skipif(not ROOT, reason="what a root run may do: only meaningful as root")
@pytest.mark.parametrize("fake_root", [False, True], ids=["default", "root=True"])
def test_a_root_run_hands_out_no_root(sandbox: Sandbox, tmp_path: Path, fake_root: bool) -> None:
    r = sandbox(_privileges, str(tmp_path / "f"), writable=(str(tmp_path),), root=fake_root)
    assert r.outcome is Outcome.OK, r
    v = r.value
    if not fake_root:
        assert (v["CapEff"], v["CapBnd"], v["NoNewPrivs"]) == ("0000000000000000", "0000000000000000", "1"), v
    # uid 0 owns what it creates: no setuid/setgid file of root's may come out
    assert (v["suid"], v["sgid"], v["plain"]) == ("EPERM", "EPERM", "ok"), v
    assert v["fcap"] == "EPERM", v  # nor a file capability
    assert not int(v["CapEff"], 16) & (1 << 31) and not int(v["CapBnd"], 16) & (1 << 31), v  # CAP_SETFCAP
    assert not (tmp_path / "f").stat().st_mode & 0o6000


def _namespaces_and_threads() -> Dict[str, Any]:
    import ctypes
    import subprocess
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    out: Dict[str, Any] = {}
    for name, flags in (("user", 0x10000000), ("cgroup", 0x02000000), ("uts", 0x04000000),
                        ("user+cgroup", 0x12000000)):
        pid = os.fork()
        if pid == 0:  # each in a child of its own: one that succeeds changes the process
            os._exit(0 if libc.unshare(flags) == 0 else ctypes.get_errno())
        out[name] = errno.errorcode.get(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "ok")
    out["clone3"] = errno.errorcode.get(ctypes.get_errno(), "?") if libc.syscall(435, 0, 0) == -1 else "ok"
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    ring = libc.syscall(425, 1, params)  # io_uring_setup: its operations never pass a seccomp filter
    out["io_uring"] = errno.errorcode.get(ctypes.get_errno(), "?") if ring == -1 else "ok"
    if ring >= 0:
        os.close(ring)
    # PID 1 shares the payload's address space (the C executor): it must be
    # held to the same filter, or the payload could have it do what it may not
    with open("/proc/1/status") as f:
        out["pid1-seccomp"] = next((line.split()[1] for line in f if line.startswith("Seccomp:")), None)
    if platform.machine() == "x86_64":  # the i386 ABI (int 0x80) from this 64-bit process: unshare is 310 there
        import mmap

        code = b"\x53\xb8" + (310).to_bytes(4, "little") + b"\x89\xfb\xcd\x80\x5b\xc3"
        page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(code)
        int80 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
        pid = os.fork()
        if pid == 0:
            ret = int80(0x10000000)
            os._exit(0 if ret == 0 else -ret)
        out["i386"] = errno.errorcode.get(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "ok")
    got: List[int] = []
    thread = threading.Thread(target=lambda: got.append(1))
    thread.start()
    thread.join()
    out["thread"] = got == [1]
    out["subprocess"] = subprocess.run(["true"]).returncode
    return out


@pytest.mark.skipif(not ROOT, reason="what a root run may do: only meaningful as root")
@pytest.mark.parametrize("fake_root", [False, True], ids=["default", "root=True"])
def test_a_root_runs_payload_makes_no_user_or_cgroup_namespace(sandbox: Sandbox, fake_root: bool) -> None:
    """In a user namespace of its own the host's uid 0 would have every
    capability over what the host's uid 0 owns and it can reach (its
    cgroup's limit files, through a cgroup filesystem it mounts); with
    root=True, a cgroup namespace of its own is enough for that mount.
    Threads and processes still start (glibc falls back from clone3)."""
    r = sandbox(_namespaces_and_threads, root=fake_root)
    assert r.outcome is Outcome.OK, r
    v = r.value
    assert (v["user"], v["cgroup"], v["clone3"]) == ("EPERM", "EPERM", "ENOSYS"), v
    assert v.get("i386", "ENOSYS") == "ENOSYS", v  # another ABI's numbers are not in the filter: none of it
    assert v["io_uring"] == "ENOSYS" and v["pid1-seccomp"] == "2", v
    assert v["uts"] == ("ok" if fake_root else "EPERM"), v  # other namespaces: the capabilities decide
    assert v["thread"] is True and v["subprocess"] == 0, v


@pytest.mark.skipif(ROOT, reason="an ordinary user's run: the unprivileged re-run of this file checks it")
def test_an_ordinary_users_test_makes_no_cgroup_namespace(sandbox: Sandbox) -> None:
    """With a user namespace of its own beside it, a cgroup namespace of its
    own would let the test mount a cgroup filesystem whose root is its own
    cgroup (its user's files: its limits).  User namespaces stay allowed."""
    r = sandbox(_namespaces_and_threads)
    assert r.outcome is Outcome.OK, r
    v = r.value
    assert (v["user"], v["user+cgroup"], v["clone3"]) == ("ok", "EPERM", "ENOSYS"), v
    assert v["thread"] is True and v["subprocess"] == 0, v


def test_the_seccomp_filter_is_well_formed() -> None:
    from isolate_runtime import seccomp

    for machine in ("x86_64", "aarch64"):
        for root in (True, False):
            prog = seccomp.program(machine, root=root)
            assert prog is not None and len(prog) % 8 == 0 and len(prog) // 8 < 256
            last = prog[-8:]
            assert last[:2] == b"\x06\x00", "the filter must end with a return"
    assert seccomp.program("sparc") is None
