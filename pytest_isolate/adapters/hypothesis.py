"""Hypothesis: what a test wrote to its example database, carried back.

Hypothesis saves the failing examples it finds (and the ones it shrank
them to) in its example database, by default
``DirectoryBasedExampleDatabase(".hypothesis/examples")``, so that the next
run tries them first.  An isolated test wrote them to the sandbox's
copy-on-write view of the directory: thrown away, and the next run
searched again.

In the sandbox (of a test collected after Hypothesis was imported: a
module using it), every change made through a directory database
(``save``, ``delete``, ``move``; the ones such a change makes itself are
part of it) is recorded with the database's path; the database itself
works as before, on the sandbox's view.  The pytest process replays the changes,
with Hypothesis's own code, on the database the test's settings name, when
it is a directory database at the path the sandbox named; and not when
that path is writable from any sandbox of the session (a sandbox wrote
there itself, and a link one planted there would be followed).  The keys and values are
Hypothesis's opaque bytes; the files' names are hashes Hypothesis computes.

Changes to other databases (in memory, over the network, or a directory
database wrapped in another one) are not carried back.  Hypothesis's
other files below ``.hypothesis`` (caches) are not either.
"""
from __future__ import annotations

import base64
import binascii
import os
import sys
import threading
from typing import Any, Callable, List, Optional

import pytest

from .. import checks
from . import Adapter as Base
from .paths import sandbox_writable, writable_root

#: Bounds on what one test may send back.
MOST_CHANGES = 100_000
#: The changes and the number of their arguments (keys and values).
CHANGES = {"save": 2, "delete": 2, "move": 3}


class _Recorder:
    """In the sandbox: records each change made through a directory database."""

    def __init__(self) -> None:
        self.changes: List[List[str]] = []
        self._depth = threading.local()

    def install(self) -> None:
        from hypothesis.database import DirectoryBasedExampleDatabase

        for change in CHANGES:
            original = getattr(DirectoryBasedExampleDatabase, change)
            setattr(DirectoryBasedExampleDatabase, change, self._recording(change, original))

    def _recording(self, change: str, original: Callable[..., None]) -> Callable[..., None]:
        recorder = self

        def recorded(db: Any, *args: bytes) -> None:
            depth = getattr(recorder._depth, "n", 0)
            if depth == 0:
                recorder.changes.append([os.fspath(db.path), change,
                                         *(base64.b64encode(bytes(a)).decode("ascii") for a in args)])
            recorder._depth.n = depth + 1
            try:
                original(db, *args)
            finally:
                recorder._depth.n = depth

        return recorded


def _database(item: pytest.Item) -> Any:
    """The directory database the test's settings name, or None."""
    from hypothesis import settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    chosen: Any = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", settings.default)
    db = chosen.database
    return db if isinstance(db, DirectoryBasedExampleDatabase) else None


class Adapter(Base):
    name = "hypothesis"

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        self.recorder: Optional[_Recorder] = None

    def start(self, item: pytest.Item) -> None:
        # Only where Hypothesis is imported already (a module using it was
        # collected): importing it in every sandbox would cost each test
        # far more than the test itself.  Once per sandbox: this process
        # is a fresh fork for each test.
        if "hypothesis.database" not in sys.modules:
            return
        self.recorder = _Recorder()
        self.recorder.install()

    def collect(self, item: pytest.Item) -> Optional[Any]:
        if self.recorder is None or not self.recorder.changes:
            return None
        return self.recorder.changes

    def merge(self, item: pytest.Item, data: Any) -> None:
        changes = checks.listing(data, "example database changes", most=MOST_CHANGES)
        db = _database(item)
        target = None if db is None else os.fspath(db.path)
        if target is not None and writable_root(target, sandbox_writable(item)) is not None:
            target = None
        for change in changes:
            parts = checks.strings(change, "an example database change")
            if len(parts) < 2 or parts[1] not in CHANGES or len(parts) != 2 + CHANGES[parts[1]]:
                raise checks.fail("an example database change that is not (path, save|delete|move, keys/values)")
            path, kind, args = parts[0], parts[1], [self._bytes(a) for a in parts[2:]]
            if path != target:
                continue
            getattr(db, kind)(*args)

    @staticmethod
    def _bytes(value: str) -> bytes:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise checks.fail("an example database key or value that is not base64") from None
