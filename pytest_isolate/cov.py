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
without them, nothing is merged and nothing breaks.  A third,
``CoverageData._hasher``, exists in coverage 7.14 to 7.16 only (see
``merge``).
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
    """Pytest side: add a sandbox's coverage data to this process's.

    Coverage 7.14 to 7.16 (7.16 is the newest for Python 3.10) name a
    parallel data file after a hash kept up to date by ``add_lines``,
    ``add_arcs``, ``add_file_tracers`` and ``set_context`` -- not by
    ``update`` -- and ``coverage combine`` skips a file whose hash it has
    seen already.  So what is merged here goes into that hash too: else two
    xdist workers that measured the same lines themselves (say, only the
    package's import lines) save the same hash, and ``combine`` drops one of
    them, with every sandbox's data merged into it, as a duplicate.
    """
    cov = _current()
    target = getattr(cov, "_data", None)
    if target is None:
        return
    from coverage import CoverageData

    data = CoverageData(no_disk=True)
    try:
        data.loads(blob)
        target.update(data)
        hasher = getattr(target, "_hasher", None)
        if hasher is not None:
            hasher.update(blob)
    finally:
        _close(data)


def _close(data: Any) -> None:
    """Free the in-memory database now (Python 3.13 warns about a SQLite
    connection left to the garbage collector); older coverage versions have
    no ``close(force=...)``."""
    try:
        data.close(force=True)
    except Exception:
        pass
