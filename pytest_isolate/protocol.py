"""The parent side of one isolated test.

::

    logstart
    parent: set up the collector chain and the item's higher-scoped
            fixtures (session, package, module, class, xunit) on pytest's
            own SetupState, so their finalizers stay the parent's
    sandbox: function-scoped setup, call, function-scoped teardown;
            each report streams back as plain data, is checked
            (messages.py) and logged as it arrives (the call report once
            the sandbox has also reported its teardown)
    parent: teardown_exact(nextitem) for the higher scopes, folded into
            the teardown report; synthetic reports for a sandbox that died
    logfinish

If preparing the higher scopes fails, the test runs the normal protocol in
this process instead: the error is then reported exactly as pytest would
(SetupState and fixtures cache the failure), and no test code runs here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any, Iterator, List, Literal, Optional, Sequence, Tuple

import isolate_runtime
import pytest
from _pytest.runner import CallInfo, runtestprotocol
from isolate_runtime import CallablePayload, Limits, Outcome, ProtocolViolation, SandboxResult, SandboxSpec

from . import child, cov, messages, reports

if TYPE_CHECKING:
    from .plugin import IsolateSession
    from .settings import ItemSettings


class _Chain:
    """A ``SetupState.setup`` argument whose chain ends above the item."""

    def __init__(self, chain: Sequence[Any]) -> None:
        self._chain = list(chain)

    def listchain(self) -> List[Any]:
        return list(self._chain)


def prepare_parent(item: pytest.Item, chain: Sequence[Any]) -> bool:
    """Set up the collector chain and the item's non-function-scoped
    fixtures here, in pytest's order.  False if any of it raised."""
    if hasattr(item, "_request") and not item._request:  # re-run (pytest-rerunfailures)
        item._initrequest()  # type: ignore[attr-defined]
    try:
        item.session._setupstate.setup(_Chain(chain))  # type: ignore[arg-type]
        request = getattr(item, "_request", None)
        if not request:
            return True
        names = higher_scoped(item)
        if names:
            # The item counts as set up while its higher-scoped fixtures are
            # requested (pytest >= 9.2 warns about lookups for an inactive
            # node); it owns no finalizer of theirs, they go to their scope's
            # node, so its entry leaves the stack empty-handed.
            stack = item.session._setupstate.stack
            stack[item] = ([], None)
            try:
                for name in names:
                    request.getfixturevalue(name)
            finally:
                stack.pop(item, None)
    except (Exception, pytest.skip.Exception):  # skip: e.g. pytest.skip() in a session fixture
        # A fresh request for the in-process rerun: pytest 7's request keeps
        # a per-name lookup index that a failed lookup leaves decremented.
        if hasattr(item, "_initrequest"):
            item._initrequest()
        return False
    return True


def higher_scoped(item: pytest.Item) -> List[str]:
    """The item's fixtures the parent sets up: every scope above function."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    in_class = item.getparent(pytest.Class) is not None
    names = []
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name)
        if not defs:
            continue
        scope = defs[-1].scope
        # A class-scoped fixture outside a class is pytest's function scope.
        if scope == "function" or (scope == "class" and not in_class):
            continue
        names.append(name)
    return names


def runs_in_process(item: pytest.Item) -> bool:
    """Tests that run no code of their own: skipped by a mark, or
    ``xfail(run=False)`` (pytest raises before any fixture is set up)."""
    from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks

    try:
        if evaluate_skip_marks(item) is not None:
            return True
        xfailed = evaluate_xfail_marks(item)
    except Exception:  # a broken condition: let pytest report it
        return True
    return bool(xfailed is not None and not xfailed.run and not item.config.getoption("runxfail", False))


class _Replay:
    """Receives the sandbox's messages, checks them (:mod:`messages`) and
    logs them in the parent.

    The setup report is logged as it arrives.  The call report is held
    until the sandbox's teardown report (or its end): if the sandbox then
    dies, its earlier word that the call passed is not believed (a test
    that reports success and exits with status 3 did not pass)."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.config = item.config
        self.reports: List[pytest.TestReport] = []
        self.phases = messages.Phases()
        self.held_call: Optional[pytest.TestReport] = None
        self.teardown: Optional[pytest.TestReport] = None
        self.cache: List[Tuple[str, Any]] = []

    def on_message(self, msg: Any) -> None:
        kind = messages.kind_of(msg)
        if kind == "report":
            report = messages.report_from(self.config, msg.get("report"), self.item)
            reused = msg.get("sections_reused", 0)
            earlier = self.reports[-1].sections if self.reports else []
            if isinstance(reused, bool) or not isinstance(reused, int) or not 0 <= reused <= len(earlier):
                raise ProtocolViolation("a report that reuses sections it does not have")
            report.sections = list(earlier[:reused]) + list(report.sections)
            self.phases.accept(report.when)
            self._share(report)
            self.reports.append(report)
            if report.when == "setup":
                self.item.ihook.pytest_runtest_logreport(report=report)
            elif report.when == "call":
                self.held_call = report
            else:
                self.log_held_call()
                self.teardown = report  # logged after the parent's teardown
        elif kind == "warning":
            text, (module, qualname), filename, lineno = messages.check_warning(msg)
            self._warning(text, module, qualname, filename, lineno)
        elif kind == cov.KIND:
            cov.merge(messages.check_coverage(msg))
        elif kind == "cache":
            self.cache.append(messages.check_cache(msg))
        else:
            raise ProtocolViolation(f"a message of unknown type {kind!r}")

    def log_held_call(self) -> None:
        if self.held_call is not None:
            report, self.held_call = self.held_call, None
            self.item.ihook.pytest_runtest_logreport(report=report)

    def store_cache(self) -> None:
        """What the test stored with ``config.cache.set`` (checked keys, plain
        values), now stored by the parent in its own cache directory."""
        cache = getattr(self.config, "cache", None)
        if cache is None:
            return
        for key, value in self.cache:
            try:
                cache.set(key, value)
            except Exception:  # noqa: S110 - pytest warns about an unwritable cache itself
                pass

    def _share(self, report: pytest.TestReport) -> None:
        """Point a report rebuilt from the wire at the objects an in-process
        report shares with its item (pytest keeps every report until the
        session ends: copies would cost memory per test)."""
        item: Any = self.item
        try:
            if isinstance(getattr(report, "_id", None), type(getattr(item, "_id", None))) and report._id == item._id:
                report._id = item._id  # pytest >= 9.2: the structured node id
            elif report.nodeid == item.nodeid:
                report.nodeid = item.nodeid
        except AttributeError:  # pragma: no cover - a read-only nodeid
            pass
        if self.reports and report.keywords == self.reports[0].keywords:
            report.keywords = self.reports[0].keywords
        report.when = sys.intern(report.when)  # type: ignore[assignment]
        report.outcome = sys.intern(report.outcome)  # type: ignore[assignment]

    def _warning(self, text: str, module: str, qualname: str, filename: str, lineno: int) -> None:
        category: Any = messages.warning_class(module, qualname)
        try:
            message = warnings.WarningMessage(category(text), category, filename, lineno)
        except Exception:  # a warning class whose constructor wants more
            category = UserWarning
            message = warnings.WarningMessage(UserWarning(text), UserWarning, filename, lineno)
        # What pytest's catch_warnings_for_item does with what it recorded;
        # warn_explicit would run the filters a second time (an "error"
        # filter would raise here, "once" would deduplicate differently).
        self.item.ihook.pytest_warning_recorded.call_historic(
            kwargs=dict(warning_message=message, nodeid=self.item.nodeid, when="runtest", location=None))

    def phase(self) -> "Literal['setup', 'call', 'teardown']":
        """The phase the sandbox was in when it ended without finishing."""
        whens = [r.when for r in self.reports]
        if not whens:
            return "setup"
        if "call" in whens or "teardown" in whens:
            return "teardown"
        if self.reports[0].passed and not self.config.getoption("setuponly", False):
            return "call"
        return "teardown"


class SandboxOutput:
    """Files of the sandbox's own for what it prints (fd capture): the
    sandbox points pytest's capture at them (:func:`child.private_capture`);
    the parent reads them only if the sandbox dies before reporting."""

    #: The most read back from one file.
    LIMIT = 4 << 20

    def __init__(self, config: pytest.Config) -> None:
        self.fds: List[int] = []
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is None or config.getoption("capture", "fd") != "fd" or not hasattr(os, "memfd_create"):
            return
        for name in ("stdout", "stderr"):
            self.fds.append(os.memfd_create(f"isolate-{name}", os.MFD_CLOEXEC))

    def sections(self, phase: str) -> List[Tuple[str, str]]:
        """What the sandbox printed in the phase it died in (the capture
        empties the files after each phase)."""
        out = []
        for name, fd in zip(("stdout", "stderr"), self.fds):
            try:
                size = os.fstat(fd).st_size
                start = max(0, size - self.LIMIT)
                text = os.pread(fd, size - start, start).decode("utf-8", "replace")
            except OSError:
                continue
            if text:
                out.append((f"Captured {name} {phase}", text))
        return out

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@contextlib.contextmanager
def _capture(item: pytest.Item, when: str) -> Iterator[None]:
    """Capture what the parent's part of a phase prints, as pytest would;
    it lands in ``item._report_sections`` (the sandbox inherits it)."""
    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is None or not hasattr(capman, "item_capture"):
        yield
        return
    with capman.item_capture(when, item):
        yield


def build_spec(item: pytest.Item, s: "ItemSettings", session: "IsolateSession", chain: Sequence[Any],
               output: SandboxOutput) -> SandboxSpec:
    limits = Limits(memory_bytes=s.memory.value, cpus=s.cpus.value, cpu_time_seconds=s.cpu_time.value,
                    pids=s.pids.value)
    writable = session.writable_base() + tuple(s.writable.value or ())
    message_limit = int(session.settings["message_limit"].value)
    network, forward = ("services", s.network.value) if isinstance(s.network.value, tuple) else (s.network.value, ())
    spec = SandboxSpec(
        payload=CallablePayload(child.run_item, (session.child_side, item, tuple(chain), tuple(output.fds))),
        limits=limits, timeout_seconds=s.timeout.value, root=bool(s.root.value), network=network, forward=forward,
        writable=tuple(dict.fromkeys(writable)), visible=session.visible_base(), layers=session.layers,
        label=item.nodeid, message_limit_bytes=message_limit,
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
    with _capture(item, "setup"):
        prepared = prepare_parent(item, chain)
    if ahead is not None and not (prepared and ahead.fingerprint == fingerprint(item)):
        # The parent's setup for this test changed something after the
        # sandbox was forked: its copy is stale.
        ahead.discard()
        ahead = None
    if not prepared:
        runtestprotocol(item, nextitem=nextitem, log=True)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return
    replay = _Replay(item)
    if ahead is not None:
        flight = ahead
    else:
        flight = InFlight.launch(item, s, session, chain, prefork=False)
    start = flight.started or time.time()
    try:
        if flight.sandbox is None:
            result: SandboxResult = flight.launcher(flight.spec, on_message=replay.on_message)
        else:
            flight.release()
            start = flight.started
            if nextitem is not None:
                session.held = _prefork(item, nextitem, chain, session)
            result = flight.sandbox.wait(replay.on_message)
        _finish(item, nextitem, session, flight, replay, result, start)
    finally:
        flight.output.close()


def _finish(item: pytest.Item, nextitem: Optional[pytest.Item], session: "IsolateSession", flight: "InFlight",
            replay: _Replay, result: SandboxResult, start: float) -> None:
    ihook = item.ihook
    ended: Optional[messages.End] = None
    if result.outcome is Outcome.OK:
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
            # the call passed is not believed (DESIGN §5).
            crash = reports.synthetic(item, "call", result, sections, replay.held_call.duration, props,
                                      after_reports=True)
            replay.held_call = None
            reports.honour_xfail(item, crash)
            ihook.pytest_runtest_logreport(report=crash)
        elif phase != "teardown":
            replay.log_held_call()
            crash = reports.synthetic(item, phase, result, sections, time.time() - start, props)
            reports.honour_xfail(item, crash)
            ihook.pytest_runtest_logreport(report=crash)
            teardown = reports.passed_teardown(item, props)
        else:
            replay.log_held_call()
            if teardown is not None:
                sections = list(teardown.sections) + sections
            teardown = reports.synthetic(item, phase, result, sections, time.time() - start, props)
    replay.log_held_call()
    if teardown is None:  # pragma: no cover - the child always reports teardown
        teardown = reports.passed_teardown(item)
    if result.written_paths:
        # DESIGN §4: writes outside the writable paths are reported, not silently lost
        teardown.sections.append((DISCARDED_TITLE, "\n".join(result.written_paths)))
    if result.network_notes:
        teardown.sections.append((NETWORK_TITLE, "\n".join(result.network_notes)))
    idle = _teardown_is_noop(item, nextitem)
    # Nothing to tear down: no capture either (the next sandbox may be running).
    teardown = _parent_teardown(item, nextitem, teardown, capture=not idle)
    ihook.pytest_isolate_stats(item=item, result=result, report=teardown)  # before junitxml reads it
    if idle and ended is not None and ended.how == "done":
        _release_early(item, nextitem, session, replay.reports + [teardown])
    ihook.pytest_runtest_logreport(report=teardown)
    ihook.pytest_isolate_result(item=item, result=result)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _flush_stdio() -> None:
    # The sandbox is a fork: whatever sits in this process's stdio buffers
    # (a higher-scoped fixture's print under -s, with stdout a pipe or file)
    # would be written a second time when the sandbox flushes its copy.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class InFlight:
    """One test's sandbox from its fork to its result, with the parent state
    it copied.  States::

        PREPARED (forked ahead, held) ─release()─▶ RUNNING ─wait()─▶ (result)
            └──discard()──▶ DISCARDED

    A sandbox made by a launcher other than the runtime's own (a plugin's
    fake, see ``pytest_isolate_launcher``) has no ``sandbox``: it runs when
    the launcher is called."""

    def __init__(self, item: pytest.Item, spec: SandboxSpec, sandbox: Any, launcher: Any,
                 output: SandboxOutput, mark: Tuple[Any, ...]) -> None:
        self.item = item
        self.spec = spec
        self.sandbox = sandbox
        self.launcher = launcher
        self.output = output
        self.fingerprint = mark
        #: When its payload was released (0: not yet).
        self.started = 0.0

    @classmethod
    def launch(cls, item: pytest.Item, s: "ItemSettings", session: "IsolateSession", chain: Sequence[Any],
               prefork: bool) -> "InFlight":
        launcher = item.ihook.pytest_isolate_launcher(item=item)
        output = SandboxOutput(item.config)
        try:
            spec = build_spec(item, s, session, chain, output)
            mark = fingerprint(item) if prefork else ()
            _flush_stdio()
            sandbox = isolate_runtime.prepare(spec) if _can_prefork(session, launcher) else None
        except BaseException:
            output.close()
            raise
        return cls(item, spec, sandbox, launcher, output, mark)

    @property
    def released(self) -> bool:
        return self.started > 0

    def release(self) -> None:
        if self.sandbox is not None and not self.released:
            self.sandbox.release()
            self.started = time.time()

    def discard(self) -> None:
        """End it unreported (its test never came, or its copy is stale)."""
        if self.sandbox is not None:
            self.sandbox.discard()
        self.output.close()


class _Same:
    """Compares by identity: a fixture value equal to but not the one the
    sandbox copied is a different value."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def fingerprint(item: pytest.Item) -> Tuple[Any, ...]:
    """The parent state a sandbox for ``item`` copies: pytest's setup stack,
    the item's higher-scoped fixtures with their cached values, and the
    warning filters (pytest sets the test's own around its whole protocol,
    in this process: ``-W``, ini ``filterwarnings``, the test's marks)."""
    stack = tuple(_Same(node) for node in item.session._setupstate.stack)
    info: Any = getattr(item, "_fixtureinfo", None)
    fixtures = []
    for name in higher_scoped(item):
        fixturedef = info.name2fixturedefs[name][-1]
        fixtures.append((_Same(fixturedef), _Same(fixturedef.cached_result)))
    return (stack, tuple(fixtures), tuple(warnings.filters))


def _can_prefork(session: "IsolateSession", launcher: Any) -> bool:
    return bool(session.settings["prefork"].value) and launcher is isolate_runtime.run


_MISSING = object()


def _param(item: pytest.Item, name: str) -> Any:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name, _MISSING) if callspec is not None else _MISSING


def _ready_for(item: pytest.Item, nextitem: pytest.Item, chain: Sequence[Any]) -> bool:
    """Is the parent already set up exactly as ``nextitem`` needs, so that
    its own preparation will change nothing?  Same collector chain, and
    every higher-scoped fixture it uses set up without error (by this test,
    for the same parameter; or earlier, unparametrized)."""
    if item.session.shouldstop or item.session.shouldfail:
        return False
    nchain = nextitem.listchain()[:-1]
    if len(nchain) != len(chain) or any(a is not b for a, b in zip(nchain, chain)):
        return False
    if list(item.session._setupstate.stack) != list(chain):
        return False
    if _warning_marks(item) != _warning_marks(nextitem):
        return False  # its warning filters will differ: see fingerprint()
    mine = set(higher_scoped(item))
    info: Any = getattr(nextitem, "_fixtureinfo", None)
    mine_defs: Any = getattr(item, "_fixtureinfo", None)
    for name in higher_scoped(nextitem):
        fixturedef = info.name2fixturedefs[name][-1]
        cached = fixturedef.cached_result
        if cached is None or cached[2] is not None:
            return False
        if name not in mine:
            # set up by an earlier test: reused only if not parametrized
            if _param(nextitem, name) is not _MISSING:
                return False
            continue
        if fixturedef is not mine_defs.name2fixturedefs[name][-1]:
            return False
        try:
            if not bool(_param(nextitem, name) == _param(item, name)):
                return False
        except Exception:
            return False
    return True


def _warning_marks(item: pytest.Item) -> List[Any]:
    return [(m.args, m.kwargs) for m in item.iter_markers("filterwarnings")]


def _prefork(item: pytest.Item, nextitem: pytest.Item, chain: Sequence[Any],
             session: "IsolateSession") -> Optional[InFlight]:
    """Fork and set up the next test's sandbox now, while this test runs on
    the other side (DESIGN: keep the sandbox's setup off the critical path).
    Only when the parent has nothing left to do for it; it is checked again
    before it is released (:func:`fingerprint`)."""
    from .plugin import settings_key

    try:
        s = nextitem.stash.get(settings_key, None)
        if s is None or not s.isolated.value or runs_in_process(nextitem) or not _ready_for(item, nextitem, chain):
            return None
        if not _can_prefork(session, nextitem.ihook.pytest_isolate_launcher(item=nextitem)):
            return None
        return InFlight.launch(nextitem, s, session, chain, prefork=True)
    except Exception:  # noqa: S110 - the test is then prepared when its turn comes, and any error shows there
        return None


def _teardown_is_noop(item: pytest.Item, nextitem: Optional[pytest.Item]) -> bool:
    """Will :func:`_parent_teardown` find nothing to tear down (the next
    test keeps every scope set up for this one)?"""
    if nextitem is None or item.session.shouldfail or item.session.shouldstop:
        return False
    stack = list(item.session._setupstate.stack)
    return stack == nextitem.listchain()[:len(stack)]


def _release_early(item: pytest.Item, nextitem: Optional[pytest.Item], session: "IsolateSession",
                   done: Sequence[pytest.TestReport]) -> None:
    """Let the next test's prepared sandbox start now, while this process
    logs this test's end and begins the next one (DESIGN: the parent's
    bookkeeping off the critical path).  Only when the parent has no
    teardown to do, this test failed in no phase (so ``-x``, ``--maxfail``,
    ``--sw`` or a rerun plugin cannot want the next one held back), the
    sandbox's copy of the parent is still current, and whatever the sandbox
    prints is captured (nothing interleaves with this test's last lines)."""
    ahead: Optional[InFlight] = session.held
    if ahead is None or ahead.item is not nextitem or ahead.released or ahead.sandbox is None:
        return
    if any(r.failed for r in done) or not _quiet_terminal(item.config):
        return
    if ahead.fingerprint != fingerprint(nextitem):
        return
    ahead.release()


def _quiet_terminal(config: pytest.Config) -> bool:
    """Is everything the next sandbox prints captured (not interleaved with
    this test's last lines on the terminal)?"""
    if config.pluginmanager.getplugin("capturemanager") is None:
        return False  # -p no:capture
    if config.getoption("capture", "fd") not in ("fd", "sys"):
        return False
    logging_plugin = config.pluginmanager.get_plugin("logging-plugin")
    live = getattr(logging_plugin, "_log_cli_enabled", None)
    return logging_plugin is None or (live is not None and not live())


def _parent_teardown(item: pytest.Item, nextitem: Optional[pytest.Item],
                     child_report: pytest.TestReport, capture: bool = True) -> pytest.TestReport:
    """Tear down the higher scopes as pytest would after this item; fold
    their outcome and output into the teardown report."""
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    before = len(getattr(item, "_report_sections", []))
    with _capture(item, "teardown") if capture else contextlib.nullcontext():
        call = CallInfo.from_call(
            lambda: item.session._setupstate.teardown_exact(nextitem), when="teardown",
            reraise=(pytest.exit.Exception, KeyboardInterrupt))
    parent_sections = [(f"Captured {key} {when}", content)
                       for when, key, content in getattr(item, "_report_sections", [])[before:] if content]
    # As runtestprotocol does once the item is done: let its fixtures go.
    if hasattr(item, "_request"):
        item._request = False
        item.funcargs = None  # type: ignore[attr-defined]
    report = child_report
    if call.excinfo is not None:
        parent_report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
        if child_report.failed:
            report.sections.append(("pytest-isolate: also failed in the higher-scoped teardown",
                                    str(parent_report.longrepr)))
        else:
            parent_report.sections = list(child_report.sections)
            parent_report.user_properties = list(child_report.user_properties)
            parent_report.duration += child_report.duration
            report = parent_report
    for title, content in parent_sections:
        report.sections.append((title, content))
    return report
