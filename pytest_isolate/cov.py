"""Coverage of isolated tests: measured in the sandbox, merged in pytest.

The sandbox is a fork of the pytest process, so coverage.py's tracer keeps
running in it, but everything it would save lands on the copy-on-write
filesystem and is thrown away with the sandbox.  So the sandbox side
records into a fresh in-memory ``CoverageData`` and sends it over the
result channel when the test is done; the pytest process merges it into the
data of its own running ``Coverage``, whatever saves that data later
(pytest-cov, ``coverage run``, an xdist worker) finds the lines there.

Two reasons the sandbox must not touch the inherited data object: its
SQLite connection may already be open, and a file descriptor opened before
the sandbox's root was built writes to the *host's* file, past the
copy-on-write layer, racing the pytest process.  Hence the swap at the
start rather than a flush at the end.

This leans on two coverage.py attributes that are not public API
(``Coverage._collector`` and ``Coverage._data``), stable since coverage 5;
without them, nothing is merged and nothing breaks.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

#: Message kind on the result channel.
KIND = "coverage"


def _current() -> Any:
    """The running ``coverage.Coverage`` of this process, if any (never
    imports coverage when nobody else did)."""
    mod = sys.modules.get("coverage")
    if mod is None:
        return None
    try:
        return mod.Coverage.current()
    except Exception:
        return None


class SandboxCoverage:
    """Sandbox side: redirect this process's measurement into memory."""

    def __init__(self, cov: Any, collector: Any, data: Any) -> None:
        self._cov = cov
        self._collector = collector
        self._data = data

    @classmethod
    def take_over(cls) -> Optional["SandboxCoverage"]:
        """Call first thing in the sandbox; None when nothing is measured."""
        cov = _current()
        collector = getattr(cov, "_collector", None)
        if collector is None or not hasattr(collector, "use_data"):
            return None
        from coverage import CoverageData

        data = CoverageData(no_disk=True)
        # What the pytest process measured but had not flushed yet is its
        # own to save; it need not travel back.
        for per_file in list(getattr(collector, "data", {}).values()):
            if hasattr(per_file, "clear"):
                per_file.clear()
        collector.use_data(data, getattr(collector, "static_context", None))
        # A save from inside the sandbox (coverage's ``patch = _exit``) then
        # goes to memory too, never to the inherited data file.
        cov._data = data
        return cls(cov, collector, data)

    def payload(self) -> Optional[bytes]:
        """The lines/arcs measured in the sandbox, serialized."""
        try:
            self._collector.flush_data()
            if not self._data:
                return None
            blob: bytes = self._data.dumps()
            return blob
        except Exception as e:  # never fail a test over its coverage
            sys.stderr.write(f"pytest-isolate: could not collect this test's coverage data: {e!r}\n")
            return None


def merge(blob: bytes) -> None:
    """Pytest side: add a sandbox's coverage data to this process's."""
    cov = _current()
    target = getattr(cov, "_data", None)
    if target is None:
        return
    from coverage import CoverageData

    data = CoverageData(no_disk=True)
    data.loads(blob)
    target.update(data)
