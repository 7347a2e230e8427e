"""``--isolate-jobs N``: up to N isolated tests in flight from one pytest process.

pytest still runs one test's protocol at a time (its own loop, or an xdist
worker's), and every test is still logged whole and in order: its
``logstart``, its reports, its ``logfinish``, before anything of the next
one.  What changes is when the sandboxes start.  While test *i*'s protocol
runs, the tests pytest will run next (``session.items``; in an xdist worker,
the ones the controller has sent it) are *dispatched* in their order: the
parent sets up their higher scopes, forks their sandboxes and lets them
run.  Their messages are read as they come (a sandbox whose pipe is full
would stop) and checked, but what they ask of pytest waits for their own
protocol (:class:`~pytest_isolate.replay.Replay`, ``live=False``)::

    protocol(i)   logstart(i); dispatch i unless it was dispatched ahead
                  top up: dispatch the next tests while they may start
                  wait on every sandbox in flight at once (wait_any: each
                  keeps its own timeout and budgets), logging i's messages
                  as they come; top up again whenever one ends
                  finish i as every isolated test is finished; logfinish(i)

The next test is dispatched only while (otherwise the look-ahead stops at
it, and it waits for its turn):

- it is isolated and sandboxed by the runtime (a test that runs in-process,
  or under another launcher, reaches its turn with nothing in flight);
- no other plugin runs its protocol (a test pytest-rerunfailures reruns
  has each try isolated at its turn, with nothing in flight:
  :mod:`.phased`);
- the parent's share of its setup tears nothing down
  (:func:`scopes.setup_only`): a scope is torn down after its last test,
  at that test's turn, never under a running sandbox;
- it fits the budget beside the tests running (:mod:`.admission`): fewer
  than N running, memory and ``cpus``, nothing ``exclusive``;
- fewer than ``AHEAD * N`` tests are dispatched and not yet reported, and
  the session is not stopping (``-x``).

Once the report that stops the session (``-x``, ``--maxfail``) is logged,
the tests dispatched after it are killed, unreported: as if they had never
started.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence

import isolate_runtime
import pytest
from isolate_runtime import SandboxResult

from . import admission, compat, phased, protocol, scopes
from .replay import Replay
from .settings import settings_key

if TYPE_CHECKING:
    from .plugin import IsolateSession
    from .settings import ItemSettings


@contextlib.contextmanager
def _sigint_noted() -> Iterator[Callable[[], bool]]:
    """Tell a Ctrl-C from a KeyboardInterrupt that code raised: the
    function it gives says whether SIGINT arrived meanwhile, or that it
    cannot tell (True: taken as a Ctrl-C).  The signal's wake-up byte says
    so (``signal.set_wakeup_fd``): SIGINT's handler stays Python's own, as
    a fixture may look at it or save and restore it.  Only in the main
    thread, and only where nobody else has a wake-up descriptor set."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: True
        return
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous, warn_on_full_buffer=False)  # someone else's: theirs
        os.close(r)
        os.close(w)
        yield lambda: True
        return

    def arrived() -> bool:
        try:
            return signal.SIGINT in os.read(r, 4096)
        except BlockingIOError:  # no signal arrived
            return False
        except OSError:
            return True

    try:
        yield arrived
    finally:
        current = signal.set_wakeup_fd(-1)
        if current != w:
            signal.set_wakeup_fd(current)  # set meanwhile by the fixture: it stays
        os.close(r)
        os.close(w)


class Entry:
    """One dispatched test: its sandbox, what it sent so far, how it ended."""

    def __init__(self, item: pytest.Item, flight: protocol.InFlight, replay: Replay, demand: admission.Demand,
                 warned: List[warnings.WarningMessage], note: Optional[str]) -> None:
        self.item = item
        self.flight = flight
        self.replay = replay
        self.demand = demand
        #: What the parent's share of its setup warned (reported at its turn).
        self.warned = warned
        #: Why it runs alone, if its budget says so.
        self.note = note
        #: Its higher-scoped fixtures when it was forked (checked at its turn).
        self.fixtures = scopes.fixture_values(item)
        #: Its sandbox has ended (its result is collected right after).
        self.ended = False
        self.result: Optional[SandboxResult] = None
        #: The higher-scoped fixtures set up for it alone, ahead (see stop()).
        self.ahead: List[Any] = []

    @property
    def running(self) -> bool:
        return not self.ended


class Scheduler:
    """The tests in flight of one pytest process (see the module docstring)."""

    def __init__(self, session: "IsolateSession", budget: admission.Budget) -> None:
        self.session = session
        self.budget = budget
        #: Dispatched and not yet reported, in order; the first is the test
        #: whose protocol runs.
        self.window: List[Entry] = []
        #: The test being finished (stop() leaves it to its protocol).
        self.current: Optional[Entry] = None
        #: The last test whose parent setup was done here: the setup stack
        #: is its chain.
        self.last_prepared: Optional[pytest.Item] = None
        #: A test the look-ahead could not start (its parent setup failed,
        #: or its sandbox could not be made) and what that setup warned: it
        #: runs at its turn, alone.
        self.deferred: Optional[pytest.Item] = None
        self.deferred_warned: List[warnings.WarningMessage] = []
        #: What its parent setup raised, if that is why it could not start.
        self.deferred_failure: Optional[BaseException] = None
        #: The higher-scoped fixtures set up for the deferred test (see stop()).
        self.deferred_ahead: List[Any] = []
        self._peaks: Optional[Any] = None
        self._index: Dict[int, int] = {}
        self._nextitem: Optional[pytest.Item] = None
        self._worker = compat.xdist_worker(session.config)
        # Their cgroups weigh as much CPU as that many processes (not one).
        isolate_runtime.running_at_once(budget.jobs)

    # ------------------------------------------------------------------ one test's protocol

    def run(self, item: pytest.Item, nextitem: Optional[pytest.Item], s: "ItemSettings") -> None:
        """pytest_runtest_protocol of an isolated test."""
        self._nextitem = nextitem
        # A test set up ahead whose parent setup failed keeps its failure
        # until its own turn (a turn of a test before it must not lose it:
        # it would be set up a second time)
        warned: List[warnings.WarningMessage] = []
        failure: Optional[BaseException] = None
        if self.deferred is item:
            warned, failure = self.deferred_warned, self.deferred_failure
            self.deferred, self.deferred_warned, self.deferred_failure = None, [], None
            self.deferred_ahead = []
        try:
            entry = self._line_up(item)
            if entry is None:
                entry = self._start_here(item, nextitem, s, warned, failure)
                if entry is None:
                    return
            else:
                item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
                entry.replay.go_live()
            self._top_up()
            self._wait(entry)
            self._finish(entry, nextitem)
        except BaseException:
            scopes.drop_ahead(item, self.stop())
            raise
        if item.session.shouldfail or item.session.shouldstop:
            # (stopped by its teardown report: its fixtures are torn down)
            scopes.drop_ahead(item, self.stop())

    def before_in_process(self, item: pytest.Item) -> None:
        """A test about to run pytest's own protocol here: nothing may be in
        flight, and the setup stack must lead to it."""
        if self.window or self.deferred is not None:
            self.stop()
            scopes.enter(item)

    def _line_up(self, item: pytest.Item) -> Optional[Entry]:
        """The entry of ``item`` if it was dispatched ahead and its copy of
        the parent is still current; what was dispatched before it (a
        runner that went another way) is dropped."""
        while self.window and self.window[0].item is not item:
            self._drop(self.window.pop(0))
        if not self.window:
            return None
        entry = self.window[0]
        if entry.fixtures != scopes.fixture_values(item):
            # A hook of the parent replaced a fixture value this test uses
            # after its sandbox was forked: that copy is stale.  It runs
            # again, from the parent as it is now (and the tests after it
            # when their turn comes).
            self.stop()
            return None
        return entry

    def _start_here(self, item: pytest.Item, nextitem: Optional[pytest.Item], s: "ItemSettings",
                    warned: List[warnings.WarningMessage], failure: Optional[BaseException]) -> Optional[Entry]:
        """Dispatch the test at its own turn (nothing is in flight).
        ``failure``: what the parent's share of its setup raised when it was
        tried ahead (reported, not tried again)."""
        if not self._sandboxed(item):
            protocol.run_isolated(item, nextitem, s, self.session)
            self._report_warned(item, warned)
            return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        chain = item.listchain()[:-1]
        if failure is None:
            scopes.enter(item)
        if failure is None:
            with scopes.capture(item, "setup"):
                failure = scopes.prepare_parent(item, chain)
        self.last_prepared = item
        if failure is not None:
            protocol.run_in_process(item, nextitem, failure)
            self._report_warned(item, warned)
            return None
        d = self._demand(item, s)
        flight = protocol.InFlight.launch(item, s, self.session, chain, prefork=False, watched=True)
        entry = Entry(item, flight, Replay(item), d, warned, self._alone_note(d))
        self.window.insert(0, entry)
        flight.start(entry.replay.on_message)
        return entry

    def _finish(self, entry: Entry, nextitem: Optional[pytest.Item]) -> None:
        item = entry.item
        assert entry.result is not None
        # The scopes pytest would tear down now are left alone while a test
        # dispatched after this one runs in them (there are none to tear
        # down then: see setup_only).
        target = self.last_prepared if len(self.window) > 1 else nextitem
        self.current = entry
        try:
            protocol._finish(item, target, self.session, entry.flight, entry.replay, entry.result)
        finally:
            self.current = None
            entry.flight.output.close()
            if self.window and self.window[0] is entry:
                self.window.pop(0)
        if entry.note is not None:
            admission.ran_alone(item, entry.note)
        self._report_warned(item, entry.warned)

    def _wait(self, head: Entry) -> None:
        """Until ``head`` has ended; every sandbox in flight is stepped
        meanwhile, and the window topped up as they end."""
        protocol.stop_watchdog()
        while head.running:
            running = {id(e.flight.sandbox): e for e in self.window if e.running}
            ended = [running[id(sb)] for sb in isolate_runtime.wait_any([e.flight.sandbox for e in running.values()])]
            for e in ended:
                e.ended = True
            if ended:
                self._top_up()  # first: the next sandboxes start while these results are read
            for e in ended:
                e.result = e.flight.collect()

    # ------------------------------------------------------------------ dispatch ahead

    def _top_up(self) -> None:
        if not self.window:
            return
        head = self.window[0].item
        if head.session.shouldfail or head.session.shouldstop:
            return
        limit = self.budget.jobs * admission.AHEAD
        ahead = self._upcoming(head, limit)
        for k, e in enumerate(self.window[1:]):
            if k >= len(ahead) or ahead[k] is not e.item:
                # The runner will not run it next (an xdist worker whose
                # tests were taken for another): it and those after it go.
                for dropped in self.window[k + 1:]:
                    self._drop(dropped)
                del self.window[k + 1:]
                break
        for item in ahead[len(self.window) - 1:]:
            if len(self.window) >= limit or item is self.deferred or not self._may_start(item):
                return
            entry = self._dispatch(item)
            if entry is None:
                return
            self.window.append(entry)

    def _may_start(self, item: pytest.Item) -> bool:
        s = item.stash.get(settings_key, None)
        if s is None or not s.isolated.value or scopes.runs_in_process(item) or not self._sandboxed(item):
            return False
        if phased.may_take(item):
            return False  # its tries are another plugin's protocol's, at its turn
        running = [e.demand for e in self.window if e.running]
        if not self.budget.fits(running, self._demand(item, s)):
            return False
        return scopes.setup_only(item)

    def _dispatch(self, item: pytest.Item) -> Optional[Entry]:
        """Set up the parent's share of ``item`` and start its sandbox; under
        the warning filters pytest gives it, and what is warned kept for its
        turn.  ``None``: it could not start; it does at its turn."""
        s = item.stash[settings_key]
        chain = item.listchain()[:-1]
        warned: List[warnings.WarningMessage] = []
        failure: Optional[BaseException] = None
        set_up: List[Any] = []
        try:
            with compat.item_warnings(item, warned):
                scopes.enter(item)
                # A fixture set up here may take a while: the tests in
                # flight keep their timeouts meanwhile (the runtime's keeper
                # watches them).
                running = [e.flight.sandbox for e in self.window if e.running and e.flight.sandbox is not None] \
                    if scopes.sets_up_anything(item, chain) else []
                with isolate_runtime.busy(running), scopes.capture(item, "setup"), _sigint_noted() as ctrl_c, \
                        scopes.recording_setups() as set_up:
                    try:
                        failure = scopes.prepare_parent(item, chain)
                    except KeyboardInterrupt as stop:
                        if ctrl_c():
                            raise  # a Ctrl-C (or one this process cannot tell from it): now
                        # A fixture's KeyboardInterrupt: in a sequential run
                        # it comes at this test's setup, after the tests in
                        # flight are done and reported (so does its
                        # pytest.exit(), a setup failure like any other).
                        failure = stop
                self.last_prepared = item
                flight = protocol.InFlight.launch(item, s, self.session, chain, prefork=False, watched=True) \
                    if failure is None else None
        except Exception:  # noqa: S110 - its own turn tries again and reports what goes wrong
            flight = None
        ahead = [(item, d) for d in set_up]
        if flight is None:
            # A failed parent setup is reported at its turn as it failed
            # here, not tried a second time.
            self.deferred, self.deferred_warned, self.deferred_failure = item, warned, failure
            self.deferred_ahead = ahead
            return None
        d = self._demand(item, s)
        entry = Entry(item, flight, Replay(item, live=False), d, warned, self._alone_note(d))
        entry.ahead = ahead
        flight.start(entry.replay.on_message)
        return entry

    def _upcoming(self, head: pytest.Item, limit: int) -> List[pytest.Item]:
        """The tests the runner will run after ``head``, in its order (at most
        ``limit``): an xdist worker's queue, or ``session.items``."""
        nextitem = self._nextitem
        if nextitem is None:
            return []
        items: Sequence[pytest.Item] = head.session.items
        queue = compat.xdist_queue(self._worker) if self._worker is not None else None
        if queue is not None:
            got = [items[i] for i in queue[:limit + 1] if 0 <= i < len(items)]
            if not got or got[0] is not nextitem:
                got.insert(0, nextitem)
            return got[:limit]
        if len(self._index) != len(items):
            self._index = {id(it): n for n, it in enumerate(items)}
        n = self._index.get(id(head))
        if n is None or n + 1 >= len(items) or items[n] is not head or items[n + 1] is not nextitem:
            return [nextitem]  # a runner of its own order: only the next test is known
        return list(items[n + 1:n + 1 + limit])

    # ------------------------------------------------------------------ ending tests unreported

    def stop(self) -> List[Any]:
        """End every dispatched test unreported (the session stops, or
        their turn comes later and they start again), but the one being
        finished; the higher-scoped fixtures set up ahead for those alone,
        as (item, fixture definition), in the order they were set up."""
        keep = [e for e in self.window if e is self.current]
        ahead: List[Any] = []
        for e in self.window:
            if e not in keep:
                self._drop(e)
                ahead += e.ahead
        ahead += self.deferred_ahead
        self.window = keep
        self.deferred, self.deferred_warned, self.deferred_failure = None, [], None
        self.deferred_ahead = []
        return ahead

    @staticmethod
    def _drop(entry: Entry) -> None:
        entry.flight.discard()
        entry.flight.output.close()

    # ------------------------------------------------------------------ helpers

    def _sandboxed(self, item: pytest.Item) -> bool:
        return item.ihook.pytest_isolate_launcher(item=item) is isolate_runtime.run

    def _demand(self, item: pytest.Item, s: "ItemSettings") -> admission.Demand:
        if self._peaks is None:
            self._peaks = admission.last_peaks(item.config)
        figures = self._peaks.get(item.nodeid)
        peak = figures.get("peak_memory_bytes") if isinstance(figures, dict) else None
        return admission.demand(s, peak if isinstance(peak, int) else None)

    def _alone_note(self, d: admission.Demand) -> Optional[str]:
        why = self.budget.alone(d)
        return None if why is None or d.exclusive else why

    @staticmethod
    def _report_warned(item: pytest.Item, warned: List[warnings.WarningMessage]) -> None:
        for message in warned:
            item.ihook.pytest_warning_recorded.call_historic(
                kwargs=dict(warning_message=message, nodeid=item.nodeid, when="runtest", location=None))


__all__ = ["Entry", "Scheduler"]
