"""The parent side of one isolated test: its flow, and the life of its sandbox.

::

    logstart
    parent: set up the collector chain and the item's higher-scoped
            fixtures (scopes.py), so their finalizers stay the parent's
    sandbox: function-scoped setup, call, function-scoped teardown; each
            report streams back as plain data, is checked (messages.py) and
            logged (replay.py; the call report once the sandbox has also
            reported its teardown)
    parent: teardown_exact(nextitem) for the higher scopes, folded into the
            teardown report; synthetic reports for a sandbox that died
    logfinish

If preparing the higher scopes fails, the test runs pytest's own protocol
in this process instead, whose setup raises that error again (nothing is
set up a second time): pytest reports it as it would have, and no test
code runs here.  The next test's sandbox may be prepared ahead while this one runs
(:func:`_prefork`) and released before its turn (:func:`_release_early`).
"""
from __future__ import annotations

import dataclasses
import enum
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

import isolate_runtime
import pytest
from isolate_runtime import CallablePayload, Limits, Outcome, ProtocolViolation, SandboxResult, SandboxSpec

from . import child, compat, messages, reports, scopes
from .replay import Replay, SandboxOutput
from .settings import settings_key

if TYPE_CHECKING:
    from .plugin import IsolateSession
    from .settings import ItemSettings


def build_spec(item: pytest.Item, s: "ItemSettings", session: "IsolateSession", chain: Sequence[Any],
               output: SandboxOutput) -> SandboxSpec:
    limits = Limits(memory_bytes=s.memory.value, cpus=s.cpus.value, cpu_time_seconds=s.cpu_time.value,
                    pids=s.pids.value)
    writable = session.writable_base() + session.declared_writable + tuple(s.writable.value or ())
    message_limit = int(session.settings["message_limit"].value)
    network, forward = ("services", s.network.value) if isinstance(s.network.value, tuple) else (s.network.value, ())
    spec = SandboxSpec(
        payload=CallablePayload(child.run_item, (session.child_side, item, tuple(chain), tuple(output.fds),
                                                   compat.rerunfailures_suite_reruns(item.config))),
        limits=limits, timeout_seconds=s.timeout.value, root=bool(s.root.value), network=network, forward=forward,
        pid=s.pid.value,
        writable=tuple(dict.fromkeys(writable)), visible=session.visible_base(), layers=session.layers,
        label=item.nodeid, message_limit_bytes=message_limit,
        withhold_fds=session.withheld_fds() + output.others(),
        # Explicit: the runtime's default is taken after the root pivot.
        cwd=os.getcwd(),
    )
    caller = item.ihook.pytest_isolate_modify_spec
    for impl in reversed(caller.get_hookimpls()):
        kwargs = {"item": item, "spec": spec}
        changed = impl.function(*[kwargs[a] for a in impl.argnames])
        if isinstance(changed, SandboxSpec):
            spec = changed
    return spec


#: Report section listing what the test wrote outside its writable paths
#: ("teardown" in the title makes the terminal show it with the test).
DISCARDED_TITLE = "pytest-isolate: writes discarded at sandbox teardown"
#: Report section: what the network relay refused or could not do for the
#: test (connections past the cap, a service that stopped listening).
NETWORK_TITLE = "pytest-isolate: network relay, at sandbox teardown"


def run_isolated(item: pytest.Item, nextitem: Optional[pytest.Item], s: "ItemSettings",
                 session: "IsolateSession") -> None:
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    chain = item.listchain()[:-1]
    ahead: Optional[InFlight] = session.held
    session.held = None
    if ahead is not None and ahead.item is not item:
        ahead.discard()
        ahead = None
    with scopes.capture(item, "setup"):
        failure = scopes.prepare_parent(item, chain)
    if ahead is not None and not (failure is None and ahead.fingerprint == scopes.fingerprint(item)):
        # The parent's setup for this test changed something after the
        # sandbox was forked: its copy is stale.
        ahead.discard()
        ahead = None
    if failure is not None:
        run_in_process(item, nextitem, failure)
        return
    replay = Replay(item)
    if ahead is not None:
        flight = ahead
        if flight.started:  # released early: it has been timing the test since
            replay.since = min(replay.since, flight.started)
    else:
        flight = InFlight.launch(item, s, session, chain, prefork=False)
    try:
        if flight.sandbox is not None:
            flight.release()
            if nextitem is not None:
                session.held = _prefork(item, nextitem, chain, session)
        result = flight.result(replay.on_message)
        _finish(item, nextitem, session, flight, replay, result)
    finally:
        flight.output.close()


def run_in_process(item: pytest.Item, nextitem: Optional[pytest.Item], failure: BaseException) -> None:
    """After ``logstart``, for a test whose parent setup failed with
    ``failure``: pytest's own protocol, here, whose setup raises it again
    (:func:`scopes.raise_failed_setup`), reports that error (no test code
    runs, nothing is set up a second time)."""
    item.stash[scopes.failed_setup_key] = failure
    try:
        compat.runtestprotocol(item, nextitem=nextitem, log=True)
    finally:
        if scopes.failed_setup_key in item.stash:  # a plugin's setup hook raised first
            del item.stash[scopes.failed_setup_key]
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _finish(item: pytest.Item, nextitem: Optional[pytest.Item], session: "IsolateSession", flight: "InFlight",
            replay: Replay, result: SandboxResult) -> None:
    ihook = item.ihook
    try:
        settled = settle(item, flight, replay, result)
    except (pytest.exit.Exception, KeyboardInterrupt):
        # the test's own pytest.exit() or KeyboardInterrupt ends the session
        # here: nothing after it runs, and nothing set up ahead for it stays
        if session.jobs is not None:
            scopes.drop_ahead(item, session.jobs.stop())
        raise
    if session.jobs is not None and (item.session.shouldfail or item.session.shouldstop):
        # -x and friends: the tests started after this one end unreported,
        # before the teardown of the scopes they run in, and so do the
        # scopes set up ahead for them alone.
        scopes.drop_ahead(item, session.jobs.stop())
    idle = scopes.teardown_is_noop(item, nextitem)
    # Nothing to tear down: no capture either (the next sandbox may be running).
    teardown = scopes.parent_teardown(item, nextitem, settled.teardown, capture_output=not idle)
    ihook.pytest_isolate_stats(item=item, result=settled.result, report=teardown)  # before junitxml reads it
    if idle and settled.ended is not None and settled.ended.how == "done":
        _release_early(item, nextitem, session, replay.reports + [teardown])
    ihook.pytest_runtest_logreport(report=teardown)
    ihook.pytest_isolate_result(item=item, result=settled.result)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


@dataclasses.dataclass(frozen=True)
class Settled:
    """How an isolated test's sandbox ended, in reports."""

    #: How its protocol ended (``None``: it did not say, it died).
    ended: Optional[messages.End]
    #: The runtime's result (``REJECTED`` if how it ended was not readable).
    result: SandboxResult
    #: The sandbox's teardown report (a synthetic one if it died): the
    #: parent's teardown of the higher scopes is still to be folded in.
    teardown: pytest.TestReport


def settle(item: pytest.Item, flight: "InFlight", replay: Replay, result: SandboxResult) -> Settled:
    """Turn the sandbox's end into reports: every report but the teardown's
    is emitted through ``replay`` (the call report once it is believed,
    synthetic ones for the phase a dead sandbox was in); the teardown's is
    returned.  ``pytest.exit`` and KeyboardInterrupt in the test are raised
    here, as they would be in-process."""
    ended: Optional[messages.End] = None
    if replay.refused is not None and result.outcome is Outcome.OK:
        # A plugin refused its data at the test's turn, after the sandbox
        # (started ahead) was let go: as if it had been refused at once.
        result = dataclasses.replace(result, outcome=Outcome.REJECTED, evidence=replay.refused)
    elif result.outcome is Outcome.OK:
        try:
            ended = messages.check_end(result.value)
        except ProtocolViolation as e:
            result = dataclasses.replace(result, outcome=Outcome.REJECTED, evidence=e.reason)
    if ended is not None and ended.how == "exit":
        replay.log_held_call()
        raise pytest.exit.Exception(ended.message, ended.returncode)
    if ended is not None and ended.how == "interrupt":
        replay.log_held_call()
        raise KeyboardInterrupt
    replay.store_cache()
    teardown = replay.teardown
    if ended is None:
        phase = replay.phase()
        sections = flight.output.sections(phase)
        props = replay.reports[-1].user_properties if replay.reports else list(item.user_properties)
        if replay.held_call is not None and teardown is not None:
            # Every phase reported, and then the sandbox died: its word that
            # the call passed is not believed (a test may report success and
            # then exit with status 3).
            crash = reports.synthetic(item, "call", result, sections, replay.held_call.duration, props,
                                      after_reports=True)
            replay.held_call = None
            reports.honour_xfail(item, crash)
            replay.emit(crash)
        elif phase != "teardown":
            replay.log_held_call()
            crash = reports.synthetic(item, phase, result, sections, time.time() - flight.started, props)
            reports.honour_xfail(item, crash)
            replay.emit(crash)
            teardown = reports.passed_teardown(item, props)
        else:
            replay.log_held_call()
            if teardown is not None:
                sections = list(teardown.sections) + sections
            teardown = reports.synthetic(item, phase, result, sections, time.time() - flight.started, props)
    replay.log_held_call()
    if teardown is None:  # pragma: no cover - the child always reports teardown
        teardown = reports.passed_teardown(item)
    if result.written_paths:
        # writes outside the writable paths are reported, not silently lost
        teardown.sections.append((DISCARDED_TITLE, "\n".join(result.written_paths)))
    if result.network_notes:
        teardown.sections.append((NETWORK_TITLE, "\n".join(result.network_notes)))
    return Settled(ended, result, teardown)


def _flush_stdio() -> None:
    # The sandbox is a fork: whatever sits in this process's stdio buffers
    # (a higher-scoped fixture's print under -s, with stdout a pipe or file)
    # would be written a second time when the sandbox flushes its copy.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class State(enum.Enum):
    #: Forked and set up; its payload waits to be released.
    PREPARED = "prepared"
    #: Released: the test runs (or has run and waits to be collected).
    RUNNING = "running"
    #: Collected: its result was turned into reports.
    DONE = "done"
    #: Ended unreported (its test never came, or its copy went stale).
    DISCARDED = "discarded"


class InFlight:
    """One test's sandbox from its fork to its result, with the parent state
    it copied::

        PREPARED ──release()──▶ RUNNING ──wait()──▶ DONE
            └──discard()──▶ DISCARDED

    A sandbox made by a launcher other than the runtime's own (a plugin's
    fake, see ``pytest_isolate_launcher``) has no ``sandbox``: it runs when
    the launcher is called, straight from PREPARED to DONE."""

    def __init__(self, item: pytest.Item, spec: SandboxSpec, sandbox: Any, launcher: Any,
                 output: SandboxOutput, mark: Tuple[Any, ...]) -> None:
        self.item = item
        self.spec = spec
        self.sandbox = sandbox
        self.launcher = launcher
        self.output = output
        self.fingerprint = mark
        self.state = State.PREPARED
        #: When its payload was released (0: not yet).
        self.started = 0.0

    @classmethod
    def launch(cls, item: pytest.Item, s: "ItemSettings", session: "IsolateSession", chain: Sequence[Any],
               prefork: bool, watched: bool = False) -> "InFlight":
        """Fork the test's sandbox (held).  ``watched``: one of many in
        flight (:meth:`start`, then the caller steps ``sandbox`` with
        ``isolate_runtime.wait_any``); needs the runtime's own launcher."""
        stop_watchdog()  # before the fork: a sandbox forked while it runs could never arm its own
        launcher = item.ihook.pytest_isolate_launcher(item=item)
        output = SandboxOutput(item.config)
        # pytest computes (and caches) these on first use: here, once, rather
        # than in every sandbox and again in pytest's process at the test's
        # turn (a sandbox prepared ahead is forked before its logstart).
        item.location  # noqa: B018
        try:
            spec = build_spec(item, s, session, chain, output)
            mark = scopes.fingerprint(item) if prefork else ()
            _flush_stdio()
            held = launcher is isolate_runtime.run and (watched or _can_prefork(session, launcher))
            sandbox = isolate_runtime.prepare(spec) if held else None
        except BaseException:
            output.close()
            raise
        return cls(item, spec, sandbox, launcher, output, mark)

    @property
    def released(self) -> bool:
        return self.state is State.RUNNING

    def release(self) -> None:
        if self.state is State.PREPARED and self.sandbox is not None:
            self.sandbox.release()
            self.state, self.started = State.RUNNING, time.time()

    def result(self, on_message: Any) -> SandboxResult:
        """Run (a launcher's) or wait for (the runtime's) sandbox."""
        stop_watchdog()
        try:
            if self.sandbox is None:
                self.started = time.time()
                got: SandboxResult = self.launcher(self.spec, on_message=on_message)
            else:
                self.release()
                got = self.sandbox.wait(on_message)
        finally:
            self.state = State.DONE
        return got

    def start(self, on_message: Any) -> None:
        """Release it and watch it (one of many in flight)."""
        stop_watchdog()
        self.release()
        self.sandbox.watch(on_message)

    def collect(self) -> SandboxResult:
        """How it ended, once ``isolate_runtime.wait_any`` said it has."""
        try:
            got: SandboxResult = self.sandbox.result()
        finally:
            self.state = State.DONE
        return got

    def discard(self) -> None:
        """End it unreported (its test never came, or its copy is stale)."""
        if self.state is State.DONE:
            return
        if self.sandbox is not None:
            self.sandbox.discard()
        self.state = State.DISCARDED
        self.output.close()


def _can_prefork(session: "IsolateSession", launcher: Any) -> bool:
    # Under --isolate-jobs the scheduler starts the next tests itself.
    return bool(session.settings["prefork"].value) and session.jobs is None and launcher is isolate_runtime.run


def _prefork(item: pytest.Item, nextitem: pytest.Item, chain: Sequence[Any],
             session: "IsolateSession") -> Optional[InFlight]:
    """Fork and set up the next test's sandbox now, while this test runs on
    the other side (the sandbox's setup is then off the critical path).
    Only when the parent has nothing left to do for it; it is checked again
    before it is released (:func:`scopes.fingerprint`)."""
    try:
        s = nextitem.stash.get(settings_key, None)
        if s is None or not s.isolated.value or scopes.runs_in_process(nextitem):
            return None
        if not scopes.ready_for(item, nextitem, chain):
            return None
        if not _can_prefork(session, nextitem.ihook.pytest_isolate_launcher(item=nextitem)):
            return None
        return InFlight.launch(nextitem, s, session, chain, prefork=True)
    except Exception:  # noqa: S110 - the test is then prepared when its turn comes, and any error shows there
        return None


def _release_early(item: pytest.Item, nextitem: Optional[pytest.Item], session: "IsolateSession",
                   done: Sequence[pytest.TestReport]) -> None:
    """Let the next test's prepared sandbox start now, while this process
    logs this test's end and begins the next one (the parent's bookkeeping
    off the critical path).  Only when the parent has no
    teardown to do, this test failed in no phase (so ``-x``, ``--maxfail``,
    ``--sw`` or a rerun plugin cannot want the next one held back), the
    sandbox's copy of the parent is still current, and whatever the sandbox
    prints is captured (nothing interleaves with this test's last lines)."""
    ahead: Optional[InFlight] = session.held
    if ahead is None or ahead.item is not nextitem or ahead.released or ahead.sandbox is None:
        return
    if any(r.failed for r in done) or not _quiet_terminal(item.config):
        return
    if ahead.fingerprint != scopes.fingerprint(nextitem):
        return
    ahead.release()


def _quiet_terminal(config: pytest.Config) -> bool:
    """Is everything the next sandbox prints captured (not interleaved with
    this test's last lines on the terminal)?"""
    if config.pluginmanager.getplugin("capturemanager") is None:
        return False  # -p no:capture
    if config.getoption("capture", "fd") not in ("fd", "sys"):
        return False
    return not compat.log_cli_enabled(config)


def stop_watchdog() -> None:
    """pytest's ``faulthandler_timeout`` watchdog, armed in this process
    around the test's protocol, would dump this process's stack (waiting
    for the sandbox): the sandbox arms its own (child.run_item).  Stopped
    before a sandbox is forked too: a fork taken while the watchdog's
    thread runs inherits its lock held, and arming there would wait for
    that thread, which the fork does not have, for ever."""
    import faulthandler

    faulthandler.cancel_dump_traceback_later()
