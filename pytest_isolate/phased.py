"""An isolated test whose protocol another plugin runs: isolated phase by phase.

pytest-rerunfailures runs a test's protocol itself, once per try
(``runtestprotocol(item, log=False)``), and then decides what to log and
whether to try again.  pytest-isolate's own protocol hook comes first for an
isolated test; it offers the test to such plugins before it runs it itself
(:func:`offer`).  When one of them takes it, every try is isolated through
the phase hooks that plugin's protocol calls::

    setup       the parent's share of the setup (scopes.prepare_parent), as
                the test's setup: what it raises is the setup's error, as
                in-process; then a fresh sandbox runs the function scope,
                setup to teardown, and its reports are kept (subtests'
                reports are logged as they arrive); the item counts as set
                up, so pytest's own setup sets nothing up here
    call        no test code runs here (the item's runtest is a no-op)
    makereport  each phase's report is the sandbox's, the teardown's with
                the parent's teardown of the higher scopes folded in

A plugin that runs the protocol before pytest-isolate's hook could (a
``tryfirst`` one) gets the same.  Other plugins' setup, call and teardown
hooks then run in this process too, with no test code to act on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pytest

from . import child, compat, protocol, reports, scopes
from .replay import Replay
from .settings import settings_key

if TYPE_CHECKING:
    from .plugin import IsolateSession

#: Set while pytest-isolate's own protocol runs the item.
own_key = pytest.StashKey[bool]()
#: The try of an item whose protocol another plugin runs, between its
#: setup and its teardown report.
run_key = pytest.StashKey["PhasedRun"]()


def _theirs(item: pytest.Item, ours: Optional[object] = None) -> List[Any]:
    """The ``pytest_runtest_protocol`` implementations pluggy calls after
    pytest-isolate's (``ours``; by default the plugin module), in its
    order; wrappers and pytest's own (the runner's, whose place
    pytest-isolate's protocol takes) are left out."""
    impls = item.ihook.pytest_runtest_protocol.get_hookimpls()
    if ours is None:
        mine = next((i for i, impl in enumerate(impls) if getattr(impl.plugin, "__name__", None) == _PLUGIN), None)
    else:
        mine = next((i for i, impl in enumerate(impls) if impl.plugin is ours), None)
    if mine is None:
        return []
    # pluggy calls the implementations from the last one registered (and
    # tryfirst) to the first (and trylast); wrappers sit apart.
    return [impl for impl in reversed(impls[:mine])
            if not (impl.hookwrapper or getattr(impl, "wrapper", False) or impl.plugin_name == "runner")]


#: The module whose ``pytest_runtest_protocol`` is pytest-isolate's.
_PLUGIN = "pytest_isolate.plugin"


def offer(item: pytest.Item, nextitem: Optional[pytest.Item], ours: object) -> Optional[object]:
    """Offer the test to the plugins whose ``pytest_runtest_protocol`` comes
    after pytest-isolate's (``ours``), in pluggy's order; the first answer
    that is not None is the hook's."""
    for impl in _theirs(item, ours):
        kwargs = {"item": item, "nextitem": nextitem}
        answer: object = impl.function(*[kwargs[name] for name in impl.argnames])
        if answer is not None:
            return answer
    return None


def _rerunfailures_takes(plugin: Any, item: pytest.Item) -> bool:
    return plugin.get_reruns_count(item) is not None


def _forked_takes(plugin: Any, item: pytest.Item) -> bool:
    return bool(item.config.getvalue("forked") or item.get_closest_marker("forked"))


#: Plugins known to run the protocol of some tests only, by module, and how
#: to tell which (what their own hook checks first).
_TAKES = {"pytest_rerunfailures": _rerunfailures_takes, "pytest_forked": _forked_takes}


def may_take(item: pytest.Item) -> bool:
    """Might :func:`offer` hand the test to another plugin's protocol?  Such
    a test runs with nothing else in flight (``--isolate-jobs``), as its
    tries are that plugin's.  Of the plugins in ``_TAKES`` the answer is
    theirs; of any other plugin it is yes."""
    for impl in _theirs(item):
        takes = _TAKES.get(getattr(impl.plugin, "__name__", ""))
        if takes is not None:
            try:
                if not takes(impl.plugin, item):
                    continue
            except Exception:  # noqa: S110 - unsure: it may take it
                pass
        return True
    return False


def wanted(item: pytest.Item, session: "IsolateSession") -> bool:
    """Does this test's setup start an isolated try (an isolated test whose
    protocol is not pytest-isolate's own, in the pytest process)?"""
    side = session.child_side
    return (side is not None and side.active is None and not item.stash.get(own_key, False)
            and session.sandboxed(item) and not scopes.runs_in_process(item))


class PhasedRun:
    """One try of the test: its sandbox's reports, handed out phase by phase."""

    def __init__(self, item: pytest.Item, session: "IsolateSession") -> None:
        self.item = item
        self.session = session
        self.reports: Dict[str, pytest.TestReport] = {}
        self.settled: Optional[protocol.Settled] = None
        #: How many output sections the item had when the sandbox was forked:
        #: the parent's share of this try's output comes after them.
        self.sections_at_fork = 0

    def setup(self) -> None:
        __tracebackhide__ = True
        item, session = self.item, self.session
        # A sandbox prepared ahead for this test by the test before (and
        # perhaps already running it) is this try's, if what it copied is
        # still current: as in pytest-isolate's own protocol.
        ahead, session.held = session.held, None
        if ahead is not None and ahead.item is not item:
            ahead.discard()
            ahead = None
        chain = item.listchain()[:-1]
        failure = scopes.prepare_parent(item, chain)
        if ahead is not None and not (failure is None and ahead.fingerprint == scopes.fingerprint(item)):
            ahead.discard()
            ahead = None
        if failure is not None:
            compat.note_xfail(item)  # (pytest's skipping hook has not run here yet)
            raise failure
        replay = Replay(item, log=False)
        self.sections_at_fork = len(compat.report_sections(item))
        flight = ahead or protocol.InFlight.launch(item, item.stash[settings_key], session, chain, prefork=False)
        if flight.started:  # released early: it has been timing the test since
            replay.since = min(replay.since, flight.started)
        try:
            # This hook runs under capture; what the terminal prints for a
            # subtest is the user's to see.
            with compat.capture_suspended(item.config):
                result = flight.result(replay.on_message)
            self.settled = protocol.settle(item, flight, replay, result)
        finally:
            flight.output.close()
        self.reports = {report.when: report for report in replay.collected}
        # The item counts as set up: pytest's own setup sets nothing up here,
        # and its teardown takes the item off the stack with the others.
        compat.setup_stack(item)[item] = ([], None)
        if "call" in self.reports:
            item.runtest = _no_test_code  # type: ignore[method-assign]
        item.stash[run_key] = self

    def report(self, call: "pytest.CallInfo[None]") -> Optional[pytest.TestReport]:
        """The report of the phase ``call`` ended (None: pytest's own)."""
        item, settled = self.item, self.settled
        if call.when == "setup":
            if call.excinfo is not None or settled is None:
                return None
            return self._with_parent_sections(self.reports["setup"])
        item.__dict__.pop("runtest", None)
        if call.when == "call":
            got = self.reports.get("call")
            if got is None:  # pragma: no cover - the sandbox's setup passed, so it reported a call or died in it
                assert settled is not None
                got = reports.synthetic(item, "call", settled.result, [], 0.0)
            return self._with_parent_sections(got)
        del item.stash[run_key]
        assert settled is not None
        parent_report = None if call.excinfo is None else pytest.TestReport.from_item_and_call(item, call)
        teardown = scopes.fold_teardown(self._with_parent_sections(settled.teardown), parent_report, call.duration)
        item.ihook.pytest_isolate_stats(item=item, result=settled.result, report=teardown)
        item.ihook.pytest_isolate_result(item=item, result=settled.result)
        return teardown

    def _with_parent_sections(self, report: pytest.TestReport) -> pytest.TestReport:
        """The sandbox's report with what this process printed in this try
        (its share of setup, of teardown) where pytest would put it."""
        parent = [(f"Captured {key} {when}", content)
                  for when, key, content in compat.report_sections(self.item)[self.sections_at_fork:] if content]
        before: List[Any] = [x for x in parent if not x[0].endswith(" teardown")]
        after: List[Any] = [x for x in parent if x[0].endswith(" teardown")]
        report.sections = child.merge_sections(before + list(report.sections) + after)
        return report


def _no_test_code() -> None:
    """The item's ``runtest`` in this process while its sandbox ran it."""


def setup(item: pytest.Item, session: "IsolateSession") -> None:
    if wanted(item, session):
        PhasedRun(item, session).setup()


def report(item: pytest.Item, call: "pytest.CallInfo[None]") -> Optional[pytest.TestReport]:
    run = item.stash.get(run_key, None)
    return None if run is None else run.report(call)


__all__ = ["PhasedRun", "may_take", "offer", "own_key", "report", "run_key", "setup", "wanted"]
