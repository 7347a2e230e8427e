"""The trust boundary between the sandbox and pytest (issue #13, DESIGN §5).

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
root) as uid 65534 with the inner pytest unprivileged.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import stat
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from ..conftest import skip_unless
from .harness import (
    NOBODY,
    SANITY,
    Hostile,
    Inner,
    nobody_can_run_pytest,
    process_state,
    read_file,
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
def as_root(caps: object) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root run can hand the sandbox the host's root")


def session_went_on(inner: Inner, canary: str = OK) -> None:
    """Whatever the hostile test did, the session finished normally."""
    out = inner.stdout + inner.stderr
    assert "INTERNALERROR" not in out, f"INTERNALERROR (exit code {inner.ret})\n{inner.describe()}"
    assert inner.ret in (0, 1), f"exit code {inner.ret}\n{inner.describe()}"
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

#: variant -> the hostile test's body (``send`` / ``raw`` write to the channel)
UNEXPECTED: Dict[str, str] = {
    "int-message": "h.send(42)",
    "none-message": "h.send(None)",
    "tuple-missing-fields": "h.send(('report',))",
    "report-not-a-dict": "h.send(('report', 'not a report'))",
    "report-of-wrong-shape": "h.send(('report', {'nodeid': 7, 'when': 'nonsense'}))",
    "warning-missing-fields": "h.send(('warning', 'text'))",
    "status-frame-of-2-bytes": "raw('W', b'\\x00\\x00')",
    "unknown-kind-byte": "raw('Z', pickle.dumps(('noop',)))",
    "pickled-int-for-the-written-list": "raw('F', pickle.dumps(5))",
    "pickled-int-for-the-spawned-dict": "raw('P', pickle.dumps(5))",
    "length-1GiB-then-eof": "raw_bytes(struct.pack('>IB', 1 << 30, ord('M')))",
    "json-invalid-utf8": "raw('M', b'{\"t\": \"report\", \"report\": \"\\xff\\xfe\\xfd\"}')",
    "json-invalid": "raw('M', b'{\"t\": \"report\", \"report\": {\"nodeid\": ')",
    "json-nested-100000-deep": "raw('M', b'{\"t\": \"report\", \"report\": ' + b'[' * 100000 + b']' * 100000 + b'}')",
    "json-number-of-100000-digits": "raw('M', b'{\"t\": \"report\", \"report\": ' + b'7' * 100000 + b'}')",
    "json-message-of-wrong-type": "h.send({'t': 42})",
}

UNEXPECTED_MODULE = """
import os, pickle, struct
import hostile as h


def raw(kind, body):
    h.record("raw", h.write_to(h.channels(), h.frame(kind, body)))


def raw_bytes(data):
    h.record("raw", h.write_to(h.channels(), data))


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
