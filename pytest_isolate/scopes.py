"""The parent's part of an isolated test: every scope above the function.

Session, package, module and class fixtures (and xunit setups) are set up
here, in the pytest process, on pytest's own ``SetupState``, so their
finalizers stay the parent's and run when pytest would run them; the
sandbox inherits their values copy-on-write.  This module also tells
whether a sandbox forked ahead for the next test still has the parent state
it needs (:func:`fingerprint`, :func:`ready_for`).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import pytest

from . import child, compat, cov, timeouts


class _Chain:
    """A ``SetupState.setup`` argument whose chain ends above the item."""

    def __init__(self, chain: Sequence[Any]) -> None:
        self._chain = list(chain)

    def listchain(self) -> List[Any]:
        return list(self._chain)


@contextlib.contextmanager
def capture(item: pytest.Item, when: str) -> Iterator[None]:
    """Capture what the parent's part of a phase prints and logs, as pytest
    would; it lands in the item's report sections (the sandbox inherits
    them)."""
    capman = item.config.pluginmanager.getplugin("capturemanager")
    with contextlib.ExitStack() as stack:
        if capman is not None and hasattr(capman, "item_capture"):
            stack.enter_context(capman.item_capture(when, item))
        stack.enter_context(compat.logging_phase(item, when))
        yield


#: What the parent's share of a test's setup raised, for the in-process
#: protocol that reports it (see :func:`raise_failed_setup`).
failed_setup_key = pytest.StashKey[BaseException]()
#: Seconds :func:`prepare_parent` took for the item (pytest counts the
#: higher scopes' setup in the test's setup phase: ``--durations``, junitxml).
parent_seconds_key = pytest.StashKey[float]()


def prepare_parent(item: pytest.Item, chain: Sequence[Any]) -> Optional[BaseException]:
    """Set up the collector chain and the item's non-function-scoped
    fixtures here, in pytest's order.  ``None`` if that went well, else
    what it raised: the test then runs pytest's own protocol here, whose
    setup raises that same exception again (:func:`raise_failed_setup`), so
    that pytest reports it as it would have and nothing is set up twice (a
    second attempt at a fixture that failed is not the first one: its
    finalizers, its cached error, the warnings it raised)."""
    __tracebackhide__ = True
    started = time.perf_counter()
    cov.switch_context(item, "setup")
    try:
        with timeouts.parent_work(item):
            return _prepare_parent(item, chain)
    finally:
        item.stash[parent_seconds_key] = time.perf_counter() - started


def _prepare_parent(item: pytest.Item, chain: Sequence[Any]) -> Optional[BaseException]:
    __tracebackhide__ = True
    if compat.request_dropped(item):  # re-run (pytest-rerunfailures)
        compat.renew_request(item)
    try:
        compat.setup_state(item).setup(_Chain(chain))
        request = compat.fixture_request(item)
        if not request:
            return None
        names = higher_scoped(item)
        if names:
            # The item counts as set up while its higher-scoped fixtures are
            # requested (pytest >= 9.2 warns about lookups for an inactive
            # node); it owns no finalizer of theirs, they go to their scope's
            # node, so its entry leaves the stack empty-handed.
            stack = compat.setup_stack(item)
            stack[item] = ([], None)
            try:
                with compat.unittest_instance(item):
                    for name in names:
                        request.getfixturevalue(name)
            finally:
                stack.pop(item, None)
    except compat.SETUP_ERRORS as e:  # pytest.skip/fail/xfail in a fixture, a ScopeMismatch, ...
        compat.renew_request(item)
        return e
    return None


def raise_failed_setup(item: pytest.Item) -> None:
    """In the in-process protocol of a test whose parent setup failed
    (:func:`prepare_parent`): raise, as the test's setup, what that setup
    raised."""
    __tracebackhide__ = True
    failure = item.stash.get(failed_setup_key, None)
    if failure is not None:
        del item.stash[failed_setup_key]
        compat.note_xfail(item)
        raise failure


def higher_scoped(item: pytest.Item) -> List[str]:
    """The item's fixtures the parent sets up: every scope above function."""
    info = compat.fixture_info(item)
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
    try:
        if compat.evaluate_skip_marks(item) is not None:
            return True
        xfailed = compat.evaluate_xfail_marks(item)
    except compat.SETUP_ERRORS:  # a broken condition (pytest.fail): let pytest report it
        return True
    return bool(xfailed is not None and not xfailed.run and not item.config.getoption("runxfail", False))


def teardown_is_noop(item: pytest.Item, nextitem: Optional[pytest.Item]) -> bool:
    """Will :func:`parent_teardown` find nothing to tear down (the next test
    keeps every scope set up for this one)?"""
    if nextitem is None or item.session.shouldfail or item.session.shouldstop:
        return False
    stack = list(compat.setup_stack(item))
    return stack == nextitem.listchain()[:len(stack)]


def parent_teardown(item: pytest.Item, nextitem: Optional[pytest.Item], child_report: pytest.TestReport,
                    capture_output: bool = True) -> pytest.TestReport:
    """Tear down the higher scopes as pytest would after this item; fold
    their outcome and output into the teardown report."""
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    before = len(compat.report_sections(item))
    state = compat.setup_state(item)
    cov.switch_context(item, "teardown")
    with capture(item, "teardown") if capture_output else contextlib.nullcontext(), timeouts.parent_work(item):
        def teardown() -> None:
            __tracebackhide__ = True  # the error is the fixture's, as pytest shows it
            state.teardown_exact(nextitem)

        call = compat.CallInfo.from_call(teardown, when="teardown", reraise=(pytest.exit.Exception, KeyboardInterrupt))
    parent_sections = [(f"Captured {key} {when}", content)
                       for when, key, content in compat.report_sections(item)[before:] if content]
    parent_report = None
    if call.excinfo is not None:
        compat.note_xfail(item)
        parent_report = _teardown_report(item, call)
    compat.drop_request(item)  # after the report, as pytest does (plugins read the item's fixtures there)
    report = fold_teardown(child_report, parent_report, call.duration)
    # one phase to the user: the sandbox's teardown output, then the parent's, in one section per title
    report.sections = child.merge_sections(list(report.sections) + parent_sections)
    return report


def _teardown_report(item: pytest.Item, call: "compat.CallInfo[None]") -> pytest.TestReport:
    """The report of the higher scopes' failed teardown, made by every
    plugin's hook as pytest makes it.  A plugin that keeps per-test state
    from the setup phase, which ran in the sandbox (pytest-rerunfailures),
    can fail on an item this process never set up: then pytest's own
    report, not an INTERNALERROR."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
        except Exception:  # (and what pluggy warned about it on the way)
            return compat.xfail_report(item, call)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return report


def fold_teardown(child_report: pytest.TestReport, parent_report: Optional[pytest.TestReport],
                  parent_seconds: float) -> pytest.TestReport:
    """The test's one teardown report, from the sandbox's and the report
    of the parent's teardown of the higher scopes if that failed (which
    took ``parent_seconds``: pytest counts it in the test's teardown)."""
    if parent_report is None:
        child_report.duration += parent_seconds
        return child_report
    if child_report.failed:
        child_report.sections.append(("pytest-isolate: also failed in the higher-scoped teardown",
                                      str(parent_report.longrepr)))
        return child_report
    parent_report.sections = list(child_report.sections)
    parent_report.user_properties = list(child_report.user_properties)
    parent_report.duration += child_report.duration
    return parent_report


# ------------------------------------------------------------------ the parent state a sandbox copies

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
    stack = tuple(_Same(node) for node in compat.setup_stack(item))
    return (stack, fixture_values(item), tuple(warnings.filters))


_MISSING = object()


def _param(item: pytest.Item, name: str) -> Any:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name, _MISSING) if callspec is not None else _MISSING


def _warning_marks(item: pytest.Item) -> List[Any]:
    return [(m.args, m.kwargs) for m in item.iter_markers("filterwarnings")]


def ready_for(item: pytest.Item, nextitem: pytest.Item, chain: Sequence[Any]) -> bool:
    """Is the parent already set up exactly as ``nextitem`` needs, so that
    its own preparation will change nothing?  Same collector chain, and
    every higher-scoped fixture it uses set up without error (by this test,
    for the same parameter; or earlier, unparametrized)."""
    if item.session.shouldstop or item.session.shouldfail:
        return False
    nchain = nextitem.listchain()[:-1]
    if len(nchain) != len(chain) or any(a is not b for a, b in zip(nchain, chain)):
        return False
    if list(compat.setup_stack(item)) != list(chain):
        return False
    if _warning_marks(item) != _warning_marks(nextitem):
        return False  # its warning filters will differ: see fingerprint()
    mine = set(higher_scoped(item))
    info: Any = compat.fixture_info(nextitem)
    mine_defs: Any = compat.fixture_info(item)
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


# ------------------------------------------------------------------ beside sandboxes in flight

def sets_up_anything(item: pytest.Item, chain: Sequence[Any]) -> bool:
    """Would the parent's share of ``item``'s setup run any code of the
    suite's (a node not set up yet, a higher-scoped fixture not cached)?"""
    stack = compat.setup_stack(item)
    if any(node not in stack for node in chain):
        return True
    info: Any = compat.fixture_info(item)
    return any(info.name2fixturedefs[name][-1].cached_result is None for name in higher_scoped(item))


def setup_only(item: pytest.Item) -> bool:
    """Would the parent's share of ``item``'s setup only set things up, so
    that it may be done while other tests' sandboxes run (and use what is
    set up)?  pytest first tears down the scopes ``item`` is not in
    (``teardown_exact``): each must hold no finalizer but its own no-op
    ``teardown``.  And no higher-scoped fixture ``item`` uses may be cached
    for another parameter: pytest would finish that value first."""
    needed = item.listchain()
    for node, (finalizers, _) in compat.setup_stack(item).items():
        if node not in needed and not all(compat.noop_finalizer(fin, node) for fin in finalizers):
            return False
    info: Any = compat.fixture_info(item)
    for name in higher_scoped(item):
        fixturedef = info.name2fixturedefs[name][-1]
        if fixturedef.cached_result is None:
            continue  # set up fresh: nothing of it is torn down
        param = _param(item, name)
        if not compat.fixture_cached_for(fixturedef, param, param is not _MISSING):
            return False
    return True


#: Where :func:`note_setup` notes the higher-scoped fixtures set up (None:
#: nobody is listening).
_recording: Optional[List[Any]] = None


@contextlib.contextmanager
def recording_setups() -> Iterator[List[Any]]:
    """The definitions of the higher-scoped fixtures set up meanwhile, in
    the order they were (those a later test's setup ahead made are the ones
    :func:`drop_ahead` may end): every one, the definitions an override
    uses and what a fixture asks for by name included."""
    global _recording
    outer, _recording = _recording, []
    try:
        yield _recording
    finally:
        _recording = outer


def note_setup(fixturedef: Any) -> None:
    """``pytest_fixture_setup`` in pytest's process (see :func:`recording_setups`)."""
    if _recording is not None and fixturedef.scope != "function":
        _recording.append(fixturedef)


def drop_ahead(item: pytest.Item, ahead: Sequence[Any] = ()) -> None:
    """The session stops after ``item`` (``-x`` and friends) while scopes
    and fixtures were set up ahead for tests after it, which will not run
    (``ahead``: (test, fixture definition) in the order they were set up):
    in a sequential run pytest never set those up.  Tear them down now,
    last first, before ``item``'s own teardown, unreported: their errors,
    output and warnings are not ``item``'s (a KeyboardInterrupt still goes
    through).  A fixture's finalizer stays with its scope's node, which
    may be ``item``'s too (a module fixture of a later test of the same
    module): ended here, it has nothing left to do there."""
    state = compat.setup_state(item)
    before = len(compat.report_sections(item))
    try:
        with warnings.catch_warnings(), capture(item, "teardown"):
            warnings.simplefilter("ignore")
            for test, fixturedef in reversed(list(ahead)):
                _quietly(compat.finish_fixture, fixturedef, test)
            _quietly(state.teardown_exact, item)
    finally:
        compat.drop_report_sections(item, before)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: S110 - not the stopping test's to report (see drop_ahead)
        pass


def enter(item: pytest.Item) -> None:
    """Leave the scopes ``item`` is not in, when that does nothing
    (:func:`setup_only`): ``SetupState.setup`` wants the stack to be a part
    of ``item``'s chain."""
    compat.setup_state(item).teardown_exact(item)


def fixture_values(item: pytest.Item) -> Tuple[Any, ...]:
    """``item``'s higher-scoped fixtures with their cached values (by
    identity): compared when the sandbox started early reaches its turn."""
    info: Any = compat.fixture_info(item)
    out = []
    for name in higher_scoped(item):
        fixturedef = info.name2fixturedefs[name][-1]
        out.append((_Same(fixturedef), _Same(fixturedef.cached_result)))
    return tuple(out)
