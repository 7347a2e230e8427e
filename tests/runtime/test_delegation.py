"""An ordinary user on cgroup v2: the cgroup tests as uid 65534
in a subtree delegated to it, and ``--isolate-delegate`` asking a real
``systemd --user`` for a delegated scope.

These need root on a cgroup v2 host to build the delegation (CI runs them
in the cgroup v2 VM with ``PYTEST_ISOLATE_CGROUP2=1``, which turns the skip
on any other host into a failure).  Everything runs for real: the kernel's
delegation rules, the user's own sandboxes and limits, and systemd's user
instance answering ``StartTransientUnit``.  One thing is stood in for: on a
real host, when the user's manager may not move a process out of a
root-owned login-session cgroup, it asks the system manager to
(``AttachProcessesToUnit``, systemd >= 238); there is no system manager
here, so the session's parent slice lets the user move its own processes.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from isolate_runtime.cgroups import _dbus, _fs, probe_cgroups, systemd
from isolate_runtime.cgroups.systemd import DelegationError, delegate_self

from ..conftest import skip_unless
from .cgroup_helpers import NOBODY, delegate_subtree, remove_subtree

# Not marked 'cgroup': the cgroup v2 VM steps of .ci/run run that marker as
# root already; this module gets a step of its own (it runs test_cgroups.py
# twice more, as an ordinary user).

PROJECT = Path(__file__).resolve().parents[2]
#: Set by CI for its cgroup v2 runs: these tests must run there.
CGROUP2 = os.environ.get("PYTEST_ISOLATE_CGROUP2") == "1"
SYSTEMD = next((p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd") if os.access(p, os.X_OK)), None)


def _delegating_mount() -> Tuple[Optional[str], str]:
    """The cgroup2 mount to delegate from, or why there is none."""
    if os.geteuid() != 0:
        return None, "building a delegated subtree needs root"
    found = probe_cgroups()
    if found.kind != "unified":
        return None, f"this host's cgroups are not v2 only ({found.describe()})"
    for m in _fs.cgroup_mounts():
        if m.fstype == "cgroup2" and m.root == "/" and not m.read_only:
            enabled = _fs.read(os.path.join(m.path, "cgroup.subtree_control")).split()
            missing = [c for c in ("memory", "pids", "cpu") if c not in enabled]
            if not missing:
                return m.path, ""
            return None, f"the cgroup2 root does not enable {', '.join(missing)} for its children"
    return None, "no writable cgroup2 mount shows the whole hierarchy"


@pytest.fixture(scope="module")
def v2_mount() -> str:
    mount, why = _delegating_mount()
    if mount is None:
        if CGROUP2:
            pytest.fail(f"PYTEST_ISOLATE_CGROUP2=1 but: {why}")
        pytest.skip(f"{why} (CI runs these in its cgroup v2 VM)")
    return mount


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory uid 65534 owns (with a $HOME), after checking that it can
    run this interpreter."""
    setpriv = shutil.which("setpriv")
    skip_unless(setpriv is not None, "setpriv (util-linux) is not installed")
    check = subprocess.run([str(setpriv), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            sys.executable, "-c", "import isolate_runtime, psutil, pytest"],
                           capture_output=True, text=True, timeout=120)
    skip_unless(check.returncode == 0, f"this interpreter is not usable by uid {NOBODY} (install it in a venv "
                                       f"outside /root): {check.stderr[-200:]}")
    # not under /tmp (a sandbox's /tmp is private), nor in the checkout (the
    # cgroup v2 VM shares it with the host, which shows it as the host's user's)
    d = Path("/var/tmp") / f"pytest-isolate-delegation-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    (d / "home").mkdir(parents=True)
    for p in (d, d / "home"):
        os.chown(p, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _slice(mount: str) -> str:
    return os.path.join(mount, f"pytest-isolate-delegation-{os.getpid()}.slice")


def _as_nobody_in(cgroup: str, argv: Sequence[str], env: Dict[str, str], cwd: Path,
                  timeout: float) -> "subprocess.CompletedProcess[str]":
    """Run ``argv`` as uid 65534 in ``cgroup``, moved there by root first (as
    systemd starts a unit's process in its cgroup)."""
    shim = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    return subprocess.run(["sh", "-c", shim, cgroup, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", "--inh-caps=-all", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _tail(out: "subprocess.CompletedProcess[str]") -> str:
    return out.stdout[-6000:] + out.stderr[-3000:]


# ------------------------------------------------------- the cgroup tests, as nobody

@pytest.mark.parametrize("controllers, files, ran", [
    # systemd >= 252 delegates pids, memory and cpu to user@.service
    (("memory", "pids", "cpu"), ("tests/runtime/test_cgroups.py",),
     ["test_cgroups.py::test_cpu_bandwidth_cap_throttles PASSED"]),
    # before 252 only pids and memory: the cap degrades, with a note
    (("memory", "pids"), ("tests/runtime/test_cgroups.py",),
     ["test_cgroups.py::test_cpu_bandwidth_cap_throttles SKIPPED",
      "test_cgroups.py::test_without_the_cpu_controller_a_cpu_cap_is_not_applied_and_says_why PASSED"]),
], ids=["memory-pids-cpu", "memory-pids"])
def test_cgroup_tests_pass_for_an_ordinary_user_in_a_delegated_subtree(
        v2_mount: str, work: Path, controllers: Tuple[str, ...], files: Tuple[str, ...], ran: List[str]) -> None:
    top = _slice(v2_mount)
    scope = delegate_subtree(v2_mount, f"{os.path.basename(top)}/user.scope", NOBODY, controllers)
    withheld = [c for c in ("cpu",) if c not in controllers]
    env = dict(os.environ, HOME=str(work / "home"), PYTEST_ADDOPTS="",
               PYTEST_ISOLATE_WITHHELD_CONTROLLERS=",".join(withheld))
    try:
        # (not Hypothesis's plugin: its database would be in the checkout, which this user may not write)
        out = _as_nobody_in(scope, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                    "-p", "no:hypothesispytest", "-m", "cgroup", "-v",
                                    f"--basetemp={work / 'bt'}", *files], env, PROJECT, timeout=1200)
    finally:
        remove_subtree(top)
    assert out.returncode == 0, _tail(out)
    assert " passed" in out.stdout and " failed" not in out.stdout, _tail(out)
    for line in ["test_cgroups.py::test_oom_is_recorded_in_the_sandbox_own_cgroup PASSED",
                 "test_cgroups.py::test_pids_limit_contains_a_fork_bomb PASSED", *ran]:
        assert line in out.stdout, _tail(out)


# ------------------------------------------- --isolate-delegate and systemd --user

PROJECT_TESTS = """
import pytest

@pytest.mark.isolated(memory="64M")
def test_over_its_memory_limit():
    hog = b"x" * (200 << 20)

@pytest.mark.isolated(memory="64M")
def test_within_it():
    small = b"x" * (8 << 20)
"""

#: Runs as root in a mount namespace of its own (a private /run): starts
#: pytest as the user before and after the user's systemd starts.
SCENARIO = textwrap.dedent("""
    set -u
    mount -t tmpfs -o mode=755 pytest-isolate-test /run
    mkdir -p /run/systemd/system "$XDG_RUNTIME_DIR"   # the first: systemd --user refuses without it
    chown {uid}:{uid} "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
    in_session() {{ sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$SESSION" setpriv --reuid={uid} \\
                     --regid={uid} --clear-groups --inh-caps=-all "$@"; }}
    pytest() {{ in_session "$PYTHON" -m pytest -p no:cacheprovider "$@"; }}
    pytest --isolate-delegate > "$OUT/1-no-manager.txt" 2>&1; echo $? > "$OUT/1.rc"
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$MANAGER" setpriv --reuid={uid} --regid={uid} \\
        --clear-groups --inh-caps=-all "$SYSTEMD" --user > "$OUT/manager.log" 2>&1 &
    manager=$!
    for _ in $(seq 600); do [ -S "$XDG_RUNTIME_DIR/systemd/private" ] && break; sleep 0.1; done
    pytest --collect-only -v > "$OUT/2-header.txt" 2>&1; echo $? > "$OUT/2.rc"
    pytest --isolate-delegate -v > "$OUT/3-delegated.txt" 2>&1; echo $? > "$OUT/3.rc"
    kill $manager; wait $manager
""")


def test_isolate_delegate_gets_a_scope_from_the_users_systemd(v2_mount: str, work: Path) -> None:
    skip_unless(SYSTEMD is not None, "systemd is not installed (its user instance is what --isolate-delegate asks)")
    unshare = shutil.which("unshare")
    skip_unless(unshare is not None, "unshare (util-linux) is not installed")
    assert SYSTEMD is not None and unshare is not None
    project = work / "project"
    project.mkdir()
    (project / "test_budget.py").write_text(PROJECT_TESTS)
    out_dir = work / "out"
    out_dir.mkdir()
    for p in (project, project / "test_budget.py", out_dir):
        os.chown(p, NOBODY, NOBODY)
    top = _slice(v2_mount)
    # the user's manager, in the cgroup user@.service gets (Delegate=pids memory cpu) ...
    manager = delegate_subtree(v2_mount, f"{os.path.basename(top)}/user@{NOBODY}.service", NOBODY,
                               ("memory", "pids", "cpu"))
    # ... and a login session's scope beside it, root's like every session scope
    session = os.path.join(top, "session-1.scope")
    _fs.mkdir(session)
    os.chown(os.path.join(top, "cgroup.procs"), NOBODY, NOBODY)  # stands in for the system manager
    env = dict(os.environ, HOME=str(work / "home"), PYTEST_ADDOPTS="", XDG_RUNTIME_DIR=f"/run/user/{NOBODY}",
               SESSION=session, MANAGER=manager, OUT=str(out_dir), PYTHON=sys.executable, SYSTEMD=SYSTEMD)
    try:
        run = subprocess.run([unshare, "--mount", "--propagation", "private", "bash", "-c",
                              SCENARIO.format(uid=NOBODY)], cwd=project, env=env, capture_output=True, text=True,
                             timeout=900)
    finally:
        remove_subtree(top)
    texts = {p.stem: p.read_text() for p in out_dir.iterdir()}
    every = "\n".join(f"--- {k}\n{v[-3000:]}" for k, v in sorted(texts.items())) + run.stdout + run.stderr
    assert run.returncode == 0, every

    # 1. no user manager yet: --isolate-delegate says what failed and what to do
    assert texts["1"].strip() == "4", every  # pytest's usage error
    assert (f"ERROR: pytest-isolate: --isolate-delegate (from --isolate-delegate): cannot ask the systemd user "
            f"instance of uid {NOBODY} for a delegated cgroup: no systemd user instance listens at "
            f"/run/user/{NOBODY}/systemd/private (the socket does not exist). Fix: start one (a login session, or "
            f"`loginctl enable-linger ") in texts["1-no-manager"], every

    # 2. the manager answers: the header names the fix that applies (-v: and why)
    assert texts["2"].strip() == "0", every
    assert ("isolate: sandbox layers: all 7; cgroups: none (fix: --isolate-delegate); C accelerator: in use"
            in texts["2-header"]), every
    assert (f"isolate: cgroups: none: no write access to this process's cgroup {session} for uid {NOBODY} (not "
            f"delegated). Fix: this user's systemd answers at /run/user/{NOBODY}/systemd/private and can delegate "
            f"one: run pytest with --isolate-delegate") in texts["2-header"], every

    # 3. --isolate-delegate: a scope from systemd, and the memory limit holds in it
    delegated = texts["3-delegated"]
    assert texts["3"].strip() == "1", every  # the test over its limit fails, as OOM
    assert ("isolate: cgroups delegated by systemd (--isolate-delegate (from --isolate-delegate)): scope "
            "pytest-isolate-") in delegated, every
    assert f"cgroups: unified: memory,cpu,pids in {v2_mount}/{os.path.basename(top)}/user@{NOBODY}.service/" \
           "app.slice/pytest-isolate-" in delegated, every
    assert "test_budget.py::test_over_its_memory_limit OOM" in delegated, every
    assert "test_budget.py::test_within_it PASSED" in delegated, every
    assert "OOM: the sandbox ran out of memory and was killed during call (oom_kill=" in delegated, every


# ---------------------------------------- the D-Bus exchange, against a stand-in

class _FakeManager:
    """A unix socket that authenticates like systemd's private socket and
    answers ``Ping`` and ``StartTransientUnit`` (with ``reply``); it records
    the calls.  Only for the paths a real manager cannot be made to take
    (refusing, not moving us); the real one is used above."""

    def __init__(self, path: Path, reply: Optional[Tuple[str, str]]) -> None:
        self.path = str(path)
        self.reply = reply  # (error name, message), or None: accept with a job
        self.calls: List[_dbus.Message] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn)
                except (OSError, _dbus.DBusError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        assert f.read(1) == b"\0"
        assert f.readline().startswith(b"AUTH EXTERNAL ")
        conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        assert f.readline() == b"BEGIN\r\n"
        while True:
            head = f.read(16)
            if len(head) < 16:
                return
            msg = _dbus.decode(head + f.read(_dbus._message_length(head) - 16))
            self.calls.append(msg)
            member = msg.fields.get(_dbus.MEMBER)
            if member == "Ping" and not msg.fields.get(_dbus.PATH) == "/":
                conn.sendall(_dbus.encode(_dbus.METHOD_RETURN, 1, {_dbus.REPLY_SERIAL: msg.serial}))
            elif member == "StartTransientUnit":
                if self.reply is None:
                    conn.sendall(_dbus.encode(_dbus.METHOD_RETURN, 2, {_dbus.REPLY_SERIAL: msg.serial}, "o",
                                              ["/org/freedesktop/systemd1/job/42"]))
                else:
                    conn.sendall(_dbus.encode(_dbus.ERROR, 2, {_dbus.REPLY_SERIAL: msg.serial,
                                                               _dbus.ERROR_NAME: self.reply[0]}, "s",
                                              [self.reply[1]]))

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)


@pytest.fixture
def fake_manager(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[_FakeManager]:
    manager = _FakeManager(tmp_path / "private", getattr(request, "param", None))
    try:
        yield manager
    finally:
        manager.close()


def _who() -> str:
    return "the system manager" if os.geteuid() == 0 else f"the systemd user instance of uid {os.geteuid()}"


def test_marshalling_round_trip() -> None:
    props = [("PIDs", _dbus.Variant("au", [1, 2])), ("Delegate", _dbus.Variant("b", True)),
             ("Description", _dbus.Variant("s", "x y"))]
    data = _dbus.encode(_dbus.METHOD_CALL, 7, {_dbus.PATH: "/a", _dbus.MEMBER: "M"}, "ssa(sv)a(sa(sv))",
                        ["u.scope", "fail", props, []])
    assert len(data) == _dbus._message_length(data[:16])
    msg = _dbus.decode(data)
    assert (msg.kind, msg.serial, msg.fields[_dbus.SIGNATURE]) == (_dbus.METHOD_CALL, 7, "ssa(sv)a(sa(sv))")
    assert msg.body == ("u.scope", "fail", [tuple(p) for p in props], [])


@pytest.mark.parametrize("fake_manager", [("org.freedesktop.DBus.Error.AccessDenied", "Access denied")],
                         indirect=True)
def test_a_refusal_is_reported_with_systemds_reason(fake_manager: _FakeManager) -> None:
    with pytest.raises(DelegationError) as e:
        delegate_self(socket_path=fake_manager.path)
    call = fake_manager.calls[-1]
    unit, mode, props, aux = call.body
    assert unit == f"pytest-isolate-{os.getpid()}-{systemd._counter}.scope" and mode == "fail" and aux == []
    values = {name: v.value for name, v in props}
    assert values["PIDs"] == [os.getpid()] and values["Delegate"] is True
    assert str(e.value) == (
        f"{_who()} refused a delegated scope {unit} for this process: org.freedesktop.DBus.Error.AccessDenied: "
        "Access denied. Fix: see `journalctl --user -xe`; or run pytest in a delegated cgroup some other way, "
        "e.g. `systemd-run --user --scope -p Delegate=yes pytest ...`")


def test_a_scope_that_never_gets_this_process_is_reported(fake_manager: _FakeManager) -> None:
    own = _fs.own_cgroups().get("", "")
    with pytest.raises(DelegationError) as e:
        delegate_self(socket_path=fake_manager.path, move_timeout=0.3)
    unit = f"pytest-isolate-{os.getpid()}-{systemd._counter}.scope"
    assert str(e.value) == (
        f"{_who()} accepted the scope {unit} (job /org/freedesktop/systemd1/job/42) but did not move this process: "
        f"after 0.3 s it is still in {own}. Fix: see `journalctl --user -xe`; systemd needs write access to the "
        "cgroup this process is in, or the system manager's help (systemd >= 238)")


def test_why_a_manager_cannot_be_asked(tmp_path: Path) -> None:
    missing = str(tmp_path / "none")
    assert systemd.unreachable(missing) == (f"no systemd user instance listens at {missing} (the socket does not "
                                            "exist)")
    plain = tmp_path / "plain"
    plain.write_text("")
    assert systemd.unreachable(str(plain)) == f"cannot connect to {plain} (Connection refused)"
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:  # accepts, then says nothing: not a D-Bus peer
        mute.bind(str(tmp_path / "mute"))
        mute.listen(1)
        assert systemd.unreachable(str(tmp_path / "mute"), timeout=0.5) == (
            f"{tmp_path / 'mute'} did not answer within 0.5 s")
    finally:
        mute.close()
    assert systemd.manager_socket({"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000) == \
        "/run/user/1000/systemd/private"
    assert systemd.manager_socket({}, euid=1000) == "/run/user/1000/systemd/private"
    assert systemd.manager_socket({}, euid=0) == "/run/systemd/private"


def test_the_fake_manager_answers_a_ping(fake_manager: _FakeManager) -> None:
    assert systemd.unreachable(fake_manager.path) is None
