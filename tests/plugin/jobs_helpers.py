"""What the ``--isolate-jobs`` tests give their inner projects.

``marks.py`` lets inner tests prove what ran at once without timing
anything: a test marks itself running (a file in a directory every sandbox
may write), waits for others to be running too, or checks that nothing else
is; the parent's fixtures log events to the same place.
"""
from __future__ import annotations

from pathlib import Path

import pytest

MARKS_PY = '''
import contextlib, os, time

DIR = os.environ["JOBS_MARKS"]


def path(name):
    return os.path.join(DIR, name)


def mark(name, text=""):
    with open(path(name), "w") as f:
        f.write(text)


def seen(name):
    return os.path.exists(path(name))


def running_now():
    return sorted(n[len("running-"):] for n in os.listdir(DIR) if n.startswith("running-"))


def wait_for(*names, timeout=60.0):
    """Until every one of ``names`` is marked: they ran at once."""
    end = time.monotonic() + timeout
    while not all(seen(n) for n in names):
        if time.monotonic() > end:
            raise AssertionError("never all at once: %s; marks: %s" % (names, sorted(os.listdir(DIR))))
        time.sleep(0.01)


def together(*names, me):
    """Meet: mark ``me`` as started and wait until every one of ``names``
    has started too (the marks stay, so no one leaves before all saw)."""
    mark("started-" + me)
    wait_for(*["started-" + n for n in names])


@contextlib.contextmanager
def running(name):
    mark("running-" + name)
    try:
        yield
    finally:
        os.unlink(path("running-" + name))


def log(line):
    with open(path("events.log"), "a") as f:
        f.write(line + "\\n")


def events():
    try:
        with open(path("events.log")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def heartbeat(name, seconds):
    """Rewrite alive-<name> every 50 ms for ``seconds``: a killed test stops."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
        mark("alive-" + name, str(n))
        time.sleep(0.05)
'''


def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str = "") -> Path:
    """``marks.py`` and a ``pytest.ini`` that makes its directory writable;
    returns that directory."""
    marks = pytester.path / "marks"
    marks.mkdir()
    monkeypatch.setenv("JOBS_MARKS", str(marks))
    pytester.makepyfile(marks=MARKS_PY)
    pytester.makeini(f"[pytest]\nisolate_writable = {marks}\n{ini}")
    return marks


def events(marks: Path) -> "list[str]":
    path = marks / "events.log"
    return path.read_text().splitlines() if path.exists() else []
