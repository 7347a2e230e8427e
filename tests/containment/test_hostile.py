"""The trust boundary between the sandbox and pytest.

A test may be written to break out or to lie.  Each case here is a test that
attacks the boundary itself - the channel its reports travel on, the
processes that watch it, the paths pytest touches after it - and the verdict
comes from outside: the host's processes and files, and what the inner
pytest process reported and how its session ended.

What must hold, whatever the sandbox sends or does:

- nothing it sends runs code in pytest or ends the session: an invalid
  message makes that one test CRASHED (``isolate_status == "crashed"``), the
  session goes on, exit code 1, never 3 or INTERNALERROR;
- verdicts, figures, pids and the list of discarded writes come from what
  the payload cannot write (the kernel, the cgroup, the parent's own view);
- no process outside the sandbox shares memory with it or can be made to
  signal for it; a root run is not the host's root;
- pytest follows no link the sandbox planted in a writable path.

Most classes run twice: as the user running this suite, and (when that is
root) as uid 65534 with the inner pytest unprivileged.  The sections follow
the ways a hostile test could cross it:

1. code from the sandbox runs in pytest (pickles)
4. one unexpected message or frame ends the session
2. a process outside the sandbox shares its memory, or signals for it
3. control data (pids, exit status, reports, discarded writes, figures)
   taken from the payload
5. the parent's memory filled by the sandbox (frames, messages, stack dump)
6. a root run hands the sandbox the host's root
7. pytest follows links (and FIFOs) planted in the cache and basetemp
8. traces: output after the test, the host's cgroup hierarchy
9. coverage data naming files pytest's coverage report would open (FIFOs,
   devices) or tracers it cannot resolve
10. the list of discarded writes costing pytest memory per file written
11. descriptors pytest holds to others (xdist's controller, the sandboxes
    running beside it) and report attributes pytest reads as its own

Under ``CONTAINMENT_SANITY=1`` (``--no-isolate``) every case fails except
the forged reports for other tests (there is no channel to forge on) and
the root case (host-global, skipped).
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import stat
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from ..conftest import skip_unless
from .harness import (
    Hostile,
    Inner,
    nobody_can_run_pytest,
    sessions_fixture,
    unprivileged_fixture,
    wait_until,
)

OK = "test_zz_canary_after_the_hostile_test"
#: The teardown report section listing writes outside the writable paths.
DISCARDED_TITLE = "pytest-isolate: writes discarded at sandbox teardown"

libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(params=["self", "nobody"])
def who(request: pytest.FixtureRequest) -> str:
    """Whom the inner pytest runs as: the user running this suite, or (when
    that is root) uid 65534."""
    if request.param == "nobody":
        if os.geteuid() != 0:
            pytest.skip("already unprivileged: the 'self' variant is the unprivileged run")
        why = nobody_can_run_pytest()
        skip_unless(not why, why)
    return str(request.param)


@pytest.fixture
def case(who: str, tmp_path: Path, full_sandbox: None) -> Iterator[Hostile]:
    """A containment case whose inner pytest runs as ``who``."""
    if who == "nobody":
        yield from unprivileged_fixture()
    else:
        yield from sessions_fixture(tmp_path)


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root run can hand the sandbox the host's root")


def session_went_on(inner: Inner, canary: str = OK, codes: Tuple[int, ...] = (0, 1)) -> None:
    """Whatever the hostile test did, the session finished normally."""
    out = inner.stdout + inner.stderr
    assert "INTERNALERROR" not in out, f"INTERNALERROR (exit code {inner.ret})\n{inner.describe()}"
    assert inner.ret in codes, f"exit code {inner.ret}\n{inner.describe()}"
    assert inner.finished is not None, f"the session did not finish\n{inner.describe()}"
    assert inner.status(canary) == "passed", f"the canary after it: {inner.status(canary)}\n{inner.describe()}"


def crashed(inner: Inner, name: str) -> None:
    """``name`` was reported CRASHED (and not passed in any phase)."""
    assert inner.status(name) == "CRASHED", f"{name}: {inner.status(name)}\n{inner.describe()}"
    passed_call = [r for r in inner.reports if r["name"] == name and r["when"] == "call" and r["outcome"] == "passed"]
    assert not passed_call, f"{name} was shown PASSED\n{inner.describe()}"
    longreprs = [r.get("longrepr") or "" for r in inner.reports if r["name"] == name and r["status"] == "crashed"]
    assert any(text.startswith("CRASHED:") for text in longreprs), longreprs


def verbose_word(inner: Inner, name: str) -> List[str]:
    """The words pytest -v printed after ``name`` ("PASSED", "FAILED", "CRASHED", ...)."""
    return re.findall(rf"::{re.escape(name)} ([A-Z-]+)", inner.stdout)


# ====================================================================== 1
# Code runs in the pytest process: anything from the sandbox must be data.

EVIL_PICKLE = """
    import os, pickle
    import hostile as h

    MARKER = h.env("MARKER")


    class Evil:
        # unpickling it anywhere writes the marker (with the pid that did it)
        # and yields a harmless message, so a session that runs it goes on
        def __reduce__(self):
            return (eval, ("(open(%r, 'w').write(str(__import__('os').getpid())), ('noop',))[1]" % MARKER,))


    def test_write_the_marker_directly():
        # the marker is outside every writable path: only the sandbox stops this
        h.attempt("direct", lambda: open(MARKER, "w").write("direct"))
"""

EVIL_VIA_API = EVIL_PICKLE + """

    def test_evil_message_through_the_api():
        h.attempt("send-message", h.send, Evil())
        h.attempt("send-message-in-tuple", h.send, ("report", Evil()))
"""

EVIL_VIA_FRAMES = EVIL_PICKLE + """

    def test_evil_frames_on_every_pipe():
        body = pickle.dumps(Evil(), protocol=2)
        targets = sorted(set(h.pipe_fds()) | set(filter(None, [h.known_channel()])))
        h.record("targets", targets)
        for kind in KINDS:
            h.record("frame-" + kind, h.write_to(targets, h.frame(kind, body)))
"""


@pytest.mark.parametrize("route", ["api", "frames-M", "frames-every-kind"])
def test_pickle_from_the_sandbox_runs_no_code_in_pytest(case: Hostile, route: str) -> None:
    marker = case.root / f"marker-{case.tag}"
    if route == "api":
        case.write(EVIL_VIA_API)
    else:
        kinds = "M" if route == "frames-M" else "MRESPFLWpX"
        case.write(f"KINDS = {kinds!r}\n" + textwrap.dedent(EVIL_VIA_FRAMES))
    inner = case.run(env={"CONTAINMENT_MARKER": str(marker)})
    assert not marker.exists(), (f"code from the sandbox ran outside it (pid {marker.read_text()}; "
                                 f"the inner pytest was {inner.pid})\n{inner.describe()}")
    session_went_on(inner)


# ====================================================================== 4
# One unexpected message or frame ends the session.

#: variant -> the hostile test's body.  ``both(obj)`` sends obj through the
#: runtime's API and, in case that refuses it, as a JSON frame of its own;
#: ``raw`` writes one frame onto the channel.
UNEXPECTED: Dict[str, str] = {
    "int-message": "both(42)",
    "none-message": "both(None)",
    "tuple-missing-fields": "both(('report',))",
    "report-not-a-dict": "both(('report', 'not a report'))",
    "report-of-wrong-shape": "both(('report', {'nodeid': 7, 'when': 'nonsense'}))",
    "warning-missing-fields": "both(('warning', 'text'))",
    "json-message-of-wrong-type": "both({'t': 42})",
    "json-message-of-unknown-type": "both({'t': 'no-such-message', 'x': 1})",
    "json-report-of-wrong-shape": "both({'t': 'report', 'report': {'nodeid': 7}})",
    "status-frame-of-2-bytes": "raw('W', b'\\x00\\x00')",
    "unknown-kind-byte": "raw('Z', pickle.dumps(('noop',)))",
    "pickled-int-for-the-written-list": "raw('F', pickle.dumps(5))",
    "pickled-int-for-the-spawned-dict": "raw('P', pickle.dumps(5))",
    "length-1GiB-then-eof": "raw_bytes(struct.pack('>IB', 1 << 30, ord('M')))",
    "json-invalid-utf8": "raw('M', b'{\"t\": \"report\", \"report\": \"\\xff\\xfe\\xfd\"}')",
    "json-invalid": "raw('M', b'{\"t\": \"report\", \"report\": {\"nodeid\": ')",
    "json-nested-100000-deep": "raw('M', b'{\"t\": \"report\", \"report\": ' + b'[' * 100000 + b']' * 100000 + b'}')",
    "json-number-of-100000-digits": "raw('M', b'{\"t\": \"report\", \"report\": ' + b'7' * 100000 + b'}')",
    # what counting the values of a frame costs must not grow with its square
    # (escaped quotes, no string ever closed: pytest scanned to the end from each)
    "json-escaped-quotes-never-closed": "raw('M', b',' * 200001 + b'\"\\\\' * 200000)",
    # a lone surrogate deep down: the decoder takes the nesting, a second pass over it must too
    "json-surrogate-600-deep": ("raw('M', b'{\"t\": \"warning\", \"line\": ' + b'[' * 600 + b'\"\\\\ud800\"' "
                                "+ b']' * 600 + b'}')"),
}

UNEXPECTED_MODULE = """
import json, os, pickle, struct
import hostile as h


def raw(kind, body):
    h.record("raw", h.write_to(h.channels(), h.frame(kind, body)))


def raw_bytes(data):
    h.record("raw", h.write_to(h.channels(), data))


def both(obj):
    h.attempt("api", h.send, obj)
    raw("M", json.dumps(obj).encode())


def test_unexpected():
    h.attempt("sent", lambda: {body})
"""


@pytest.mark.parametrize("variant", list(UNEXPECTED))
def test_one_unexpected_message_crashes_only_its_test(case: Hostile, variant: str) -> None:
    case.write(UNEXPECTED_MODULE.format(body=UNEXPECTED[variant]))
    inner = case.run(timeout=90)
    session_went_on(inner)
    crashed(inner, "test_unexpected")
    assert inner.ret == 1, inner.describe()


# ====================================================================== 2
# No process outside the sandbox shares memory with it, or signals for it.

SHARED = """
    import ctypes, errno, os, signal, struct, time
    import hostile as h

    SENTINEL = int(h.env("SENTINEL"))
    KCMP_VM = 1


    def elf_symbols(path):
        \"\"\"name -> address relative to the load base, from an ELF64 file's symbol tables
        (static variables included, which dlsym does not find).\"\"\"
        with open(path, "rb") as f:
            data = f.read()
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        found = {}
        for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
            if kind not in (2, 11) or not entsize:  # SHT_SYMTAB, SHT_DYNSYM
                continue
            strings = sections[link][4]
            for j in range(size // entsize):
                st_name, _i, _o, _s, value, _size = struct.unpack_from("<IBBHQQ", data, offset + j * entsize)
                start = strings + st_name
                found[data[start:data.index(b"\\0", start)].decode(errors="replace")] = value
        return found


    def load_base(path):
        real = os.path.realpath(path)
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5] == real and int(parts[2], 16) == 0:
                    return int(parts[0].split("-")[0], 16)
        raise LookupError(real)


    def test_a_who_shares_my_memory():
        # a name the outer test finds this process by, on the host
        h.libc.prctl(15, ("hx" + h.TAG[-8:]).encode(), 0, 0, 0)  # PR_SET_NAME
        seen = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            got = {}
            try:
                with open(f"/proc/{pid}/status") as f:
                    got["nspid"] = next((l.split()[1:] for l in f if l.startswith("NSpid:")), None)
            except OSError as e:
                got["nspid"] = errno.errorcode.get(e.errno, "?")
            try:
                os.close(os.open(f"/proc/{pid}/mem", os.O_RDWR))
                got["mem-writable"] = True
            except OSError as e:
                got["mem-writable"] = errno.errorcode.get(e.errno, "?")
            got["kcmp-vm"] = h.libc.syscall(312, os.getpid(), pid, KCMP_VM, 0, 0)
            seen[pid] = got
        h.record("inside-view", seen)
        h.record("ready", os.getpid())
        # the outer test looks at the host now
        end = time.monotonic() + 30
        while not os.path.exists(os.path.join(h.EVIDENCE, "checked")) and time.monotonic() < end:
            time.sleep(0.05)


    def in_a_fresh_pid_namespace():
        # ptrace on everything seen and kill(-1) are only done where this holds:
        # without a PID namespace of its own they would hit the whole host
        return os.environ.get("CONTAINMENT_SANITY") != "1" and os.getpid() < 50


    def test_b_signal_and_trace_the_sentinel_and_everyone_seen():
        h.attempt("kill-sentinel", os.kill, SENTINEL, signal.SIGKILL)
        h.attempt("kill-sentinel-group", os.kill, -SENTINEL, signal.SIGKILL)
        traced = {}
        for entry in os.listdir("/proc") if in_a_fresh_pid_namespace() else ():
            if entry.isdigit() and int(entry) != os.getpid():
                pid = int(entry)
                if h.libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
                    traced[pid] = "attached"
                    try:
                        os.waitpid(pid, 0x40000000)  # __WALL
                    except OSError:
                        pass
                    h.libc.ptrace(17, pid, 0, 0)  # PTRACE_DETACH
                else:
                    traced[pid] = errno.errorcode.get(ctypes.get_errno(), "?")
        h.record("ptrace", traced)
        # kill(-1): everything this process may signal
        if in_a_fresh_pid_namespace():
            child = os.fork()
            if child == 0:
                try:
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(child, 0)


    def test_c_overwrite_the_executors_state():
        # The C executor's statics (the descriptors its setup processes act
        # on): were this memory shared with a host-side process, it would act
        # on SENTINEL instead (test_a's kcmp check is what decides).
        try:
            import isolate_runtime._fastspawn as fastspawn
        except ImportError:
            h.record("executor", "absent")
            return
        symbols = elf_symbols(fastspawn.__file__)
        base = load_base(fastspawn.__file__)
        done = {}
        for name in ("caller_pidfd", "death_w", "sync_w", "ctl", "root_fd", "upper_fd"):
            if name in symbols:
                ctypes.c_int.from_address(base + symbols[name]).value = SENTINEL
                done[name] = hex(base + symbols[name])
        h.record("overwritten", done)
"""

KCMP_VM = 1


def _pid_ns(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _comm(pid: int) -> Optional[str]:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def sharing_memory_with(pid: int) -> Dict[int, str]:
    """Host processes outside ``pid``'s PID namespace that share its address
    space (kcmp KCMP_VM, as the kernel sees it), with their command names."""
    inside = _pid_ns(pid)
    found: Dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        other = int(entry)
        if other == pid or _pid_ns(other) in (None, inside):
            continue
        if libc.syscall(312, pid, other, KCMP_VM, 0, 0) == 0:
            found[other] = _comm(other) or "?"
    return found


def test_no_host_process_shares_memory_with_or_signals_for_the_sandbox(case: Hostile) -> None:
    sentinel = case.sleeper()
    case.write(SHARED)
    started = time.monotonic()
    proc = case.start(env={"CONTAINMENT_SENTINEL": str(sentinel.pid)})
    try:
        assert wait_until(lambda: case.evidence("ready") is not None, 30), "the hostile test never started"
        name = "hx" + case.tag[-8:]
        payload = [int(e) for e in os.listdir("/proc") if e.isdigit() and _comm(int(e)) == name]
        assert payload, f"no process named {name} on the host"
        sandboxed = _pid_ns(payload[0]) != _pid_ns(os.getpid())
        shared = sharing_memory_with(payload[0])
    finally:
        (case.evidence_dir / "checked").write_text("go")
    out, err = proc.communicate(timeout=90)
    inner = case.collect(proc, out, err, time.monotonic() - started)
    wait_until(lambda: sentinel.poll() is not None, 1.0)
    problems = []
    if sentinel.poll() is not None:
        problems.append(f"the host's sentinel {sentinel.pid} was killed (status {sentinel.poll()})")
    if not sandboxed:
        problems.append("the hostile test ran in the host's PID namespace")
    if shared:
        problems.append(f"host processes outside the sandbox's PID namespace share the test's memory: {shared}")
    if case.evidence("executor") != "absent" and not case.evidence("overwritten"):
        problems.append("none of the executor's statics was found to overwrite (renamed?)")
    assert not problems, f"{'; '.join(problems)}\nevidence {case.all_evidence()}\n{inner.describe()}"
    session_went_on(inner)


# ====================================================================== 3
# Control data is never taken from the payload.

FORGED_PIDS = """
    import os, pickle, signal, struct, time, warnings
    import pytest
    import hostile as h

    A, B = int(h.env("SENTINEL_A")), int(h.env("SENTINEL_B"))


    @pytest.mark.isolated(timeout=2)
    def test_forge_the_sandbox_pids_then_hang(record_property, record_testsuite_property):
        # without a PID namespace of its own this reaches the host directly
        h.attempt("kill-a-directly", os.kill, A, signal.SIGKILL)
        if HOW == "frames":
            # the frame kinds that once carried the sandbox's pids
            h.record("p-frame", h.write_to(h.channels(), h.frame("p", struct.pack(">ii", A, B))))
            h.record("P-frame", h.write_to(h.channels(), h.frame("P", pickle.dumps({"init": A, "payload": B}))))
        else:
            # the pids in messages pytest's process accepts (a message of a
            # type it does not know makes the test CRASHED at once), the test
            # going on (and its timeout coming) after them
            for key in ("pid", "pids", "init", "payload", "host_pids"):
                record_property(key, [A, B])
                record_testsuite_property(key, f"{A} {B}")
            warnings.warn(f"pids {A} {B}")
            h.record("accepted-sent", True)
        time.sleep(8)
"""


@pytest.mark.parametrize("how", ["frames", "accepted-messages"])
def test_pids_the_sandbox_names_are_never_signalled(case: Hostile, how: str) -> None:
    a, b = case.sleeper(), case.sleeper()
    case.write(f"HOW = {how!r}\n" + textwrap.dedent(FORGED_PIDS))
    inner = case.run(env={"CONTAINMENT_SENTINEL_A": str(a.pid), "CONTAINMENT_SENTINEL_B": str(b.pid)})
    wait_until(lambda: a.poll() is not None or b.poll() is not None, 1.0)
    dead = {p.pid: p.poll() for p in (a, b) if p.poll() is not None}
    assert not dead, f"host processes named by the sandbox were signalled: {dead}\n{inner.describe()}"
    session_went_on(inner)
    # frames of no known kind end the test at once; messages of known kinds
    # with pids in them are taken as the data they are, and the timeout ends it
    want = "CRASHED" if how == "frames" else "TIMEOUT"
    assert inner.status("test_forge_the_sandbox_pids_then_hang") == want, inner.describe()
    if how != "frames":
        assert case.evidence("accepted-sent") is True, case.all_evidence()


FORGED_STATUS = """
    import struct, sys, time
    import pytest
    import hostile as h


    @pytest.mark.isolated(timeout=2)
    def test_forge_an_exit_status_then_burn_cpu(request):
        if FORGE_REPORTS:
            h.send_reports("pass", h.forged_reports(request)[1:])
            h.record("R-frame", h.write_to(h.channels(), h.frame("R", __import__("pickle").dumps({"done": True}))))
        if FORGE_STATUS:
            h.record("W-frame", h.write_to(h.channels(), h.frame("W", struct.pack(">i", 0))))
        end = time.monotonic() + 8
        next_line = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= next_line:
                print("burning-" + h.TAG, flush=True)
                print("burning-" + h.TAG, file=sys.stderr, flush=True)
                next_line = time.monotonic() + 0.2


    def test_next_one():
        time.sleep(1.5)
        print("the next test's own line")
"""


# "nothing-forged" is the control: the same test without a lie, which these
# checks must (and today do) accept.
@pytest.mark.parametrize("forge", ["status", "status-and-passing-reports", "nothing-forged"])
def test_a_forged_exit_status_ends_no_watch(case: Hostile, who: str, forge: str) -> None:
    case.write(f"FORGE_STATUS = {forge != 'nothing-forged'}\nFORGE_REPORTS = {forge.endswith('reports')}\n"
               + textwrap.dedent(FORGED_STATUS))
    inner = case.run(timeout=90)
    name = "test_forge_an_exit_status_then_burn_cpu"
    problems = []
    # A forged frame either is not understood (the sandbox is killed at once:
    # CRASHED, "invalid message") or ends nothing (the timeout does).
    rejected = inner.status(name) == "CRASHED" and "invalid message" in (inner.message(name) or "")
    if not (inner.status(name) == "TIMEOUT" or (rejected and forge != "nothing-forged")) \
            or "PASSED" in verbose_word(inner, name):
        problems.append(f"{name}: {inner.status(name)}, shown {verbose_word(inner, name)}")
    leaked = [(when, title) for when, title, content in inner.sections("test_next_one") if case.tag in content]
    if leaked:
        problems.append(f"the burning test's lines are in the next test's output: {leaked}")
    figures = inner.figures(name) or {}
    if who == "self" and _have_cgroups() and not rejected:  # (without cgroups: the runtime's best effort)
        user, system = figures.get("cpu_user_seconds"), figures.get("cpu_system_seconds")
        if not str(figures.get("cpu_user_seconds_source")).startswith("cgroup"):
            problems.append(f"its CPU figure does not come from its cgroup: {figures}")
        elif (user or 0) + (system or 0) < 0.25:  # (2 s of a CPU, on a busy machine too)
            problems.append(f"it burnt a CPU for its whole 2 s timeout, its cgroup figures say {user} s user, "
                            f"{system} s system")
    assert not problems, "\n".join(problems) + "\n" + inner.describe()
    session_went_on(inner)


def _have_cgroups() -> bool:
    from isolate_runtime.cgroups import probe_cgroups

    return bool(probe_cgroups().available)


FORGED_PASSES = """
    import os
    import hostile as h


    def test_fails_but_forges_passes_in_todays_format(request):
        for i, data in enumerate(h.forged_reports(request)):
            h.attempt(f"tuple-{i}", h.send, ("report", data))
        os._exit(3)


    def test_fails_but_forges_passes_as_json(request):
        forged = h.forged_reports(request)
        for i, data in enumerate(forged):
            body = h.json.dumps({"t": "report", "report": data}, default=str).encode()
            h.record(f"json-frame-{i}", h.write_to(h.channels(), h.frame("M", body)))
        for i, data in enumerate(forged):
            h.attempt(f"json-{i}", h.send, {"t": "report", "report": data})
        os._exit(3)
"""


def test_passing_reports_from_a_test_that_exits_3_are_not_believed(case: Hostile) -> None:
    case.write(FORGED_PASSES)
    inner = case.run()
    for name in ("test_fails_but_forges_passes_in_todays_format", "test_fails_but_forges_passes_as_json"):
        assert "PASSED" not in verbose_word(inner, name), f"{name} was shown PASSED\n{inner.describe()}"
        crashed(inner, name)
    session_went_on(inner)
    for name in ("test_fails_but_forges_passes_in_todays_format", "test_fails_but_forges_passes_as_json"):
        assert inner.junit_cases().get(name) in ("failure", "error"), inner.junit_cases()
    assert inner.ret == 1


OTHER_NODEIDS = """
    import hostile as h


    def test_a_victim_before():
        assert False, "the victim before fails"


    def test_b_reports_for_other_tests(request):
        base = request.node.nodeid.rsplit("::", 1)[0]
        for target in ("test_a_victim_before", "test_c_victim_after", "test_does_not_exist"):
            for i, data in enumerate(h.forged_reports(request, nodeid=f"{base}::{target}")):
                if FORM == "today":
                    h.attempt(f"{target}-{i}", h.send, ("report", data))
                else:
                    body = h.json.dumps({"t": "report", "report": data}, default=str).encode()
                    h.record(f"{target}-frame-{i}", h.write_to(h.channels(), h.frame("M", body)))
                    h.attempt(f"{target}-{i}", h.send, {"t": "report", "report": data})


    def test_c_victim_after():
        assert False, "the victim after fails"
"""

_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


def _counts(inner: Inner) -> Dict[str, int]:
    lines = [line for line in inner.stdout.splitlines() if line.startswith("=") and " in " in line]
    assert lines, inner.describe()
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in _COUNT.findall(lines[-1])}


@pytest.mark.parametrize("form", ["today", "json"])
def test_reports_for_other_tests_change_no_count(case: Hostile, form: str) -> None:
    case.write(f"FORM = {form!r}\n" + textwrap.dedent(OTHER_NODEIDS))
    plain = case.run(isolate=False)
    case.fresh_results()
    inner = case.run()
    problems = []
    names, plain_names = {r["nodeid"] for r in inner.reports}, {r["nodeid"] for r in plain.reports}
    if names != plain_names:
        problems.append(f"reports for {sorted(names)}, plain pytest has {sorted(plain_names)}")
    for victim in ("test_a_victim_before", "test_c_victim_after"):
        if inner.status(victim) != "failed":
            problems.append(f"{victim}: {inner.status(victim)}")
    phases: Dict[Any, int] = {}
    for r in inner.reports:
        phases[(r["nodeid"], r["when"])] = phases.get((r["nodeid"], r["when"]), 0) + 1
    again = {k: n for k, n in phases.items() if n > 1}
    if again:
        problems.append(f"phases reported more than once: {again}")
    got, want = _counts(inner), _counts(plain)
    if got.get("passed", 0) > want.get("passed", 0) or (
            sum(got.values()) - got.get("error", 0) != sum(want.values()) - want.get("error", 0)):
        problems.append(f"counts {got}, plain pytest's {want}")
    progress = [int(p) for p in re.findall(r"\[\s*(\d+)%\]", inner.stdout)]
    if not progress or max(progress) > 100:
        problems.append(f"progress {progress}")
    assert not problems, "\n".join(problems) + "\n" + inner.describe()
    session_went_on(inner)


OWN_STATS = """
    def test_writes_its_own_figures(record_property):
        # the names pytest-isolate gives the figures it attaches to the teardown report
        record_property("isolate.layer.seccomp", "applied")
        record_property("isolate.warn.memory_warn", "pytest-isolate: forged warning")
        record_property("isolate.baseline.source", "forged")
        record_property("isolate.baseline.cpu_seconds", 0.0)
        record_property("isolate.cpu_user_seconds", 999.0)
        record_property("isolate.sandbox_outcome", "ok")
"""


def test_the_sandbox_cannot_write_its_own_stats_record(case: Hostile) -> None:
    case.write(OWN_STATS)
    inner = case.run()
    session_went_on(inner)
    records = [r for r in (inner.stats or {}).get("tests", []) if r["nodeid"].endswith("::test_writes_its_own_figures")]
    assert records, inner.stats
    record = records[0]
    forged = {"layer seccomp": record["layers"].get("seccomp"), "warnings": record["warnings"],
              "baseline": record["baseline"], "cpu_user_seconds": record["stats"]["cpu_user_seconds"]}
    assert ("seccomp" not in record["layers"] and not record["warnings"] and record["baseline"] is None
            and record["stats"]["cpu_user_seconds"] != 999.0), f"the test wrote its own --isolate-json record: {forged}"


DISCARDED = """
    import os, pickle
    import hostile as h


    def write(suffix):
        path = h.env("OWNED") + suffix
        h.attempt("write" + suffix, lambda: open(path, "w").write("owned"))


    def empty_list_frames():
        h.record("F", h.write_to(h.channels(), h.frame("F", pickle.dumps(()))))
        h.record("F-json", h.write_to(h.channels(), h.frame("F", b"[]")))


    def test_a_sends_an_empty_list_then_exits():
        write("-a")
        empty_list_frames()
        os._exit(0)


    def test_b_empties_the_runtimes_list():
        write("-b")
        # the runtime's code that lists the writes (its copy in the sandbox)
        import isolate_runtime.written as written
        missing = [name for name in ("listing", "receive") if not hasattr(written, name)]
        written.listing = lambda *args, **kwargs: ()
        written.receive = lambda *args, **kwargs: None
        h.record("patch", missing or "patched")
        empty_list_frames()


    def test_c_sends_a_forged_list_then_exits():
        write("-c")
        forged = (h.env("OWNED") + "-forged",)
        h.record("F", h.write_to(h.channels(), h.frame("F", pickle.dumps(forged))))
        os._exit(0)


    def test_d_sends_an_empty_list_and_returns():
        write("-d")
        empty_list_frames()
"""


def test_the_sandbox_cannot_empty_or_forge_the_discarded_writes(case: Hostile, who: str) -> None:
    # outside every writable path: /etc for root, the project (copy-on-write) for uid 65534
    base = case.host_path(Path("/etc") if who == "self" else case.project)
    for suffix in ("-a", "-b", "-c", "-d", "-forged"):
        case.host_path(base.parent, f"{suffix}")  # removed after the case (under SANITY they are real)
    case.write(DISCARDED)
    inner = case.run(env={"CONTAINMENT_OWNED": str(base)})
    session_went_on(inner)
    problems = []
    for letter in "abcd":
        name = next(n for n in ("test_a_sends_an_empty_list_then_exits", "test_b_empties_the_runtimes_list",
                                "test_c_sends_a_forged_list_then_exits", "test_d_sends_an_empty_list_and_returns")
                    if n.startswith(f"test_{letter}_"))
        listed = "\n".join(content for _when, title, content in inner.sections(name) if title == DISCARDED_TITLE)
        if case.evidence(f"write-{letter}") != "ok":
            problems.append(f"{name} could not write its file: {case.evidence(f'write-{letter}')}")
        elif f"{base}-{letter}" not in listed.splitlines():
            problems.append(f"{name}: its write {base}-{letter} is not listed (listed: {listed!r})")
        if f"{base}-forged" in listed:
            problems.append(f"{name}: a path it never wrote is listed: {listed!r}")
    if case.evidence("patch") != "patched":
        problems.append(f"test_b found nothing to patch (renamed?): {case.evidence('patch')}")
    assert not problems, "\n".join(problems) + "\n" + inner.describe()


# ====================================================================== 5
# The parent's memory is not the sandbox's to fill.

FLOOD = """
    import errno, os, select, struct, time
    import pytest
    import hostile as h

    MIB = 1 << 20


    def targets(request):
        # the runtime's channel; without knowing it, every pipe but the terminal
        # (whose reader is the outer test, not pytest)
        known = h.known_channel()
        return [known] if known is not None else h.pipe_fds(exclude=h.terminal_pipes(request))


    def write_patiently(fd, data, stall=5.0):
        \"\"\"Write through a new non-blocking description of fd's pipe; give up
        after ``stall`` s without progress (nobody reads it).\"\"\"
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
        view, last = memoryview(data), time.monotonic()
        try:
            while view:
                try:
                    view = view[os.write(own, view):]
                    last = time.monotonic()
                except BlockingIOError:
                    if time.monotonic() - last > stall:
                        return False
                    select.select([], [own], [], 0.1)
            return True
        finally:
            os.close(own)


    @pytest.mark.isolated(memory="64M")
    def test_one_frame_of_300_mib(request):
        chunk = b"\\x00" * MIB
        sent = {}
        for fd in targets(request):
            sent[fd] = write_patiently(fd, struct.pack(">IB", 300 * MIB + 1, ord("M")))
            for _ in range(300):
                if not sent[fd] or not write_patiently(fd, chunk):
                    sent[fd] = False
                    break
        h.record("sent", sent)


    @pytest.mark.isolated(memory="64M")
    def test_200000_tiny_warnings(request):
        # each a warning pytest keeps (with its report, ~1 KiB of pytest's
        # memory), each ~100 bytes of the budget if bytes were all that counted
        import json
        sent = {}
        for fd in targets(request):
            for start in range(0, 200000, 1000):
                frames = []
                for i in range(start, start + 1000):
                    body = json.dumps({"t": "warning", "message": f"w{i}", "category": ["builtins", "UserWarning"],
                                       "filename": "f.py", "lineno": i}).encode()
                    frames.append(struct.pack(">IB", len(body) + 1, ord("M")) + body)
                if not write_patiently(fd, b"".join(frames)):
                    break
            sent[fd] = start
        h.record("sent-tiny", sent)


    @pytest.mark.isolated(memory="64M")
    def test_300_messages_of_1_mib():
        text = "w" * MIB
        for i in range(300):
            if h.attempt("message", h.send, ("warning", text, "builtins", "UserWarning", "flood.py", i)) != "ok":
                break
        h.record("sent-messages", i + 1)
"""


@pytest.mark.parametrize("flood", ["test_one_frame_of_300_mib", "test_300_messages_of_1_mib",
                                   "test_200000_tiny_warnings"])
def test_the_sandbox_cannot_fill_the_parents_memory(case: Hostile, flood: str) -> None:
    case.write(FLOOD)
    inner = case.run("-k", f"{flood} or canary", "--disable-warnings", timeout=180)
    growth = inner.peak_rss_growth_kib()
    problems = []
    if growth is None or growth > 100 * 1024:
        problems.append(f"the pytest process's peak RSS grew by {growth} KiB while its tests ran")
    if inner.status(flood) != "CRASHED":
        problems.append(f"{flood}: {inner.status(flood)}")
    elif flood in ("test_one_frame_of_300_mib", "test_200000_tiny_warnings"):
        message = inner.message(flood)
        if not ("too much" in message or "limit" in message):
            problems.append(f"{flood}: the message does not say a limit was exceeded: {message!r}")
    assert not problems, "\n".join(problems) + f"\nevidence {case.all_evidence()}\n{inner.describe()}"
    session_went_on(inner)


DUMP_FLOOD = """
    import os, time
    import pytest
    import hostile as h


    @pytest.mark.isolated(timeout=1, memory="64M")
    def test_floods_the_stack_dump(request):
        # every pipe but the result channel and the terminal: today that is the
        # pipe pytest reads the stack dump from, after the timeout, for a while
        fds = [fd for fd in h.pipe_fds(exclude=h.terminal_pipes(request)) if fd != h.known_channel()]
        h.record("fds", fds)
        for fd in fds:
            if os.fork() == 0:
                chunk = b"x" * (1 << 20)
                end = time.monotonic() + 10  # bounded: without a sandbox nothing ends them
                try:
                    for _ in range(2048):
                        if time.monotonic() > end:
                            break
                        os.write(fd, chunk)
                finally:
                    os._exit(0)
        time.sleep(30)
"""


def test_the_stack_dump_is_bounded(case: Hostile, who: str) -> None:
    case.write(DUMP_FLOOD)
    inner = case.run(timeout=120)
    growth = inner.peak_rss_growth_kib()
    junit = (case.results / "junit.xml").stat().st_size if (case.results / "junit.xml").exists() else None
    problems = []
    if inner.status("test_floods_the_stack_dump") not in ("TIMEOUT", "CRASHED"):
        problems.append(f"test_floods_the_stack_dump: {inner.status('test_floods_the_stack_dump')}")
    if growth is None or growth > 100 * 1024:
        problems.append(f"the pytest process's peak RSS grew by {growth} KiB")
    # a real dump of every thread's stack is a few KiB
    if junit is None or junit > 4 << 20 or len(inner.stdout) > 4 << 20:
        problems.append(f"the report carries the flood: junitxml {junit} bytes, terminal {len(inner.stdout)} bytes")
    assert not problems, "\n".join(problems) + f"\nevidence {case.all_evidence()}\n{inner.describe()[:3000]}"
    session_went_on(inner)


# ====================================================================== 6
# A root run does not hand the sandbox the host's root.

#: host-global (not per-namespace) and harmless: the vmstat update interval
#: A harmless host-global sysctl that holds a number (the first this kernel has).
SYSCTL = next((name for name in ("vm/stat_interval", "kernel/printk_ratelimit", "vm/dirty_expire_centisecs")
               if os.path.exists(f"/proc/sys/{name}")), "kernel/printk_ratelimit")

ROOT_POWERS = """
    import os
    import pytest
    import hostile as h

    MNT_DETACH = 2
    SYSCTL = h.env("SYSCTL")


    def status():
        with open("/proc/self/status") as f:
            return {k: v.strip() for k, _, v in (line.partition(":") for line in f)
                    if k in ("Uid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp")}


    def bump(path):
        with open(path) as f:
            old = int(f.read().split()[0])
        with open(path, "w") as f:
            f.write(str(old + 1))


    def setuid_file(path):
        with open(path, "w"):
            pass
        os.chmod(path, 0o4755)


    def try_everything(p):
        h.record(p + "status", status())
        h.attempt(p + "write-proc-sys", bump, "/proc/sys/" + SYSCTL)
        h.attempt(p + "umount-proc-sys", h.umount, "/proc/sys", MNT_DETACH)
        h.attempt(p + "write-after-umount", bump, "/proc/sys/" + SYSCTL)
        os.makedirs("/mnt/freshproc", exist_ok=True)
        h.attempt(p + "mount-proc", h.mount, "proc", "/mnt/freshproc", "proc")
        h.attempt(p + "write-fresh-proc", bump, "/mnt/freshproc/sys/" + SYSCTL)
        # a setuid file in a writable pass-through is a setuid file on the host
        h.attempt(p + "setuid-file", setuid_file, os.path.join(h.EVIDENCE, p + "setuid"))
        child = os.fork()
        if child == 0:  # again from a mount namespace of its own, whose mounts it owns
            try:
                h.attempt(p + "unshare-mnt", h.unshare, h.CLONE_NEWNS)
                h.attempt(p + "ns-umount-proc-sys", h.umount, "/proc/sys", MNT_DETACH)
                h.attempt(p + "ns-write-after-umount", bump, "/proc/sys/" + SYSCTL)
                h.attempt(p + "ns-mount-proc", h.mount, "proc", "/mnt/freshproc", "proc")
                h.attempt(p + "ns-write-fresh-proc", bump, "/mnt/freshproc/sys/" + SYSCTL)
            finally:
                os._exit(0)
        os.waitpid(child, 0)


    def test_default():
        try_everything("default-")


    @pytest.mark.isolated(root=True)
    def test_root_true():
        try_everything("root-")
"""


def test_a_root_run_is_not_the_hosts_root(hostile: Hostile, as_root: None, host_global: None) -> None:
    path = Path("/proc/sys") / SYSCTL
    before = path.read_text()

    def restore() -> None:
        if path.read_text() != before:
            path.write_text(before)

    hostile.on_cleanup(restore)
    hostile.write(ROOT_POWERS)
    inner = hostile.run(env={"CONTAINMENT_SYSCTL": SYSCTL})
    evidence = hostile.all_evidence()
    problems = []
    if path.read_text() != before:
        problems.append(f"the host's {path} changed: {before.strip()} -> {path.read_text().strip()}")
    for kind in ("default", "root"):
        planted = hostile.evidence_dir / f"{kind}-setuid"
        if planted.exists() and planted.stat().st_mode & stat.S_ISUID and planted.stat().st_uid == 0:
            problems.append(f"the {kind} test made a setuid-root file on the host: {planted}")
    default = evidence.get("default-status") or {}
    if default.get("CapBnd", "").strip("0") or default.get("NoNewPrivs") != "1":
        problems.append(f"a default test keeps capabilities or may gain privileges: {default}")
    assert not problems, "\n".join(problems) + f"\nevidence {evidence}"
    session_went_on(inner)


# ====================================================================== 7
# pytest follows no link the sandbox planted in a writable path.

#: cache keys pytest and pytest-isolate read or write at session end
CACHE_KEYS = ("cache/lastfailed", "cache/nodeids", "cache/stepwise", "pytest-isolate/stats-v1")

CACHE_LINKS = """
    import os
    import hostile as h

    KEYS = {keys!r}


    def test_a_plants_links_in_the_cache(request):
        values = os.path.join(str(request.config.cache._cachedir), "v")
        for key in KEYS:
            path = os.path.join(values, *key.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.lexists(path):
                os.unlink(path)
            if FIFO and key == "cache/lastfailed":
                os.mkfifo(path)  # not a link: a reader or writer blocks until the other end opens
            else:
                os.symlink(h.env("VICTIM") + "-" + key.replace("/", "-"), path)
        # without the sandbox the victims are simply writable
        for key in KEYS:
            name = key.replace("/", "-")
            h.attempt("direct-" + name, lambda n=name: open(h.env("VICTIM") + "-" + n, "w").write("x"))
{canary}

    def test_zzz_fails_so_that_lastfailed_and_stepwise_are_written():
        assert False
"""


def _victims(directory: Path, names: List[str], mode: int = 0o644) -> Dict[Path, Any]:
    directory.mkdir(exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text(f"the victim's own content: {name}\n")
        path.chmod(mode)
    return _look(directory)


def _look(directory: Path) -> Dict[Path, Any]:
    """Everything about the files under ``directory`` that pytest must not change."""
    found: Dict[Path, Any] = {directory: ("dir", stat.S_IMODE(directory.lstat().st_mode))}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        found[path] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return found


def _changes(before: Dict[Path, Any], after: Dict[Path, Any]) -> List[str]:
    out = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None or new is None:
            out.append(f"{path}: {'appeared' if old is None else 'removed'}")
        elif old[1] != new[1]:
            out.append(f"{path}: mode {old[1]:o} -> {new[1]:o}")
        else:
            out.append(f"{path}: content {old[2][:60]!r} -> {new[2][:60]!r}")
    return out


@pytest.mark.parametrize("node", ["symlinks", "fifo"])
def test_pytest_follows_no_link_planted_in_the_cache(case: Hostile, node: str) -> None:
    from .harness import CANARY

    (case.project / ".pytest_cache").mkdir()  # a pass-through only if it exists before the run
    victim_dir = case.root / "victims"
    victim = victim_dir / "victim"
    before = _victims(victim_dir, [f"victim-{key.replace('/', '-')}" for key in CACHE_KEYS])
    source = CACHE_LINKS.format(keys=CACHE_KEYS, canary=textwrap.indent(CANARY, "    "))
    case.write(f"FIFO = {node == 'fifo'}\n" + textwrap.dedent(source), canary=False)
    inner = case.run("--sw", cache=True, env={"CONTAINMENT_VICTIM": str(victim)}, timeout=30)
    changed = _changes(before, _look(victim_dir))
    assert not changed, f"files outside the project changed through the cache: {changed}\n{inner.describe()}"
    session_went_on(inner, codes=(2,))  # --sw stops ("Interrupted: Test failed") at the failure, as planned


BASETEMP_LINKS = """
    import os
    import hostile as h


    def test_a_plants_links_in_basetemp(tmp_path):
        victim_dir, victim_file = h.env("VICTIM_DIR"), h.env("VICTIM_FILE")
        for where in (tmp_path, tmp_path.parent):  # the test's own directory, and basetemp itself
            os.symlink(victim_dir, where / ("dir-link-" + h.TAG))
            os.symlink(victim_file, where / ("file-link-" + h.TAG))
        # a directory pytest cannot empty without "fixing" permissions (when it is not root)
        trap = tmp_path / "trap"
        trap.mkdir()
        os.symlink(victim_file, trap / "file-link")
        os.symlink(victim_dir, trap / "dir-link")
        trap.chmod(0o555)
        # without the sandbox the victims are simply writable
        h.attempt("direct", lambda: open(victim_file, "w").write("x"))
"""


@pytest.mark.parametrize("basetemp", ["given", "default"])
def test_pytest_follows_no_link_planted_in_basetemp(case: Hostile, basetemp: str) -> None:
    victim_dir = case.root / "victims"
    victim_file = victim_dir / "victim-file"
    # read-only, as ~/.ssh and its keys are: pytest "fixes" such permissions before deleting
    _victims(victim_dir, ["victim-file", "other"], mode=0o400)
    victim_dir.chmod(0o555)
    case.on_cleanup(lambda: victim_dir.chmod(0o755))
    before = _look(victim_dir)
    env = {"CONTAINMENT_VICTIM_DIR": str(victim_dir), "CONTAINMENT_VICTIM_FILE": str(victim_file)}
    temproot = case.root / "temproot"
    temproot.mkdir()
    if basetemp == "default":
        env["PYTEST_DEBUG_TEMPROOT"] = str(temproot)
    case.write(BASETEMP_LINKS)
    # Run 1 plants the links.  A given basetemp is emptied at the start of the
    # next run; pytest's default one is removed by the run that makes the
    # fourth after it (tmp_path_retention_count = 3).
    runs = [case.run(env=env, basetemp=basetemp == "given")]
    case.write("def test_benign(tmp_path):\n    pass\n")
    for _ in range(1 if basetemp == "given" else 3):
        case.fresh_results()
        runs.append(case.run(env=env, basetemp=basetemp == "given"))
    changed = _changes(before, _look(victim_dir))
    assert not changed, f"the victim changed through links planted in basetemp: {changed}\n{runs[-1].describe()}"
    if basetemp == "default":
        first = [d for d in temproot.glob("pytest-of-*/pytest-0")]
        assert not first, f"the first run's basetemp was not removed: the retention was not exercised: {first}"
    for inner in runs:
        assert "INTERNALERROR" not in inner.stdout + inner.stderr and inner.ret in (0, 1), inner.describe()


# ====================================================================== 8
# Traces: nothing of one test reaches the next, or shows the host.

DAEMON = """
    import os, time
    import hostile as h


    def daemon(every):
        child = os.fork()
        if child == 0:
            os.setsid()
            if os.fork() == 0:
                end = time.monotonic() + 5
                while time.monotonic() < end:
                    os.write(1, ("daemon-" + h.TAG + " on stdout\\n").encode())
                    os.write(2, ("daemon-" + h.TAG + " on stderr\\n").encode())
                    time.sleep(every)
            os._exit(0)
        os.waitpid(child, 0)


    def test_a_leaves_a_daemon():
        daemon(0.05)
        daemon(0.001)  # the window between the test's end and its sandbox's is short
        time.sleep(0.2)


    def test_b_next():
        time.sleep(1.0)
        print("the next test's own line")
"""


def test_a_daemon_does_not_write_into_the_next_tests_output(case: Hostile) -> None:
    case.write(DAEMON)
    inner = case.run()
    leaked = [(name, when, title) for name in ("test_b_next", OK) for when, title, content in inner.sections(name)
              if case.tag in content]
    assert not leaked, f"the daemon's lines are in later tests' output: {leaked}\n{inner.describe()}"
    session_went_on(inner)


CGROUP_VIEW = """
    import os
    import hostile as h


    def test_look_at_the_cgroups():
        parent = h.env("PARENT")
        with open("/proc/self/cgroup") as f:
            h.record("proc-self-cgroup", f.read().splitlines())
        named, seen = [], 0
        for dirpath, dirnames, _files in os.walk("/sys/fs/cgroup"):
            seen += len(dirnames)
            named += [os.path.join(dirpath, d) for d in dirnames if parent in d]
            if seen > 50000:
                break
        h.record("named-after-the-parent", named)
"""


def test_the_cgroup_view_does_not_show_the_host(case: Hostile) -> None:
    case.write(CGROUP_VIEW)
    inner = case.run()
    paths = [line.split(":", 2)[2] for line in case.evidence("proc-self-cgroup") or []]
    named = case.evidence("named-after-the-parent")
    problems = []
    if any(p != "/" for p in paths):
        problems.append(f"/proc/self/cgroup shows the host's paths: {case.evidence('proc-self-cgroup')}")
    if named:
        problems.append(f"/sys/fs/cgroup has directories named after the pytest process {inner.pid}: {named}")
    assert paths and named is not None, case.all_evidence()
    assert not problems, "\n".join(problems)
    session_went_on(inner)


# ====================================================================== 9
# Coverage data names only files pytest can read safely when it reports.

COVERAGE_NAMES = """
    import os, resource
    import hostile as h

    # Collection runs in the pytest process: bound its address space, so that
    # a report that reads a device to its end fails there instead of taking
    # the host's memory.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))


    def covered(path, tracers=None):
        return {"t": "coverage", "data": {"arcs": False, "contexts": {"": {path: [1, 2, 3]}},
                                          "tracers": tracers or {}}}


    def test_names_a_fifo(tmp_path):
        # tmp_path is writable, so the FIFO is on the host: a report that opens it waits for a writer forever
        fifo = tmp_path / "evil.py"
        os.mkfifo(fifo)
        h.send(covered(str(fifo)))


    def test_names_dev_zero():
        h.send(covered("/dev/zero"))


    def test_names_an_unknown_tracer():
        h.send(covered(__file__, {__file__: "no.such.plugin"}))


    def test_names_line_minus_1000():
        h.send({"t": "coverage", "data": {"arcs": False, "contexts": {"": {__file__: [5, -1000]}}, "tracers": {}}})


    def test_names_line_2_to_the_33():
        # coverage keeps a bit per line up to the highest: a GiB in pytest's process
        h.send({"t": "coverage", "data": {"arcs": False, "contexts": {"": {__file__: [5, 2 ** 33]}},
                                          "tracers": {}}})
"""

COVERAGE_REFUSED = {
    "test_names_a_fifo": "evil.py', which is a FIFO, not a regular file",
    "test_names_dev_zero": "coverage data for '/dev/zero', which is a character device, not a regular file",
    "test_names_an_unknown_tracer": ("traced by the plugin 'no.such.plugin', which this process's coverage "
                                     "has not loaded"),
    "test_names_line_minus_1000": "a covered line is out of range (-1000)",
    "test_names_line_2_to_the_33": "a covered line is out of range (8589934592)",
}


@pytest.mark.parametrize("attack", list(COVERAGE_REFUSED))
def test_coverage_data_for_what_is_no_source_file_crashes_only_its_test(case: Hostile, attack: str) -> None:
    import importlib.util

    skip_unless(importlib.util.find_spec("pytest_cov") is not None, "pytest-cov is not installed")
    case.write(COVERAGE_NAMES)
    inner = case.run("-k", f"{attack} or canary", "--cov=.", "--cov-report=term", timeout=60)
    session_went_on(inner)
    crashed(inner, attack)
    assert COVERAGE_REFUSED[attack] in inner.message(attack), inner.describe()
    assert re.search(r"^TOTAL\s", inner.stdout, re.M), f"no coverage report\n{inner.describe()}"


COVERAGE_OUTSIDE = """
    import os
    import hostile as h


    def test_names_a_file_of_its_choice():
        # coverage's annotate report writes <file>,cover beside every file in the data, as pytest's user
        h.send({"t": "coverage", "data": {"arcs": False, "contexts": {"": {os.environ["NAMED"]: [1]}},
                                          "tracers": {}}})
"""


@pytest.mark.parametrize("named,in_source", [("outside.py", False), ("no-python-source", True)],
                         ids=["outside-the-source", "not-a-python-file"])
def test_coverage_data_for_a_file_plain_pytest_would_not_measure_is_left_out(case: Hostile, named: str,
                                                                              in_source: bool) -> None:
    import importlib.util

    skip_unless(importlib.util.find_spec("pytest_cov") is not None, "pytest-cov is not installed")
    elsewhere = case.project.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    elsewhere.chmod(0o777)  # so that pytest could write there, whoever runs it
    target = elsewhere / named
    target.write_text("x = 1\n")
    target.chmod(0o644)
    case.write(COVERAGE_OUTSIDE)
    sources = ["--cov=.", f"--cov={elsewhere}"] if in_source else ["--cov=."]
    inner = case.run(*sources, "--cov-report=annotate", "--cov-report=term", env={"NAMED": str(target)},
                     timeout=60)
    session_went_on(inner)
    assert inner.status("test_names_a_file_of_its_choice") == "passed", inner.describe()
    assert sorted(p.name for p in elsewhere.iterdir()) == [named], "pytest wrote beside a file the sandbox named"
    assert named not in inner.stdout, f"the report names {named}\n{inner.describe()}"
    assert re.search(r"^TOTAL\s", inner.stdout, re.M), f"no coverage report\n{inner.describe()}"


# ====================================================================== 10
# The list of discarded writes costs pytest what it lists, not what was written.

MANY_FILES = """
    import os
    import hostile as h


    def test_writes_300000_files_in_one_directory():
        # the project is copy-on-write: everything made here is listed as discarded, by pytest
        many = os.path.join(os.getcwd(), "many-" + h.TAG)
        os.mkdir(many)
        for i in range(300000):
            os.close(os.open(os.path.join(many, "%07d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
        h.record("made", len(os.listdir(many)))
"""


def test_listing_300000_discarded_files_costs_pytest_no_memory(case: Hostile) -> None:
    case.write(MANY_FILES)
    inner = case.run(timeout=120)
    session_went_on(inner)
    assert inner.status("test_writes_300000_files_in_one_directory") == "passed", inner.describe()
    assert case.evidence("made") == 300000, case.all_evidence()
    listed = [line for _when, title, content in inner.sections("test_writes_300000_files_in_one_directory")
              if title == DISCARDED_TITLE for line in content.splitlines() if f"/many-{case.tag}/" in line]
    assert listed, f"none of the files is listed as discarded\n{inner.describe()}"
    growth = inner.peak_rss_growth_kib()
    assert growth is not None and growth < 24 * 1024, (
        f"the pytest process's peak RSS grew by {growth} KiB listing the discarded files\n{inner.describe()}")


# ====================================================================== 11
# Descriptors pytest holds to others, and what its reporters read as theirs.

XDIST_LINK = """
    import pytest


    def _worker(config):
        return next(p for p in config.pluginmanager.get_plugins() if type(p).__name__ == "WorkerInteractor")


    def test_a_runs_code_in_the_controller(request):
        # xdist's controller rebuilds a warning by importing the module and
        # calling the name the worker sent
        data = {"message_module": "os", "message_class_name": "system",
                "message_args": ["touch %(canary)s"], "message_str": "x", "category_module": "builtins",
                "category_class_name": "UserWarning", "filename": "x", "lineno": 1, "file": None, "line": None,
                "source": None}
        _worker(request.config).sendevent("warning_recorded", warning_message_data=data, when="runtest",
                                          nodeid="", location=None)


    def test_b_reports_for_everyone(request):
        config = request.config
        worker = _worker(config)
        for index, item in enumerate(worker.session.items):
            for when in ("setup", "call", "teardown"):
                report = pytest.TestReport(nodeid=item.nodeid, location=item.location, keywords={},
                                           outcome="passed", longrepr=None, when=when)
                data = config.hook.pytest_report_to_serializable(config=config, report=report)
                data["item_index"], data["worker_id"] = index, worker.workerid
                worker.sendevent("testreport", data=data)
            worker.sendevent("runtest_protocol_complete", item_index=index, duration=0.01)
        output = dict(config.workeroutput, exitstatus=0, shouldfail=False, shouldstop=False,
                      testscollected=len(worker.session.items))
        worker.sendevent("workerfinished", workeroutput=output)
        assert False, "failed for real"


    def test_c_fails():
        assert False
"""


def test_an_xdist_workers_link_to_its_controller_is_out_of_reach(case: Hostile) -> None:
    skip_unless(_has_xdist(), "pytest-xdist is not installed")
    canary = case.host_path(case.root, "-controller-ran-it")
    case.write(XDIST_LINK % {"canary": canary})
    inner = case.run("-n", "1", "-p", "xdist", timeout=120)
    assert not canary.exists(), f"the sandbox ran a command in xdist's controller\n{inner.describe()}"
    cases = inner.junit_cases()
    assert cases.get("test_b_reports_for_everyone") == "failure" and cases.get("test_c_fails") == "failure", (
        f"the controller believed the sandbox's reports: {cases}\n{inner.describe()}")
    assert inner.ret == 1, inner.describe()
    session_went_on(inner)


def _has_xdist() -> bool:
    import importlib.util

    return importlib.util.find_spec("xdist") is not None


BESIDE = """
    import os, time
    import hostile as h
    import pytest


    @pytest.mark.parametrize("i", range(2))
    def test_a_victim(i):
        h.record(f"victim-{i}-from", time.time())
        time.sleep(4)
        print("the victim's own line")
        h.record(f"victim-{i}-sees", sorted(n for n in os.listdir("/") if "INJECTED" in n))


    def test_b_quick():
        pass


    def test_c_attacker():
        time.sleep(1)
        own = {os.fstat(1).st_ino, os.fstat(2).st_ino}
        h.record("scanned-at", time.time())
        done, recognised = [], 0
        for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
            try:
                target, st = os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd)
            except OSError:
                continue
            try:
                if os.path.isdir(f"/proc/self/fd/{fd}") and "u0" in os.listdir(fd):
                    upper = os.open("u0", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                    os.close(os.open(f"INJECTED_{fd}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=upper))
                    done.append(f"layer {fd}")
                elif target.startswith("/memfd:isolate-") and st.st_ino not in own:
                    os.write(fd, b"INJECTED into another test's output\\n")
                    done.append(f"output {fd}")
                elif target.startswith("/memfd:isolate-"):
                    recognised += 1  # its own output: what another's would look like
            except OSError:
                pass
        h.record("recognised-own", recognised)
        h.record("attacker-did", done)
"""


def test_a_sandbox_cannot_reach_the_sandboxes_running_beside_it(case: Hostile) -> None:
    case.write(BESIDE)
    inner = case.run("--isolate-jobs", "3", timeout=120)
    assert case.evidence("attacker-did") is not None, case.all_evidence()
    seen = {i: case.evidence(f"victim-{i}-sees") for i in range(2)}
    assert seen == {0: [], 1: []}, f"files made by another sandbox: {seen}; it did {case.evidence('attacker-did')}"
    foreign = [(name, title) for name in ("test_a_victim[0]", "test_a_victim[1]")
               for _when, title, content in inner.sections(name) if "INJECTED" in content]
    assert not foreign, f"another sandbox wrote into these tests' output: {foreign}\n{inner.describe()}"
    assert case.evidence("attacker-did") == [], f"the attacker reached: {case.evidence('attacker-did')}"
    session_went_on(inner)
    # the scan would have known another sandbox's output, and ran while both victims did
    assert case.evidence("recognised-own"), f"the attacker did not know its own output: {case.all_evidence()}"
    scanned = case.evidence("scanned-at")
    assert all(case.evidence(f"victim-{i}-from") <= scanned <= case.evidence(f"victim-{i}-from") + 4
               for i in range(2)), f"the victims were not running during the scan: {case.all_evidence()}"


REPORT_ATTRIBUTE = """
    import pytest


    class SetsIt:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            report = (yield).get_result()
            setattr(report, ATTRIBUTE, VALUE)


    def test_a_sets_it(request):
        request.config.pluginmanager.register(SetsIt(), "sets-it")
        assert ATTRIBUTE != "_pdbshown"  # fails: its traceback would be left out of the FAILURES section


    def test_b_fails_after_it():
        assert False
"""


@pytest.mark.parametrize("attribute,value", [
    ("node", {"gateway": 1}),  # xdist's worker node to -v and junitxml
    ("_pdbshown", True),  # "--pdb showed this failure already": the terminal leaves its traceback out
    ("rerun", "x"),  # pytest-rerunfailures' try number: its summary sorted by it, and failed on text
])
def test_a_report_attribute_pytest_reads_as_its_own_is_refused(case: Hostile, attribute: str, value: object) -> None:
    case.write(f"ATTRIBUTE, VALUE = {attribute!r}, {value!r}\n" + textwrap.dedent(REPORT_ATTRIBUTE))
    inner = case.run()
    crashed(inner, "test_a_sets_it")
    assert f"a report with attribute {attribute!r}" in inner.message("test_a_sets_it"), inner.describe()
    assert inner.status("test_b_fails_after_it") == "failed", inner.describe()
    session_went_on(inner)


OTHER_PLUGINS_ATTRIBUTES = """
    import json, os, pytest


    class SetsThem:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            report = (yield).get_result()
            if call.when == "call":
                fifo = os.path.join(str(item.funcargs["tmp_path"]), "fifo")
                os.mkfifo(fifo)
                # Hypothesis's plugin in pytest's process reads the file named here
                # to write a patch (a FIFO: it would wait forever)
                report._hypothesis_failing_examples = json.dumps([fifo, "a", "b"])
                report.plugin_says = {"path": "/etc/shadow"}


    def test_a_sets_them(request, tmp_path):
        request.config.pluginmanager.register(SetsThem(), "sets-them")
"""

OTHER_PLUGINS_CONFTEST = """
    import hostile as h

    _harness_logreport = pytest_runtest_logreport


    def pytest_runtest_logreport(report):
        _harness_logreport(report)
        # in pytest's process: what reached its plugins
        if report.when == "call" and report.nodeid.endswith("test_a_sets_them"):
            h.record("seen", sorted(k for k in vars(report) if k.startswith("_hypothesis") or k == "plugin_says"))
"""


def test_other_plugins_attributes_of_a_report_stay_in_the_sandbox(case: Hostile) -> None:
    case.write(OTHER_PLUGINS_ATTRIBUTES)
    conftest = case.project / "conftest.py"
    conftest.write_text(conftest.read_text() + textwrap.dedent(OTHER_PLUGINS_CONFTEST))
    inner = case.run(timeout=120)
    assert case.evidence("seen") == [], case.all_evidence()
    assert inner.status("test_a_sets_them") == "passed", inner.describe()
    session_went_on(inner, codes=(0,))


DEEP_REPORT = """
    import json
    import hostile as h


    def test_a_sends_it(request):
        # its call report, with a user property nested 960 deep: the decoder
        # takes that much, pytest-reportlog's json.dumps (deeper in pytest's
        # stack) does not
        call = h.forged_reports(request)[1]
        deep = "[" * 960 + "1" + "]" * 960
        body = '{"t": "report", "report": ' + json.dumps(call)[:-1] + ', "user_properties": [["deep", ' + deep + ']]}}'
        h.record("sending", len(body))  # (pytest may kill it as soon as the frame is read)
        h.write_to(h.channels(), h.frame("M", body.encode()))
"""


def test_a_value_nested_deeper_than_reporters_walk_crashes_only_its_test(case: Hostile) -> None:
    case.write(DEEP_REPORT)
    inner = case.run("--report-log", str(case.results / "report-log.jsonl"), timeout=120)
    assert case.evidence("sending"), case.all_evidence()
    crashed(inner, "test_a_sends_it")
    assert "nested more than 100 deep" in inner.message("test_a_sends_it"), inner.describe()
    session_went_on(inner)


PLUGIN_SERVER = """

import socket

import pytest

_plugin_server = None


def pytest_configure(config):
    # a plugin's own server, listening before the session (as
    # pytest-rerunfailures' status server does under xdist)
    global _plugin_server
    _plugin_server = socket.create_server(("127.0.0.1", 0))


@pytest.fixture(scope="session")
def fixture_server():
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


@pytest.fixture(scope="session")
def fixture_port(fixture_server):
    # a server thread of pytest's process: what the test reaches through the relay
    import threading

    def serve():
        while True:
            try:
                conn, _ = fixture_server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"served")

    threading.Thread(target=serve, daemon=True).start()
    return fixture_server.getsockname()[1]
"""

TAKES_A_LISTENER = """
    import os, socket
    import hostile as h


    def test_takes_the_listeners(fixture_server, fixture_port):
        found = []
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                with socket.socket(fileno=os.dup(fd)) as sock:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                        found.append(sock.getsockname()[1])
            except OSError:
                pass
        h.record("listening", sorted(found))
        h.record("fixture-port", fixture_port)
        # the fixture's server, through the relay
        with socket.create_connection(("127.0.0.1", fixture_port), timeout=10) as c:
            h.record("reached", c.recv(16).decode())
"""


def test_no_listening_socket_of_pytest_is_in_reach_a_fixtures_service_is(case: Hostile) -> None:
    """Holding the listening socket of a fixture's server, a test could take
    the connections meant for pytest's server thread (under --isolate-jobs,
    its neighbours': their credentials, answered by the test), or shut it
    down for the tests after it.  The service stays reachable: relayed."""
    conftest = case.project / "conftest.py"
    conftest.write_text(conftest.read_text() + PLUGIN_SERVER)
    case.write(TAKES_A_LISTENER)
    inner = case.run()
    listening, fixture_port = case.evidence("listening"), case.evidence("fixture-port")
    assert listening is not None and fixture_port, case.all_evidence()
    assert listening == [], (
        f"listening sockets in the sandbox: {listening} (the fixture's: {fixture_port})\n{inner.describe()}")
    assert case.evidence("reached") == "served", case.all_evidence()
    session_went_on(inner)


RERUN_LINK = """
    import os, socket
    import hostile as h


    def test_rewrites_the_rerun_counts(request):
        # pytest-rerunfailures under xdist: each worker holds a connected,
        # authenticated link to the status server in the controller, which
        # keeps every test's rerun counts ("set|<test>|f|-1000" would give a
        # crashing test a thousand more tries)
        port = request.config.workerinput["sock_port"]
        answered = []
        for name in sorted(os.listdir("/proc/self/fd"), key=int):
            try:
                sock = socket.socket(fileno=os.dup(int(name)))
            except OSError:
                continue
            with sock:
                try:
                    if sock.type != socket.SOCK_STREAM or sock.getpeername()[1] != port:
                        continue
                    sock.settimeout(5)
                    sock.sendall(b"get|__suite__|r|\\n")
                    answered.append(sock.recv(16).decode())
                except OSError:
                    continue
        h.record("answered", answered)
        h.record("db", type(request.config.failures_db).__name__)
"""


def test_rerunfailures_link_to_its_status_server_is_out_of_reach(case: Hostile) -> None:
    skip_unless(_has_xdist(), "pytest-xdist is not installed")
    skip_unless(importlib.util.find_spec("pytest_rerunfailures") is not None, "pytest-rerunfailures is not installed")
    case.write(RERUN_LINK)
    inner = case.run("-n", "1", "-p", "xdist", "-p", "rerunfailures", timeout=120)
    answered = case.evidence("answered")
    assert answered == [], f"the sandbox talked to the controller's status server: {answered}\n{inner.describe()}"
    # in its place, an in-memory stand-in (the plugin's own hooks in the sandbox still find one)
    assert case.evidence("db") == "StatusDB", case.all_evidence()
    assert inner.status("test_rewrites_the_rerun_counts") == "passed", inner.describe()


REPORT_LOG = """
    import json, os


    def test_a_adds_reports(request):
        target = os.path.realpath(str(request.config.option.report_log))
        forged = json.dumps({"nodeid": "test_forged.py::test_never_ran", "when": "call", "outcome": "passed",
                             "$report_type": "TestReport"}) + "\\n"
        for name in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{name}") == target:
                    os.write(int(name), forged.encode())
            except OSError:
                pass
        try:  # the path: outside the writable paths, a copy-on-write view (or not visible at all)
            with open(target, "a") as f:
                f.write(forged)
        except OSError:
            pass


    def test_b_fails():
        assert False
"""


def test_a_report_file_pytest_holds_open_takes_no_line_from_the_sandbox(case: Hostile) -> None:
    skip_unless(importlib.util.find_spec("pytest_reportlog") is not None, "pytest-reportlog is not installed")
    case.write(REPORT_LOG)
    log = case.results / "report-log.jsonl"
    inner = case.run(f"--report-log={log}", "-p", "pytest_reportlog")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    forged = [line for line in lines if line.get("nodeid", "").endswith("test_never_ran")]
    assert not forged, f"the sandbox added to pytest's report log: {forged}\n{inner.describe()}"
    outcomes = {(line["nodeid"].rsplit("::", 1)[-1], line["when"]): line["outcome"]
                for line in lines if line.get("$report_type") == "TestReport"}
    assert outcomes.get(("test_a_adds_reports", "call")) == "passed", outcomes
    assert outcomes.get(("test_b_fails", "call")) == "failed", outcomes
    assert lines[-1].get("$report_type") == "SessionFinish", lines[-1]
    session_went_on(inner)


TYPES_INTO_THE_TERMINAL = """
    import fcntl, os, termios
    import hostile as h


    def test_types_into_pytests_terminal():
        # pytest's real stdout is the terminal it runs in; the sandbox inherits
        # it. TIOCSTI would queue input there, run by the shell after pytest.
        tried = []
        for fd in range(256):
            try:
                if not os.isatty(fd):
                    continue
            except OSError:
                continue
            try:
                for ch in b"echo INJECTED\\n":
                    fcntl.ioctl(fd, termios.TIOCSTI, bytes([ch]))
                tried.append(f"{fd}: typed")
            except OSError as e:
                tried.append(f"{fd}: {e.strerror}")
        h.record("tiocsti", tried)
"""


def test_the_sandbox_cannot_type_into_pytests_terminal(case: Hostile) -> None:
    """pytest run from a terminal (its controlling one, as from a shell):
    input the sandbox queues there with TIOCSTI would be read by the shell
    after pytest exits."""
    import subprocess
    import sys
    import tty

    case.write(TYPES_INTO_THE_TERMINAL)
    master, slave = os.openpty()
    try:
        tty.setraw(slave)  # what is queued can be read back at once, no line editing, no echo
        if case.user is not None:
            os.fchown(slave, case.user, -1)
        # a session of its own with the terminal as its controlling one, as a shell gives
        argv = [sys.executable, "-c", "import fcntl, os, sys, termios; os.setsid(); "
                "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])", *case.argv()]
        case.hand_over()
        with open(os.devnull, "wb") as null:
            proc = subprocess.Popen(argv, cwd=case.project, env=case.base_env(), stdin=slave, stdout=slave,
                                    stderr=null)
            os.set_blocking(master, False)
            out = b""
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    out += os.read(master, 65536)
                except BlockingIOError:
                    time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        os.set_blocking(slave, False)
        try:
            queued = os.read(slave, 4096)
        except BlockingIOError:
            queued = b""
    finally:
        os.close(master)
        os.close(slave)
    tried = case.evidence("tiocsti")
    assert tried, f"the test found no terminal to type into: {tried}\n{out.decode(errors='replace')[-3000:]}"
    assert b"INJECTED" not in queued, f"the sandbox typed into pytest's terminal: {queued!r} ({tried})"
    assert all(not t.endswith("typed") for t in tried), tried


COVERAGE_SWAPPED = """
    import os
    import hostile as h


    def test_a_names_a_regular_file(tmp_path_factory):
        # in basetemp, which every isolated test may write: the file is on the host
        path = tmp_path_factory.getbasetemp() / "evil.py"
        path.write_text("x = 1\\n")
        h.send({"t": "coverage", "data": {"arcs": False, "contexts": {"": {str(path): [1]}}, "tracers": {}}})


    def test_b_swaps_it_for_a_fifo(tmp_path_factory):
        # after its data was checked: the report would open a FIFO and wait for a writer forever
        path = tmp_path_factory.getbasetemp() / "evil.py"
        path.unlink()
        os.mkfifo(path)
        h.record("swapped", path.is_fifo())
"""


def test_a_covered_file_swapped_for_a_fifo_later_does_not_hang_the_report(case: Hostile) -> None:
    skip_unless(importlib.util.find_spec("pytest_cov") is not None, "pytest-cov is not installed")
    case.write(COVERAGE_SWAPPED)
    # no source: basetemp, outside the project, is measured too
    inner = case.run("--cov", "--cov-report=term", timeout=60)
    assert case.evidence("swapped") is True, case.all_evidence()
    session_went_on(inner)
    assert re.search(r"^TOTAL\s", inner.stdout, re.M), f"no coverage report\n{inner.describe()}"
    assert re.search(r"^isolate: coverage data for \S*evil\.py left out of the report: it is a FIFO now, not "
                     r"the regular file it was when its test sent its data", inner.stdout, re.M), inner.describe()


WARNING_FILES = """
    import os, warnings
    import hostile as h


    def test_a_warning_from_a_fifo(tmp_path):
        # pytest's warning summary would read the named file's line: a FIFO no one writes is a wait without end
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        h.attempt("fifo-message", h.send, {"t": "warning", "message": "hi", "category": ["builtins", "UserWarning"],
                                           "filename": str(fifo), "lineno": 1})
        warnings.warn_explicit("hi", UserWarning, str(fifo), 1)


    def test_b_warning_from_a_huge_file(tmp_path):
        # ... and a huge file one line long would be read whole (/dev/zero: without end)
        big = tmp_path / "big.py"
        with open(big, "wb") as f:
            f.truncate(300 << 20)
        h.attempt("big-message", h.send, {"t": "warning", "message": "hi", "category": ["builtins", "UserWarning"],
                                          "filename": str(big), "lineno": 1})
        h.attempt("zero-message", h.send, {"t": "warning", "message": "hi", "category": ["builtins", "UserWarning"],
                                           "filename": "/dev/zero", "lineno": 1, "line": ""})
"""


def test_a_warning_makes_pytest_open_no_file(case: Hostile) -> None:
    case.write(WARNING_FILES)
    inner = case.run(timeout=90)  # pytest, reading the FIFO, used to wait for good
    assert case.evidence("fifo-message") == "ok" and case.evidence("big-message") == "ok", case.all_evidence()
    growth = inner.peak_rss_growth_kib()
    assert growth is not None and growth < 100 * 1024, f"pytest's peak RSS grew by {growth} KiB\n{inner.describe()}"
    session_went_on(inner)
    for name in ("test_a_warning_from_a_fifo", "test_b_warning_from_a_huge_file"):
        assert inner.status(name) == "passed", f"{name}: {inner.status(name)}\n{inner.describe()}"
    assert re.search(r"fifo:1: UserWarning: hi$", inner.stdout, re.M), inner.describe()


# ====================================================================== 12
# What pytest and its plugins read at the session's end (junitxml, the
# terminal's summary, the cache, pytest-benchmark's JSON) or from the
# reports (durations): refused as it comes, never left to break the end.

FORGE_REPORTS = """
    def forge(**fields):
        # what the sandbox's side of pytest-isolate sends, changed on its way
        import pytest_isolate.child as child
        real = child.send

        def send(kind, **message):
            if kind == "report" and message["report"]["when"] == "call":
                message["report"].update(fields)
            real(kind, **message)
        child.send = send
"""

#: attack -> (the hostile test, junit_family, extra arguments, what its
#: CRASHED message says); a test that calls forge() gets it defined
#: (FORGE_REPORTS).
SESSION_END: Dict[str, Tuple[str, str, Tuple[str, ...], str]] = {
    "xml-attribute-name-injects-a-test-case": ("""
        def test_hostile(record_xml_attribute):
            record_xml_attribute('x="1"/><testcase classname="c" name="forged"/><![CDATA[', "v")
    """, "xunit1", (), "an XML attribute named 'x=\"1\"/><testcase"),
    "xml-attribute-name-of-half-a-namespace": ("""
        def test_hostile(record_xml_attribute):
            record_xml_attribute("{no-closing-brace", "v")
    """, "xunit1", (), "an XML attribute named '{no-closing-brace'"),
    "suite-property-name-xml-cannot-hold": ("""
        def test_hostile(record_testsuite_property):
            record_testsuite_property("x\\x00\\x1b[2J", "v")
    """, "xunit2", (), "with the character '\\x00', which XML cannot hold"),
    "user-property-name-xml-cannot-hold": ("""
        def test_hostile(record_property):
            record_property("p\\x01", 1)
    """, "xunit2", (), "a user property's name 'p\\x01' with the character"),
    "url-that-is-not-text": ("""
        def test_hostile():
            forge(url=5)
    """, "xunit1", (), "a report's url is not a string"),
    "skip-without-its-location": ("""
        def test_hostile():
            forge(outcome="skipped", longrepr="not a (path, line, reason) triple")
    """, "xunit2", ("-rA",), "a skipped report without its skip location"),
    "pytest-isolates-own-cache-entry": ("""
        def test_hostile(request):
            request.config.cache.set("pytest-isolate/stats-v1", "not a mapping")
    """, "xunit2", (), "keys under 'pytest-isolate/' are pytest-isolate's own"),
    "benchmark-without-timings": ("""
        import hostile as h


        def test_hostile():
            h.send({"t": "plugin", "name": "benchmark", "data": [
                {"iterations": 1, "data": [], "group": None, "extra_info": {}, "has_error": False,
                 "skipped": False}]})
    """, "xunit2", ("--benchmark-json=bench.json",), "a benchmark without timings that did not fail"),
}


@pytest.mark.parametrize("attack", list(SESSION_END))
def test_what_pytest_reads_at_the_end_is_refused_as_it_comes(case: Hostile, attack: str) -> None:
    body, family, args, refused = SESSION_END[attack]
    if attack.startswith("benchmark"):
        skip_unless(importlib.util.find_spec("pytest_benchmark") is not None, "pytest-benchmark is not installed")
    (case.project / "pytest.ini").write_text(
        f"[pytest]\nisolate_writable =\n    {case.evidence_dir}\njunit_family = {family}\n")
    case.write(textwrap.dedent(FORGE_REPORTS) * ("forge(" in body) + textwrap.dedent(body))
    inner = case.run(*args, cache="cache" in attack, timeout=90)  # the junit file is parsed here
    session_went_on(inner)
    crashed(inner, "test_hostile")
    assert refused in inner.message("test_hostile"), inner.describe()
    assert set(inner.junit_cases()) == {"test_hostile", OK}, inner.junit_cases()


FORGED_DURATIONS = textwrap.dedent(FORGE_REPORTS) + """
import time


def test_claims_a_billion_seconds():
    forge(duration=1e9)
    time.sleep(0.2)
"""


FORGED_SUBTEST_DURATIONS = """
import time
import pytest_isolate.child as child

def test_claims_a_billion_seconds(subtests):
    real = child.send

    def send(kind, **message):
        if kind == "subtest":
            message["report"]["duration"] = 1e9
        real(kind, **message)
    child.send = send
    time.sleep(0.5)
    for i in range(50):
        with subtests.test(i=i):
            pass
"""


@pytest.mark.parametrize("where", ["phases", "subtests"])
def test_a_test_cannot_claim_to_have_run_longer_than_it_did(case: Hostile, where: str) -> None:
    if where == "subtests":
        has = int(pytest.__version__.split(".")[0]) >= 9 or importlib.util.find_spec("pytest_subtests") is not None
        skip_unless(has, "pytest-subtests is not installed (install the test extras)")
    case.write(FORGED_DURATIONS if where == "phases" else FORGED_SUBTEST_DURATIONS)
    inner = case.run("--durations=3")
    session_went_on(inner)
    assert inner.status("test_claims_a_billion_seconds") == "passed", inner.describe()
    assert inner.junit is not None
    times = {c.get("name"): float(c.get("time", "nan")) for c in inner.junit.iter("testcase")}
    # (junitxml adds every report's duration: subtests within the call too)
    assert 0.2 <= times["test_claims_a_billion_seconds"] < 60, times
    assert "1000000000" not in inner.stdout, inner.describe()
    records = [r for r in (inner.stats or {}).get("tests", [])
               if r["nodeid"].endswith("::test_claims_a_billion_seconds")]
    # --isolate-json adds the reports' durations: the phases', each no longer
    # than the sandbox ran, and the subtests' (eight times that at most:
    # nested ones overlap; without a bound, 50 of them claimed 50 times)
    assert records and records[0]["duration"] < 12 * records[0]["stats"]["wall_seconds"] + 1.0, records


# ====================================================================== 6 (again)
# A root run's payload in a user namespace of its own would have every
# capability over what the host's uid 0 owns and it can reach: its own
# cgroup's files, through a cgroup filesystem it mounts.

OWN_CGROUP_FILES = """
    import ctypes, errno, os, time
    import pytest
    import hostile as h

    libc = ctypes.CDLL(None, use_errno=True)
    NEWUSER, NEWNS, NEWCGROUP = 0x10000000, 0x00020000, 0x02000000


    def lift_my_limits():
        # a user, mount and cgroup namespace of its own: the cgroup
        # filesystem it mounts there has its own cgroup as its root
        pid = os.fork()
        if pid == 0:
            steps = {}
            try:
                if libc.unshare(NEWUSER | NEWNS | NEWCGROUP) != 0:
                    steps["unshare"] = errno.errorcode.get(ctypes.get_errno(), "?")
                else:
                    steps["unshare"] = "ok"
                    os.makedirs("/tmp/cg-pids", exist_ok=True)
                    if libc.mount(b"none", b"/tmp/cg-pids", b"cgroup", 0, b"pids") == 0:
                        with open("/tmp/cg-pids/pids.max", "w") as f:
                            f.write("max")
                        steps["pids.max"] = "lifted"
                    else:
                        steps["mount"] = errno.errorcode.get(ctypes.get_errno(), "?")
            except OSError as e:
                steps["error"] = errno.errorcode.get(e.errno or 0, "?")
            finally:
                h.record("steps", steps)
                os._exit(0)
        os.waitpid(pid, 0)


    @pytest.mark.isolated(pids=16)
    def test_over_its_pids_cap():
        lift_my_limits()
        kids = []
        try:
            for _ in range(40):
                pid = os.fork()
                if pid == 0:
                    time.sleep(1)
                    os._exit(0)
                kids.append(pid)
        finally:
            h.record("forked", len(kids))
            for pid in kids:
                os.waitpid(pid, 0)
"""


def test_a_root_runs_test_cannot_write_its_own_cgroups_limits(hostile: Hostile, as_root: None) -> None:
    hostile.write(OWN_CGROUP_FILES)
    inner = hostile.run("-k", "test_over_its_pids_cap or canary", timeout=90)
    session_went_on(inner)
    steps, forked = hostile.evidence("steps"), hostile.evidence("forked")
    assert steps == {"unshare": "EPERM"}, steps
    assert forked is not None and forked < 16, (forked, inner.describe())
    assert inner.status("test_over_its_pids_cap") == "failed", inner.describe()
