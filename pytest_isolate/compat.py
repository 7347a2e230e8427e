"""Every private part of pytest that pytest-isolate uses, in one place.

Running one test's function scope in another process, with the higher
scopes in this one, has no public API: the parent drives pytest's own
``SetupState`` and fixture requests, and the sandbox runs pytest's own
``runtestprotocol``.  Each function here names the private attribute it
touches and what it is for; tests run it on pytest 7.4, 8 and 9.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

import pytest
from _pytest._code.code import ReprEntryNative, ReprExceptionInfo, ReprFileLocation, ReprTraceback, TerminalRepr
from _pytest.runner import CallInfo, runtestprotocol
from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks, xfailed_key

__all__ = ["CallInfo", "ReprEntryNative", "ReprExceptionInfo", "ReprFileLocation", "ReprTraceback",
           "evaluate_skip_marks", "evaluate_xfail_marks", "runtestprotocol"]

#: What a fixture or xunit setup may raise that pytest reports as the test's
#: error (``pytest.fail``, ``pytest.xfail`` and ``pytest.skip`` raise
#: BaseException subclasses; ``pytest.exit`` must go through).
SETUP_ERRORS: Tuple[Type[BaseException], ...] = (Exception, pytest.skip.Exception, pytest.fail.Exception)


# ------------------------------------------------------------------ the setup stack and fixtures

def setup_state(item: pytest.Item) -> Any:
    """``session._setupstate``: pytest's stack of set-up nodes and their
    finalizers (``setup``, ``teardown_exact``, ``stack``)."""
    return item.session._setupstate


def setup_stack(item: pytest.Item) -> Dict[Any, Any]:
    """``SetupState.stack``: node -> (finalizers, exception), top last."""
    stack: Dict[Any, Any] = item.session._setupstate.stack
    return stack


def fixture_info(item: pytest.Item) -> Any:
    """``Function._fixtureinfo`` (``names_closure``, ``name2fixturedefs``);
    None for items that are not functions."""
    return getattr(item, "_fixtureinfo", None)


def fixture_request(item: pytest.Item) -> Any:
    """``Function._request``: the item's fixture request (falsy once the
    item is done, or for items without fixtures)."""
    return getattr(item, "_request", None)


def renew_request(item: pytest.Item) -> None:
    """``Function._initrequest()``: a fresh fixture request (pytest 7's keeps
    a per-name lookup index that a failed lookup leaves decremented; a rerun
    plugin runs an item whose request was dropped)."""
    init = getattr(item, "_initrequest", None)
    if init is not None:
        init()


def request_dropped(item: pytest.Item) -> bool:
    node: Any = item  # (the attributes differ between pytest versions)
    return hasattr(node, "_request") and not node._request


def drop_request(item: pytest.Item) -> None:
    """As ``runtestprotocol`` does once an item is done: let its fixtures go."""
    node: Any = item
    if hasattr(node, "_request"):
        node._request = False
        node.funcargs = None


#: pytest < 8 binds the class-level fixtures it makes for a unittest
#: ``TestCase`` (``setUpClass``) to the test case instance.
_UNITTEST_FIXTURES_NEED_INSTANCE = int(pytest.__version__.split(".")[0]) < 8


@contextlib.contextmanager
def unittest_instance(item: pytest.Item) -> Iterator[None]:
    """``TestCaseFunction._testcase`` (pytest < 8): the instance a unittest
    class fixture is bound to, made by the item's own ``setup()``, which
    runs in the sandbox, after the parent's share.  While the parent sets
    up the higher scopes an instance made the same way stands in for it;
    it is dropped afterwards, and the sandbox makes the test's own."""
    node: Any = item
    if not _UNITTEST_FIXTURES_NEED_INSTANCE or getattr(node, "_testcase", False) is not None:
        yield
        return
    node._testcase = node.parent.obj(node.name)
    try:
        yield
    finally:
        node._testcase = None


def noop_finalizer(fin: Callable[[], object], node: Any) -> bool:
    """Is ``fin`` the one ``SetupState.setup`` pushes for every node, the
    node's ``teardown``, and the base class's that does nothing?"""
    return getattr(fin, "__self__", None) is node and getattr(fin, "__func__", None) is pytest.Item.teardown


class _CacheKeyOf:
    """What ``FixtureDef.cache_key`` reads of a ``SubRequest``: ``param``
    (set only for a parametrized use) and ``param_index`` (pytest < 9.2
    keys an unparametrized use by it, 0; later ones by None)."""

    def __init__(self, param: Any, has_param: bool) -> None:
        self.param_index = 0
        if has_param:
            self.param = param


def fixture_cached_for(fixturedef: Any, param: Any, has_param: bool) -> bool:
    """Would pytest reuse the fixture's cached value (or error) for a use
    with this parameter, rather than finish it and set it up again?  Only
    an identical key counts (pytest 9.2 also accepts an equal one: the
    answer errs towards "no")."""
    cached = fixturedef.cached_result
    if cached is None:
        return False
    try:
        key = fixturedef.cache_key(_CacheKeyOf(param, has_param))
    except Exception:
        return False
    return key is cached[1]


@contextlib.contextmanager
def item_warnings(item: pytest.Item, into: List[warnings.WarningMessage]) -> Iterator[None]:
    """``_pytest.warnings.catch_warnings_for_item``: the warning filters
    pytest sets around an item's protocol (ini, ``-W``, the item's
    ``filterwarnings`` marks); what is warned inside goes to ``into``, not
    to ``pytest_warning_recorded`` (the caller reports it when it is the
    item's turn)."""
    from _pytest.warnings import catch_warnings_for_item

    class Recorder:
        class pytest_warning_recorded:  # noqa: N801 - the hook's name
            @staticmethod
            def call_historic(kwargs: Dict[str, Any]) -> None:
                into.append(kwargs["warning_message"])

    with catch_warnings_for_item(config=item.config, ihook=Recorder, when="runtest", item=item):
        yield


class TextRepr(TerminalRepr):
    """A failure pytest renders without a crash line (``FixtureLookupErrorRepr``
    of a missing fixture, ``ReprFailDoctest``), from the text its report was
    serialized to: pytest 9's short summary adds a plain string's first
    line after the test's name, and nothing for such a failure."""

    def __init__(self, text: str) -> None:
        self.text = text

    def toterminal(self, tw: Any) -> None:
        for line in self.text.split("\n"):
            tw.line(line)


def report_sections(item: pytest.Item) -> List[Tuple[str, str, str]]:
    """``Item._report_sections``: (when, key, content) captured so far."""
    return list(getattr(item, "_report_sections", []))


def finish_fixture(fixturedef: Any, item: pytest.Item) -> None:
    """``FixtureDef.finish``: run a set-up fixture's finalizers now (its
    teardown), through ``item``'s request; nothing if it is not set up."""
    if fixturedef.cached_result is None:
        return
    request = fixture_request(item)
    if request:
        fixturedef.finish(request)


def drop_report_sections(item: pytest.Item, keep: int) -> None:
    """Forget what was captured for ``item`` after its first ``keep`` sections."""
    sections = getattr(item, "_report_sections", None)
    if isinstance(sections, list):
        del sections[keep:]


# ------------------------------------------------------------------ pytest-xdist

def xdist_worker(config: pytest.Config) -> Any:
    """In an xdist worker, the plugin that runs its share of the tests
    (``xdist.remote.WorkerInteractor``); ``None`` elsewhere."""
    if not hasattr(config, "workerinput"):
        return None
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "WorkerInteractor" and hasattr(plugin, "torun"):
            return plugin
    return None


def xdist_channel_fds(worker: Any) -> List[int]:
    """The descriptors of an xdist worker's link to its controller
    (``WorkerInteractor.channel.gateway._io``: execnet's ``Popen2IO`` with
    ``outfile``/``infile``, or ``SocketIO`` with ``sock``)."""
    io = getattr(getattr(getattr(worker, "channel", None), "gateway", None), "_io", None)
    out = []
    for name in ("outfile", "infile", "sock"):
        try:
            out.append(int(getattr(io, name).fileno()))
        except Exception:  # noqa: S112 - not this kind of link
            continue
    return out


def xdist_queue(worker: Any) -> Optional[List[int]]:
    """The indices into ``session.items`` the controller has sent this
    worker and it has not started (``WorkerInteractor.torun``: a
    ``TestQueue`` in xdist >= 3.6, a deque before)."""
    torun = worker.torun
    lock = getattr(torun, "lock", None)
    try:
        if lock is not None:  # the controller's commands arrive on another thread
            with lock() as queue:
                return [i for i in queue if isinstance(i, int)]
        return [i for i in list(torun) if isinstance(i, int)]
    except (TypeError, RuntimeError):  # an xdist of another shape, a deque changed while copied
        return None


# ------------------------------------------------------------------ pytest-rerunfailures

def rerunfailures_client(config: pytest.Config) -> Any:
    """pytest-rerunfailures' link to its status server in the xdist
    controller (``config.failures_db``, a ``ClientStatusDB`` with a
    connected ``sock``), or None."""
    db = getattr(config, "failures_db", None)
    if type(db).__name__ != "ClientStatusDB" or not hasattr(db, "sock"):
        return None
    return db


def rerunfailures_fds(config: pytest.Config) -> List[int]:
    """The descriptor of :func:`rerunfailures_client`'s link ([] without one)."""
    db = rerunfailures_client(config)
    try:
        return [int(db.sock.fileno())] if db is not None else []
    except Exception:  # noqa: BLE001 - a client of another shape: nothing to withhold
        return []


def rerunfailures_suite_reruns(config: pytest.Config) -> Optional[int]:
    """The suite's rerun count from the status server, when a sandbox will
    need it (``--max-suite-reruns``, read by the plugin's teardown hook);
    None otherwise."""
    db = rerunfailures_client(config)
    if db is None or getattr(config.option, "max_suite_reruns", None) is None:
        return None
    try:
        return int(db.get_suite_reruns())
    except Exception:  # noqa: BLE001 - the sandbox's stand-in then counts from 0
        return None


def rerunfailures_stand_in(config: pytest.Config, suite_reruns: Optional[int]) -> None:
    """In a sandbox, whose link to the status server is withheld: the
    plugin's in-memory status DB in its place, with the suite's rerun count
    as it was when the sandbox was made.  The counts that matter are the
    parent's to keep (its protocol runs the tries); what the sandbox's hooks
    set stays in the sandbox."""
    db = rerunfailures_client(config)
    if db is None:
        return
    module = sys.modules.get(type(db).__module__)
    base = getattr(module, "StatusDB", None)
    if base is None:
        return
    local = base()
    if suite_reruns is not None and hasattr(local, "_suite_rerun_count"):
        local._suite_rerun_count = suite_reruns
    local._isolate_withheld_link = db  # its socket object stays unclosed: the number stays taken
    config.failures_db = local  # type: ignore[attr-defined]


# ------------------------------------------------------------------ pytest-reportlog

def reportlog_path(config: pytest.Config) -> Optional[str]:
    """pytest-reportlog's ``--report-log`` file, which it holds open for the
    whole session (``config._report_log_plugin._log_path``; compressed or
    not, the file itself is what is open), or None."""
    path = getattr(getattr(config, "_report_log_plugin", None), "_log_path", None)
    try:
        return os.path.realpath(os.fspath(path)) if path is not None else None
    except TypeError:  # a plugin of another shape
        return None


# ------------------------------------------------------------------ reports

def share_node_id(report: pytest.TestReport, item: pytest.Item) -> None:
    """Make a report rebuilt from the wire share its item's node id object
    (pytest >= 9.2 keeps a structured ``_id``; before, the ``nodeid`` str)."""
    try:
        rep: Any = report
        rid, iid = getattr(rep, "_id", None), getattr(item, "_id", None)
        if rid is not None and isinstance(rid, type(iid)) and rid == iid:
            rep._id = iid
        elif report.nodeid == item.nodeid:
            report.nodeid = item.nodeid
    except AttributeError:  # pragma: no cover - a read-only nodeid
        pass


# ------------------------------------------------------------------ subtests

#: pytest >= 9.2 keys its per-node bookkeeping by the structured node id.
_STRUCTURED_NODE_IDS = importlib.util.find_spec("_pytest.nodeid") is not None


def _failed_subtests(config: pytest.Config) -> Optional[Dict[Any, int]]:
    """``_pytest.subtests.failed_subtests_key`` (pytest >= 9): node -> how
    many of its subtests failed, which makes pytest report a test whose own
    call passed as failed.  None before pytest 9 (pytest-subtests keeps no
    such count)."""
    try:
        from _pytest.subtests import failed_subtests_key
    except ImportError:
        return None
    counts: Optional[Dict[Any, int]] = config.stash.get(failed_subtests_key, None)
    return counts


def _subtest_key(item: pytest.Item) -> Any:
    node: Any = item
    return node.id if _STRUCTURED_NODE_IDS else item.nodeid


def failed_subtest_count(item: pytest.Item) -> int:
    """How many of the item's subtests failed so far (0 before pytest 9)."""
    counts = _failed_subtests(item.config)
    return 0 if counts is None else int(counts.get(_subtest_key(item), 0))


def count_failed_subtest(item: pytest.Item) -> None:
    """Count one failed subtest of the item, as the ``subtests`` fixture does."""
    counts = _failed_subtests(item.config)
    if counts is not None:
        key = _subtest_key(item)
        counts[key] = counts.get(key, 0) + 1


def keep_subtest_parameters(report: pytest.TestReport, kwargs: Dict[str, Any]) -> None:
    """``SubtestReport.context.kwargs`` as the sandbox sent them.  pytest 9's
    ``SubtestContext`` applies ``saferepr`` to the parameters each time one
    is made, also when a report is read back from the wire (under xdist a
    subtest's ``i=3`` reads ``i='3'``); the sandbox's report already holds
    them as strings, and a second pass would quote them once more than the
    test's own process does.  pytest-subtests keeps them as they are."""
    context = getattr(report, "context", None)
    if context is not None and dataclasses.is_dataclass(context) and hasattr(context, "kwargs"):
        object.__setattr__(context, "kwargs", dict(kwargs))


# ------------------------------------------------------------------ a sandbox's own pytest

def keep_hookimpls(config: pytest.Config, name: str, keep: Tuple[object, ...]) -> None:
    """Remove every implementation of hook ``name`` but those of the plugins
    in ``keep`` (pluggy's ``HookCaller._remove_plugin``: no public API drops
    one hook of a plugin and keeps its others).  Only for a sandbox, whose
    pytest is thrown away with it."""
    caller: Any = getattr(config.pluginmanager.hook, name)
    for impl in caller.get_hookimpls():
        if not any(impl.plugin is plugin for plugin in keep):
            caller._remove_plugin(impl.plugin)


def pin_teardown(item: pytest.Item, nextitem: Any) -> None:
    """Make ``SetupState.teardown_exact`` always stop at ``nextitem``'s
    chain, whatever its caller passes: ``runtestprotocol`` tears down
    everything when the session is about to stop (``-x`` after a failed
    subtest), and in a sandbox the scopes above the function are the
    parent's.  Only for a sandbox."""
    state: Any = setup_state(item)
    original = state.teardown_exact
    state.teardown_exact = lambda _nextitem: original(nextitem)


# ------------------------------------------------------------------ capture, logging, temporary files

def global_capture(config: pytest.Config) -> Any:
    """``CaptureManager._global_capturing``: the MultiCapture whose ``out``
    and ``err`` FDCaptures hold the capture files (None under ``-s``)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    return getattr(capman, "_global_capturing", None)


def capturing_now(config: pytest.Config) -> bool:
    """Does what the terminal prints right now land in the test's captured
    output?  Under fd capture, while it is started (not suspended, as it is
    around a subtest's report that the ``subtests`` fixture logs); never
    under ``-s`` or sys capture, where the terminal writes to the file it
    was made with.  (``MultiCapture.out``: an ``FDCapture`` has a
    ``targetfd``.)"""
    capturing = global_capture(config)
    started: Optional[Callable[[], bool]] = getattr(capturing, "is_started", None)
    out = getattr(capturing, "out", None)
    return started is not None and isinstance(getattr(out, "targetfd", None), int) and bool(started())


@contextlib.contextmanager
def output_discarded(config: pytest.Config) -> Iterator[None]:
    """What is printed meanwhile is captured by pytest's global capture and
    thrown away (CaptureManager's ``resume_global_capture``,
    ``suspend_global_capture``, ``read_global_capture``)."""
    capman: Any = config.pluginmanager.getplugin("capturemanager")
    capturing = global_capture(config)
    if capman is None or capturing is None or getattr(capturing, "out", None) is None or capturing.is_started():
        yield
        return
    capman.resume_global_capture()
    try:
        yield
    finally:
        capman.suspend_global_capture(in_=False)
        capman.read_global_capture()


def capture_suspended(config: pytest.Config) -> "contextlib.AbstractContextManager[None]":
    """``CaptureManager.global_and_fixture_disabled()``: what is printed
    meanwhile goes to the terminal."""
    capman: Any = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return contextlib.nullcontext()
    suspended: "contextlib.AbstractContextManager[None]" = capman.global_and_fixture_disabled()
    return suspended


@contextlib.contextmanager
def logging_phase(item: pytest.Item, when: str) -> Iterator[None]:
    """What pytest's logging plugin does around a phase of a test
    (``LoggingPlugin._runtest_for`` and the live log's heading): log records
    emitted meanwhile land in the item's "Captured log <when>" section, and
    live logging shows them under that phase."""
    plugin: Any = item.config.pluginmanager.get_plugin("logging-plugin")
    runtest_for = getattr(plugin, "_runtest_for", None)
    if runtest_for is None:
        yield
        return
    from _pytest.logging import caplog_handler_key, caplog_records_key

    records = item.stash.setdefault(caplog_records_key, {})
    live = getattr(plugin, "log_cli_handler", None)
    if live is not None and hasattr(live, "set_when"):
        live.set_when(when)
    got = runtest_for(item, when)
    # a context manager since pytest 8; a bare generator (driven by ``yield
    # from`` in its hookwrappers) before
    phase = got if hasattr(got, "__enter__") else contextlib.contextmanager(lambda: got)()
    try:
        with phase:
            yield
    finally:
        # pytest's own hooks for the item set these up and drop them again
        records.pop(when, None)
        if caplog_handler_key in item.stash:
            del item.stash[caplog_handler_key]
        if when == "setup":
            item.stash[_live_setup_shown_key] = bool(getattr(live, "_section_name_shown", False))


_live_setup_shown_key = pytest.StashKey[bool]()


def continue_live_setup(item: pytest.Item) -> None:
    """In a sandbox forked right after pytest's process set the item's
    higher scopes up: if live logging showed the "live log setup" heading
    there, the sandbox's setup goes on under it (pytest's own setup hook
    would show it a second time)."""
    if not item.stash.get(_live_setup_shown_key, False):
        return
    plugin: Any = item.config.pluginmanager.get_plugin("logging-plugin")
    live = getattr(plugin, "log_cli_handler", None)
    if live is None or not hasattr(live, "set_when"):
        return
    set_when = live.set_when

    def once(when: Optional[str]) -> None:
        del live.set_when  # back to the handler's own
        if when != "setup":
            set_when(when)

    live.set_when = once


def log_cli_enabled(config: pytest.Config) -> bool:
    """``LoggingPlugin._log_cli_enabled()``: is live logging on?"""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    live: Optional[Callable[[], bool]] = getattr(plugin, "_log_cli_enabled", None)
    return plugin is not None and (live is None or bool(live()))


def basetemp(config: pytest.Config) -> Optional[str]:
    """``Config._tmp_path_factory.getbasetemp()``: where ``tmp_path`` lives."""
    factory = getattr(config, "_tmp_path_factory", None)
    return os.fspath(factory.getbasetemp()) if factory is not None else None


def terminal_writer(config: pytest.Config) -> Any:
    """``_pytest.config.create_terminal_writer``: a writer honouring --color."""
    from _pytest.config import create_terminal_writer

    return create_terminal_writer(config)


def junitxml(config: pytest.Config) -> Any:
    """``_pytest.junitxml.xml_key``: the LogXML of ``--junitxml``, or None."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - junitxml is a builtin plugin
        return None
    return config.stash.get(xml_key, None)


# ------------------------------------------------------------------ rm_rf

def harden_rm_rf() -> None:
    """``_pytest.pathlib.on_rm_rf_error``: when pytest cannot remove an
    entry of an old temporary directory it chmods the entry and its
    parents, following symbolic links.  Below basetemp a sandboxed test may
    have planted a link to any file of the user's: the handler here removes
    a link itself, never the file it points at, and hands everything else to
    pytest's.  Without the private name: nothing changes."""
    try:
        from _pytest import pathlib
    except ImportError:  # pragma: no cover
        return
    original: Any = getattr(pathlib, "on_rm_rf_error", None)
    if original is None or getattr(original, "isolate_hardened", False):
        return
    pathlib.on_rm_rf_error = _hardened(original)


def note_xfail(item: pytest.Item) -> None:
    """pytest's skipping plugin evaluates a test's xfail marks in its setup
    hook and reads them back as it makes each phase's report: an error of
    an xfail test's setup or teardown is XFAIL, not ERROR.  For an isolated
    test that hook ran in the sandbox, not here, where the higher scopes'
    setup and teardown fail: evaluate them here too (once; a broken
    condition is left for pytest to report)."""
    if xfailed_key in item.stash:
        return
    try:
        item.stash[xfailed_key] = evaluate_xfail_marks(item)
    except SETUP_ERRORS:  # noqa: S110 - pytest reports a broken condition (pytest.fail) itself
        pass


def xfail_report(item: pytest.Item, call: "CallInfo[None]") -> pytest.TestReport:
    """pytest's report of a failed phase as its skipping plugin leaves it
    (XFAIL when the test's xfail marks expect the error), made without the
    other plugins' hooks: for when one of them cannot make it here."""
    report = pytest.TestReport.from_item_and_call(item, call)
    xfailed = item.stash.get(xfailed_key, None)
    if item.config.option.runxfail or call.excinfo is None or report.skipped or not xfailed:
        return report
    error, raises = call.excinfo.value, xfailed.raises
    if raises is None:
        matches = True
    elif isinstance(raises, (type, tuple)):
        matches = isinstance(error, raises)
    else:  # pytest >= 9: pytest.RaisesExc and friends
        matches = bool(getattr(raises, "matches", lambda _e: False)(error))
    if matches:
        report.outcome = "skipped"
        report.wasxfail = xfailed.reason
    else:
        report.outcome = "failed"
    return report


def harden_dead_symlinks() -> None:
    """``_pytest.pathlib.cleanup_dead_symlinks`` (pytest 7.3 on, at session
    end and after each numbered directory's cleanup) resolves every link in
    basetemp: a link loop a sandboxed test planted there raises
    ``RuntimeError`` on Python 3.9 to 3.12, out of pytest's session end
    (exit code 1 after all passed).  The one here stats each link instead,
    and unlinks it when its target is missing or cannot be reached (a loop
    included), as pytest's does for missing targets.  Without the private
    name: nothing changes."""
    try:
        from _pytest import pathlib, tmpdir
    except ImportError:  # pragma: no cover
        return
    for module in (pathlib, tmpdir):
        original = getattr(module, "cleanup_dead_symlinks", None)
        if original is not None and not getattr(original, "isolate_hardened", False):
            module.cleanup_dead_symlinks = _cleanup_dead_symlinks  # type: ignore[attr-defined]


def _cleanup_dead_symlinks(root: Any) -> None:
    for entry in root.iterdir():
        if not entry.is_symlink():
            continue
        try:
            os.stat(entry)
        except (OSError, ValueError):
            try:
                os.unlink(entry)
            except OSError:
                pass


_cleanup_dead_symlinks.isolate_hardened = True  # type: ignore[attr-defined]


def _hardened(original: Callable[..., bool]) -> Callable[..., bool]:
    def on_rm_rf_error(func: Any, path: str, excinfo: Any, *, start_path: Any) -> bool:
        if os.path.islink(path):
            parent = os.path.dirname(path)
            try:
                if not os.path.islink(parent):
                    mode = os.stat(parent, follow_symlinks=False).st_mode
                    os.chmod(parent, mode | 0o700)
                os.unlink(path)
            except OSError:
                return False
            return True
        return original(func, path, excinfo, start_path=start_path)

    on_rm_rf_error.isolate_hardened = True  # type: ignore[attr-defined]
    return on_rm_rf_error


def timeout_settings(item: pytest.Item) -> Optional[Any]:
    """pytest-timeout's settings for ``item`` (``_get_item_settings``:
    ``timeout``, ``method``, ``func_only``, ...), None without it."""
    module = sys.modules.get("pytest_timeout")
    get = getattr(module, "_get_item_settings", None)
    if get is None:
        return None
    try:
        return get(item)
    except Exception:  # a marker pytest-timeout itself will complain about
        return None


def faulthandler_timeout(config: pytest.Config) -> Optional[Tuple[float, int, bool]]:
    """pytest's ``faulthandler_timeout`` for a test: the seconds, the
    descriptor its faulthandler plugin dumps to, and whether it exits
    after the dump (``faulthandler_exit_on_timeout``, pytest >= 9); None
    when off."""
    try:
        from _pytest import faulthandler as fh

        key: Any = getattr(fh, "fault_handler_stderr_fd_key", None)
        if key is None or key not in config.stash:
            return None
        seconds = float(fh.get_timeout_config_value(config))
        exits: Any = getattr(fh, "get_exit_on_timeout_config_value", None)
        return (seconds, int(config.stash[key]), bool(exits(config)) if exits else False) if seconds > 0 else None
    except Exception:  # another pytest's shape: no dump, as without the setting
        return None
