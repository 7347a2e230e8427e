"""What runs inside the sandbox: the function scope of one test.

The sandboxed process is a fork of the pytest process, so it already holds
the item, the configuration and every higher-scoped fixture the parent set
up (copy-on-write).  It runs ``runtestprotocol`` for the item with a
``nextitem`` whose chain is the item's parent chain, so only the function
scope is torn down here; the parent owns every other finalizer.  Each phase
report is sent to the parent the moment it exists, through pytest's own
serialization hook, preceded by the warnings recorded during that phase.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, Generator, List, Optional, Sequence, Tuple

import pytest
from _pytest.runner import runtestprotocol
from isolate_runtime import send_message

from .cov import KIND as COVERAGE
from .cov import SandboxCoverage
from .reports import to_wire


class ParentScope:
    """Stands in for ``nextitem`` in the sandbox: its chain is the test's
    parent chain, so ``SetupState.teardown_exact`` stops at the function
    scope and never runs a finalizer the parent owns."""

    def __init__(self, chain: Sequence[Any]) -> None:
        self._chain = list(chain)
        self.nodeid = chain[-1].nodeid if chain else ""

    def listchain(self) -> List[Any]:
        return list(self._chain)


class ChildSide:
    """Registered in every pytest process; acts only in a sandbox, where
    ``active`` is the item being run."""

    def __init__(self) -> None:
        self.active: Optional[pytest.Item] = None
        self.pid = 0
        self.log: List[warnings.WarningMessage] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.active is item:
            item.ihook.pytest_isolate_child_setup(item=item)

    # Outermost wrapper: sees the report after every other plugin (skipping,
    # tmp_path, ...) has shaped it.
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Generator[None, Any, None]:
        outcome = yield
        if self.active is None:
            return
        if os.getpid() != self.pid:
            # The test forked and the child returned into pytest instead of
            # calling os._exit: end that stray copy of the session here.
            sys.stderr.write("pytest-isolate: a process forked by the test returned into pytest; "
                             "ending it (call os._exit in forked children)\n")
            os._exit(70)
        report = outcome.get_result()
        report.sections = merge_sections(report.sections)
        self.send_warnings()
        send_message(("report", to_wire(item.config, report)))

    def send_warnings(self) -> None:
        pending, self.log[:] = list(self.log), []
        for w in pending:
            cat = w.category
            send_message(("warning", str(w.message), cat.__module__, cat.__qualname__, w.filename, w.lineno))


def merge_sections(sections: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """One section per title: the parent's part of a phase (higher-scoped
    setup output) and the sandbox's part are one phase to the user."""
    out: Dict[str, str] = {}
    for title, content in sections:
        out[title] = out.get(title, "") + content
    return list(out.items())


def run_item(side: ChildSide, item: pytest.Item, chain: Sequence[Any]) -> Dict[str, Any]:
    """The sandbox payload: returns how the protocol ended."""
    side.active, side.pid = item, os.getpid()
    coverage = SandboxCoverage.take_over()
    nextitem = ParentScope(chain)
    ended: Dict[str, Any] = {"done": True}
    try:
        with warnings.catch_warnings(record=True) as log:
            assert log is not None
            side.log = log
            try:
                runtestprotocol(item, log=False, nextitem=nextitem)  # type: ignore[arg-type]
            except pytest.exit.Exception as e:
                ended = {"exit": (e.msg, e.returncode)}
            except KeyboardInterrupt:
                ended = {"interrupt": True}
            if "done" not in ended:
                # As pytest's session finish would: the function scope still
                # gets its finalizers, without a report.
                try:
                    item.session._setupstate.teardown_exact(nextitem)  # type: ignore[arg-type]
                except BaseException:
                    pass
            side.send_warnings()
        if coverage is not None:
            blob = coverage.payload()
            if blob is not None:
                send_message((COVERAGE, blob))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return ended
