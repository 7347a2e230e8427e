"""Run a hostile inner test file under ``--isolate-all`` and look at the host from outside.

Each containment case writes an inner project (``pytest.ini``, a reporter
``conftest.py``, the ``hostile`` helper module and the hostile test file),
runs it in a separate pytest process in its own session (so an escape that
signals the process group hits the inner run, not this one), and then checks
the host.  The hostile tests learn what to attack from environment variables
and may leave *evidence* (what they tried, and what the kernel answered) in
a declared writable directory; the verdict always comes from the host side.

``CONTAINMENT_SANITY=1`` runs every inner file with ``--no-isolate`` instead:
each case's host-side check must then fail, which shows it would catch the
isolation being removed.  Cases whose escape would change host-global state
(hostname, sysctls, network links, mounts) are skipped in that mode.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import pytest

SANITY = os.environ.get("CONTAINMENT_SANITY") == "1"

#: The parent-side reporter of every inner run: one JSON line per report
#: (replayed reports are logged in the parent, never in the sandbox), the
#: parent's pid, and a marker that the session finished normally.
#:
#: Whole files are written to a temporary name in the same directory and
#: renamed over the real one, so a reader never sees half a file, also when
#: the writer is killed in the middle (several cases SIGKILL the inner
#: pytest).  A report line goes out in one write(2) on an O_APPEND fd.
INNER_CONFTEST = '''
import json, os

def _out(name):
    return os.path.join(os.environ["CONTAINMENT_RESULTS"], name)

def _replace(name, text):
    tmp = _out(f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, _out(name))

def pytest_configure(config):
    # the hostile tests learn the parent's pid from the environment they inherit
    os.environ["CONTAINMENT_PARENT"] = str(os.getpid())
    _replace("parent.pid", str(os.getpid()))

def _sections(report):
    # each section's head only: a test that prints 100 MiB must not make a 100 MiB line
    try:
        return [[str(title), str(content)[:65536]] for title, content in report.sections]
    except Exception as e:  # a report whose sections are not (title, text) pairs
        return [["<unreadable sections>", repr(e)[:2000]]]

def pytest_runtest_logreport(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    line = json.dumps({
        "name": str(report.nodeid).split("::")[-1], "nodeid": str(report.nodeid), "when": report.when,
        "outcome": report.outcome,
        "status": getattr(report, "isolate_status", None), "wasxfail": hasattr(report, "wasxfail"),
        "message": getattr(crash, "message", None) if crash is not None else (
            str(report.longrepr)[-2000:] if report.longrepr else None),
        "longrepr": str(report.longrepr)[:2000] if report.longrepr else None,
        "sections": _sections(report),
    }) + "\\n"
    fd = os.open(_out("reports.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

def _peak_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None

def pytest_collection_finish(session):
    # the parent's peak RSS before any test ran: what the tests add is measured against it
    _replace("rss-before.json", json.dumps({"peak_kib": _peak_rss_kib()}))

def pytest_sessionfinish(session, exitstatus):
    _replace("rss-after.json", json.dumps({"peak_kib": _peak_rss_kib()}))
    _replace("finished", str(int(exitstatus)))
'''

#: Imported by the hostile tests (``import hostile as h``).
HOSTILE_HELPERS = '''
"""What a hostile test needs: its targets, libc, and a place for evidence."""
import ctypes, errno, json, os, tempfile

TAG = os.environ["CONTAINMENT_TAG"]
EVIDENCE = os.environ["CONTAINMENT_EVIDENCE"]
libc = ctypes.CDLL(None, use_errno=True)


def env(name):
    return os.environ["CONTAINMENT_" + name]


def record(name, value):
    """Leave evidence for the outer test (a declared writable directory).

    Written under a unique temporary name in the same directory, then renamed
    over NAME.json: the outer test may read it while this test still runs,
    and a test killed mid-write (OOM, timeout) leaves a stray *.tmp, never
    half a JSON file."""
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=EVIDENCE)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    os.replace(tmp, os.path.join(EVIDENCE, name + ".json"))


def attempt(name, fn, *args):
    """Try one attack; record "ok" or the errno name; never raise."""
    try:
        fn(*args)
        got = "ok"
    except OSError as e:
        got = errno.errorcode.get(e.errno or 0, repr(e))
    except Exception as e:
        got = repr(e)
    record(name, got)
    return got


def tagged_alive():
    """The pids (as the sandbox sees them) of the processes that carry this
    case's tag on their command line and are running: zombies and the
    processes already gone do not count, so a leftover that failed to start
    does not pass for one that did."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if TAG.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(pid))
    return found


def check(rc):
    """Turn a libc return code into OSError."""
    if rc == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc


CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x2000000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000


def unshare(flags):
    check(libc.unshare(flags))


def setns(fd, nstype=0):
    check(libc.setns(fd, nstype))


def mount(source, target, fstype, flags=0, data=None):
    check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None))


def umount(target, flags=0):
    check(libc.umount2(target.encode(), flags))


# ---- the result channel, seen from the sandbox (test_hostile.py) ----

def frame(kind, body):
    """A frame as the runtime's channel frames it today: length (kind byte
    included, 4 bytes big-endian), kind byte, body."""
    import struct
    return struct.pack(">IB", len(body) + 1, ord(kind) if isinstance(kind, str) else kind) + body


def known_channel():
    """The result channel's write end, where the runtime itself keeps it."""
    try:
        from isolate_runtime import channel
    except Exception:
        return None
    fd = getattr(channel, "_write_fd", None)
    return fd if isinstance(fd, int) and fd >= 0 else None


def terminal_pipes(request):
    """What fds 1 and 2 of the inner pytest lead to (pytest's capture keeps the
    originals aside): the outer test reads those pipes, not pytest, so a flood
    written there fills the outer test, not the process under test."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    multi = getattr(capture, "_global_capturing", None)
    fds = {1, 2} | {getattr(getattr(multi, name, None), "targetfd_save", None) for name in ("out", "err")}
    found = set()
    for fd in fds:
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except (OSError, TypeError):
            pass
    return found


def pipe_fds(exclude=()):
    """Every pipe or socket this process holds open for writing (past 0-2),
    but those in ``exclude`` (readlink names such as "pipe:[123]"): what an
    attacker who does not know the runtime's internals would try."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (OSError, StopIteration, ValueError):
            continue
        if (target.startswith(("pipe:", "socket:")) and flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
                and target not in exclude):
            found.append(fd)
    return found


def channels():
    """Where forged frames go: the runtime's channel if it is known, else
    every pipe and socket."""
    fd = known_channel()
    return [fd] if fd is not None else pipe_fds()


def write_to(fds, data):
    """Write ``data`` whole to each fd: {fd: "ok" or the errno name}."""
    got = {}
    for fd in fds:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
            got[str(fd)] = "ok"
        except OSError as e:
            got[str(fd)] = errno.errorcode.get(e.errno or 0, repr(e))
    return got


def send(obj):
    """Through the runtime's own API for messages to the parent."""
    import isolate_runtime
    isolate_runtime.send_message(obj)


def forged_reports(request, nodeid=None, outcome="passed"):
    """Serialized reports for every phase, made as the sandbox makes its real
    ones (pytest's serialization hook), for ``nodeid`` (default: this test)."""
    import pytest
    item, config = request.node, request.config
    out = []
    for when in ("setup", "call", "teardown"):
        report = pytest.TestReport(nodeid=nodeid or item.nodeid, location=item.location,
                                   keywords={k: 1 for k in item.keywords}, outcome=outcome, longrepr=None,
                                   when=when, sections=[], duration=0.01, user_properties=[])
        out.append(config.hook.pytest_report_to_serializable(config=config, report=report))
    return out


def send_reports(name, reports):
    """Every way a report can be sent: today's ("report", dict) message,
    a JSON object message (the JSON wire format), and raw JSON frames."""
    for i, data in enumerate(reports):
        attempt(f"{name}-tuple-{i}", send, ("report", data))
    for i, data in enumerate(reports):
        body = json.dumps({"t": "report", "report": data}, default=str).encode()
        record(f"{name}-json-frame-{i}", write_to(channels(), frame("M", body)))
    for i, data in enumerate(reports):
        attempt(f"{name}-json-{i}", send, {"t": "report", "report": data})
'''

CANARY = '''

def test_zz_canary_after_the_hostile_test():
    """Runs after the hostile test: the session carried on."""
    assert 1 + 1 == 2
'''


def tagged_processes(tag: str) -> List[int]:
    """Host pids whose command line contains ``tag`` (scanning the host's /proc)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if tag.encode() in cmdline:
            found.append(int(entry))
    return found


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def process_state(pid: int) -> Optional[str]:
    """The one-letter state of a host process, ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def our_cgroup_runs(pid: int) -> List[str]:
    """pytest-isolate's per-run cgroup directories owned by ``pid``, in every hierarchy."""
    out: List[str] = []
    base = Path("/sys/fs/cgroup")
    tops = [base / "pytest-isolate"] + sorted(base.glob("*/pytest-isolate"))
    for top in tops:
        try:
            out.extend(str(d) for d in top.iterdir() if d.is_dir() and d.name.startswith(f"run-{pid}-"))
        except OSError:
            continue
    return out


@dataclass
class Inner:
    """How one inner pytest run went, read from outside."""

    argv: Sequence[str]
    ret: int
    stdout: str
    stderr: str
    seconds: float
    pid: int
    reports: List[Dict[str, Any]]
    finished: Optional[int]
    junit: Optional[ET.Element]
    stats: Optional[Dict[str, Any]] = None
    #: The parent's peak RSS (VmHWM, KiB) when collection ended and when the session did.
    rss: Dict[str, Optional[int]] = field(default_factory=dict)

    def status(self, name: str) -> str:
        """``passed``, ``failed``, ``error``, ``skipped``, ``xfailed``, or the
        isolate status word (``CRASHED``, ``TIMEOUT``, ``OOM``, ``CPU-BUDGET``)."""
        mine = [r for r in self.reports if r["name"] == name]
        if not mine:
            return "missing"
        for r in mine:
            if r["status"] and r["outcome"] == "failed":
                return str(r["status"]).upper()
        for r in mine:
            if r["wasxfail"]:
                return "xfailed" if r["outcome"] == "skipped" else "xpassed"
            if r["outcome"] == "failed":
                return "failed" if r["when"] == "call" else "error"
        if any(r["outcome"] == "skipped" for r in mine):
            return "skipped"
        return "passed"

    def message(self, name: str) -> str:
        return "\n".join(r["message"] or "" for r in self.reports if r["name"] == name and r["outcome"] == "failed")

    def sections(self, name: str) -> List[Tuple[str, str, str]]:
        """(phase, title, content) of every report section of test ``name``
        (each content cut at 64 KiB by the inner reporter)."""
        return [(r["when"], title, content) for r in self.reports if r["name"] == name
                for title, content in r.get("sections") or []]

    def peak_rss_growth_kib(self) -> Optional[int]:
        """How much the inner pytest process's peak RSS grew while its tests ran."""
        before, after = self.rss.get("before"), self.rss.get("after")
        return None if before is None or after is None else after - before

    def figures(self, name: str) -> Optional[Dict[str, Any]]:
        """The ``--isolate-json`` stats of test ``name``, if recorded."""
        for record in (self.stats or {}).get("tests", []):
            if str(record.get("nodeid", "")).split("::")[-1] == name:
                return dict(record.get("stats") or {})
        return None

    def junit_cases(self) -> Dict[str, str]:
        """junitxml testcase name -> ``passed``/``failure``/``error``/``skipped``."""
        assert self.junit is not None, "junitxml was not written"
        out: Dict[str, str] = {}
        for case in self.junit.iter("testcase"):
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            out[case.get("name", "")] = kinds[0] if kinds else "passed"
        return out

    def describe(self) -> str:
        return (f"inner run {' '.join(self.argv[3:])!r}: exit {self.ret} after {self.seconds:.1f}s\n"
                f"--- stdout (tail) ---\n{self.stdout[-6000:]}\n--- stderr (tail) ---\n{self.stderr[-3000:]}")

    def assert_healthy(self, expected: Mapping[str, str]) -> None:
        """The session ended normally: no INTERNALERROR, junitxml written,
        every test with its expected status, the canary passed."""
        assert "INTERNALERROR" not in self.stdout + self.stderr, self.describe()
        assert self.finished is not None and self.ret in (0, 1), self.describe()
        got = {name: self.status(name) for name in expected}
        assert got == dict(expected), self.describe()
        cases = self.junit_cases()
        for name, status in expected.items():
            want = {"passed": "passed", "failed": "failure", "error": "error", "skipped": "skipped",
                    "xfailed": "skipped"}.get(status, "failure")
            if status in ("CRASHED", "TIMEOUT", "OOM", "CPU-BUDGET") and not self._failed_in_call(name):
                want = "error"
            assert cases.get(name) == want, f"junitxml has {name}: {cases.get(name)}, expected {want}"
        if not SANITY:
            assert self.stats is not None, "--isolate-json was not written"
            recorded = json.dumps(self.stats)
            missing = [name for name in expected if f"::{name}" not in recorded]
            assert not missing, f"--isolate-json lacks {missing}"
        left = our_cgroup_runs(self.pid)
        assert not left, f"the inner run left its cgroups behind: {left}"

    def _failed_in_call(self, name: str) -> bool:
        return any(r["name"] == name and r["when"] == "call" and r["outcome"] == "failed" for r in self.reports)


@dataclass
class Hostile:
    """One containment case: an inner project, its targets, and cleanup."""

    root: Path
    tag: str = field(default_factory=lambda: f"ctn{os.getpid()}x{secrets.token_hex(4)}")
    env: Dict[str, str] = field(default_factory=dict)
    #: Run the inner pytest (and the sleepers) as this uid instead of ours
    #: (``root`` must then be reachable by it; :func:`unprivileged_case`).
    user: Optional[int] = None
    _cleanups: List[Callable[[], None]] = field(default_factory=list)
    _sleepers: List[subprocess.Popen] = field(default_factory=list)  # type: ignore[type-arg]

    def __post_init__(self) -> None:
        self.project = self.root / "proj"
        self.evidence_dir = self.root / "evidence"
        self.results = self.root / "results"
        for d in (self.project, self.evidence_dir, self.results):
            d.mkdir(parents=True)
        (self.project / "conftest.py").write_text(INNER_CONFTEST)
        (self.project / "hostile.py").write_text(HOSTILE_HELPERS)
        self.env.update(CONTAINMENT_TAG=self.tag, CONTAINMENT_EVIDENCE=str(self.evidence_dir),
                        CONTAINMENT_RESULTS=str(self.results))

    # ------------------------------------------------------------ targets

    def host_path(self, directory: Path, suffix: str = "", content: Optional[str] = None) -> Path:
        """A unique path on the host (created when ``content`` is given),
        removed after the case whatever happened."""
        path = directory / f".containment-{self.tag}{suffix}"

        def remove() -> None:
            if path.is_dir() and not path.is_symlink():
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

        self._cleanups.append(remove)
        if content is not None:
            path.write_text(content)
        return path

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def sleeper(self, secret: str = "") -> subprocess.Popen:  # type: ignore[type-arg]
        """A sacrificial host process (its own session) the hostile test will
        attack; it runs as the inner pytest's user (so only the sandbox stands
        between the two)."""
        env = dict(os.environ, CONTAINMENT_SECRET=secret or f"secret-{self.tag}")
        proc = subprocess.Popen(self._as_user([sys.executable, "-c", "import time; time.sleep(600)",
                                               f"sleeper-{self.tag}"]),
                                env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        self._sleepers.append(proc)
        assert wait_until(lambda: f"sleeper-{self.tag}".encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes(),
                          10), "the sleeper did not start"
        return proc

    def fresh_results(self) -> None:
        """Forget the last inner run's results (before running the project again)."""
        for path in self.results.iterdir():
            path.unlink()

    def evidence(self, name: str) -> Any:
        path = self.evidence_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def all_evidence(self) -> Dict[str, Any]:
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.evidence_dir.glob("*.json"))}

    # ------------------------------------------------------------ running

    def write(self, source: str, name: str = "test_hostile.py", canary: bool = True) -> Path:
        path = self.project / name
        path.write_text(textwrap.dedent(source) + (CANARY if canary else ""))
        return path

    def ini(self, extra: str = "") -> None:
        (self.project / "pytest.ini").write_text(
            "[pytest]\n"
            f"isolate_writable =\n    {self.evidence_dir}\n"
            "junit_family = xunit2\n" + textwrap.dedent(extra))

    def argv(self, *args: str, isolate: bool = True, cache: bool = False, basetemp: bool = True) -> List[str]:
        """``cache``: keep pytest's cacheprovider; ``basetemp=False``: pytest's
        default basetemp (under ``$PYTEST_DEBUG_TEMPROOT``) and its retention."""
        if not (self.project / "pytest.ini").exists():
            self.ini()
        mode = "--isolate-all" if isolate and not SANITY else "--no-isolate"
        return self._as_user([
            sys.executable, "-m", "pytest", mode, "--isolate-policy=strict",
            *(() if cache else ("-p", "no:cacheprovider")),
            f"--junitxml={self.results / 'junit.xml'}", f"--isolate-json={self.results / 'stats.json'}",
            *((f"--basetemp={self.root / 'basetemp'}",) if basetemp else ()),
            "-rA", "-v", *args])

    def _as_user(self, argv: List[str]) -> List[str]:
        if self.user is None:
            return argv
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups", "--inh-caps=-all",
                *argv]

    def hand_over(self) -> None:
        """Give everything under ``root`` to :attr:`user` (files the case wrote
        since the last run included)."""
        if self.user is None:
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, self.user, self.user)

    def base_env(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_ISOLATE_", "PYTEST_ADDOPTS"))}
        if self.user is not None:
            home = self.root / "home"
            home.mkdir(exist_ok=True)
            env["HOME"] = str(home)
        env.update(self.env)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(extra or {})
        return env

    def start(self, *args: str, env: Optional[Mapping[str, str]] = None,
              isolate: bool = True, cache: bool = False, basetemp: bool = True) -> "subprocess.Popen[bytes]":
        argv = self.argv(*args, isolate=isolate, cache=cache, basetemp=basetemp)
        self.hand_over()
        proc = subprocess.Popen(argv, cwd=self.project, env=self.base_env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        self._cleanups.append(lambda: _kill_session(proc, close_pipes=True))
        return proc

    def run(self, *args: str, env: Optional[Mapping[str, str]] = None, timeout: float = 60,
            isolate: bool = True, cache: bool = False, basetemp: bool = True) -> Inner:
        t0 = time.monotonic()
        proc = self.start(*args, env=env, isolate=isolate, cache=cache, basetemp=basetemp)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            out, err = proc.communicate(timeout=10)
            pytest.fail(f"the inner run hung for more than {timeout}s (killed)\n"
                        f"{out.decode(errors='replace')[-4000:]}\n{err.decode(errors='replace')[-2000:]}")
        return self.collect(proc, out, err, time.monotonic() - t0)

    def collect(self, proc: "subprocess.Popen[bytes]", out: bytes, err: bytes, seconds: float) -> Inner:
        reports = []
        path = self.results / "reports.jsonl"
        if path.exists():
            reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        finished_file = self.results / "finished"
        junit_file = self.results / "junit.xml"
        junit = None
        if junit_file.exists():
            junit = ET.parse(junit_file).getroot()
        stats_file = self.results / "stats.json"
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
        rss: Dict[str, Optional[int]] = {}
        for key in ("before", "after"):
            rss_file = self.results / f"rss-{key}.json"
            rss[key] = json.loads(rss_file.read_text())["peak_kib"] if rss_file.exists() else None
        return Inner(argv=proc.args, ret=proc.returncode, stdout=out.decode(errors="replace"),  # type: ignore[arg-type]
                     stderr=err.decode(errors="replace"), seconds=seconds, pid=proc.pid, reports=reports,
                     finished=int(finished_file.read_text()) if finished_file.exists() else None, junit=junit,
                     stats=stats, rss=rss)

    # ------------------------------------------------------------ cleanup

    def close(self) -> None:
        for proc in self._sleepers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        # Only processes of this case carry its tag.
        for pid in tagged_processes(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:  # cleanup is best effort; the check already ran
                pass


def _kill_session(proc: "subprocess.Popen[Any]", close_pipes: bool = False) -> None:
    """Kill an inner run and everything in its session (we started it with its own).

    ``close_pipes`` at cleanup: a case that failed before ``communicate()``
    (or whose ``communicate()`` timed out) leaves the stdout/stderr pipes
    open, and the Popen, kept alive by the failure's traceback, is then
    collected during a later test as "ResourceWarning: unclosed file", an
    error under ``filterwarnings = error``, blamed on that later test."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process always goes
            pass
    if close_pipes:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def no_tagged_processes(tag: str, seconds: float = 3.0) -> List[int]:
    """Wait (bounded) for processes carrying ``tag`` to disappear; return the survivors."""
    wait_until(lambda: not tagged_processes(tag), seconds)
    return tagged_processes(tag)


def mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return "".join(sorted(line.split(" ", 4)[4] for line in f))


@dataclass
class Snapshot:
    """Host state a case must not change, read before and after."""

    values: Dict[str, str]

    @classmethod
    def take(cls, readers: Mapping[str, Callable[[], str]]) -> "Snapshot":
        return cls({name: read() for name, read in readers.items()})

    def changed(self, readers: Mapping[str, Callable[[], str]]) -> Dict[str, str]:
        now = {name: read() for name, read in readers.items()}
        return {k: f"{self.values[k]!r} -> {now[k]!r}" for k in now if now[k] != self.values[k]}


def read_file(path: str) -> Callable[[], str]:
    def read() -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError as e:
            return f"<{e.strerror}>"

    return read


def run_cmd(*argv: str) -> Callable[[], str]:
    def read() -> str:
        got = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        # ip's per-interface counters/flags that change on their own are not state we own
        return re.sub(r"\s+", " ", got.stdout)

    return read


def sessions_fixture(tmp_path: Path) -> Iterator[Hostile]:
    case = Hostile(tmp_path)
    try:
        yield case
    finally:
        case.close()


#: The ordinary user the unprivileged variants run the inner pytest as.
NOBODY = 65534


def nobody_can_run_pytest() -> str:
    """Why uid NOBODY cannot run this interpreter with pytest and the plugin
    ("" when it can): root's home or a tox work directory is often closed."""
    check = "import isolate_runtime, pytest, pytest_isolate"
    try:
        got = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                              sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                             cwd="/")
    except FileNotFoundError:
        return "setpriv (util-linux) is not installed"
    return "" if got.returncode == 0 else f"uid {NOBODY} cannot use {sys.executable}: {got.stderr[-300:]}"


def unprivileged_fixture() -> Iterator[Hostile]:
    """A case whose inner pytest runs as uid NOBODY: its root is a fresh
    directory under /tmp (pytest's own basetemp is 0700 root), handed over to
    that user before each run, removed afterwards."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="isolate-hostile-"))
    os.chmod(root, 0o755)
    case = Hostile(root / "case", user=NOBODY)
    try:
        yield case
    finally:
        case.close()
        shutil.rmtree(root, ignore_errors=True)
