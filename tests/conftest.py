"""Suite-wide hygiene: every test leaves no processes, mounts or cgroups behind."""
from __future__ import annotations

import os

import pytest

MUST_WORK = os.environ.get("PYTEST_ISOLATE_MUST_WORK") == "1"

# Under tox, pytest puts every run's cache in $TOX_ENV_DIR/.pytest_cache
# instead of the project's: the inner pytest runs of these tests would all
# share one lastfailed/stepwise state. pytester drops it the same way.
os.environ.pop("TOX_ENV_DIR", None)


def skip_unless(condition: bool, reason: str) -> None:
    """Skip for a capability this host lacks; under PYTEST_ISOLATE_MUST_WORK=1
    (set by CI) a skip is a failure, so CI never goes green by skipping."""
    if condition:
        return
    if MUST_WORK:
        pytest.fail(f"PYTEST_ISOLATE_MUST_WORK=1 but: {reason}")
    pytest.skip(reason)


def _children() -> "set[int]":
    try:
        import psutil

        return {p.pid for p in psutil.Process().children(recursive=True)}
    except Exception:  # pragma: no cover - psutil missing on exotic hosts
        return set()


def _mounts() -> str:
    try:
        with open("/proc/self/mountinfo") as f:
            return "".join(sorted(line.split(" ", 4)[4] for line in f))
    except OSError:
        return ""


@pytest.fixture(autouse=True)
def _no_leaks() -> "object":
    before_children, before_mounts = _children(), _mounts()
    yield
    try:
        from isolate_runtime.launcher import settle

        settle()  # sandboxes whose teardown run() left to finish in the background
    except ImportError:  # pragma: no cover - the runtime is not importable
        pass
    leaked = _children() - before_children
    assert not leaked, f"test left child processes behind: {sorted(leaked)}"
    assert _mounts() == before_mounts, "test changed the host's mount table"
