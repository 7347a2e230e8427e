"""pytest-isolate's pytest plugin: hook implementations only.

Entry point ``isolate = pytest_isolate.plugin``.  The work lives in
``settings`` (what each test gets), ``host`` (probe, policy, conflicts),
``protocol`` (the parent side of one isolated test), ``child`` (the
sandbox side) and ``reports`` (wire format, synthetic reports, statuses).
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Optional, Set, Tuple

import pytest

from . import adapters, compat, hookspecs, host, stats, timeouts
from .settings import MARKER, MARKER_HELP, SessionSettings, add_options, check_writable, settings_key

if TYPE_CHECKING:
    from .admission import Budget
    from .child import ChildSide
    from .scheduler import Scheduler

# The sandbox machinery (``child``, ``protocol``, ``reports``, ``scopes``,
# ``phased``, the scheduler and the runtime) is imported when the first
# test needs a sandbox: a run that isolates nothing pays for none of it.


def import_roots() -> List[str]:
    """The directories the loaded top-level modules and packages were imported
    from: what their ``sys.path`` entry would be (for an editable install,
    the checkout or its source directory)."""
    roots: List[str] = []
    for name, module in list(sys.modules.items()):
        if "." in name or module is None:
            continue
        try:
            path = getattr(module, "__path__", None)
            if path is not None:
                roots += [os.path.dirname(os.path.normpath(p)) for p in path if isinstance(p, str)]
            else:
                file = getattr(module, "__file__", None)
                if isinstance(file, str):
                    roots.append(os.path.dirname(file))
        except Exception:  # a module with an odd __path__ (lazy loaders) shows nothing
            continue
    return [r for r in roots if os.path.isabs(r)]
session_key = pytest.StashKey["IsolateSession"]()


class IsolateSession:
    """Per-pytest-process state, built once at configure (without probing
    the host: :meth:`ensure_probed`)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = SessionSettings(config)
        #: The sandbox side's plugin (registered with the probe).
        self.child_side: "Optional[ChildSide]" = None
        #: The next test's sandbox, prepared while the current one runs.
        self.held: Any = None
        self.caps: Any = None
        self.layers: Dict[str, str] = {}
        self._writable: Optional[Tuple[str, ...]] = None
        self._anywhere: Optional[Tuple[str, ...]] = None
        #: What plugins declare writable (``pytest_isolate_writable``).
        self.declared_writable: Tuple[str, ...] = ()
        self._visible: Optional[Tuple[str, ...]] = None
        self.disabled: Optional[str] = "--no-isolate" if self.settings.no_isolate else None
        self.debugger: Optional[str] = None
        #: The header line of --isolate-delegate, when it was given.
        self.delegation: Optional[str] = None
        #: --isolate-jobs: its budget (when given), and the scheduler of the
        #: tests in flight (when more than one may be); set with the probe.
        self.budget: "Optional[Budget]" = None
        self.jobs: "Optional[Scheduler]" = None
        #: Some collected test is isolated (or would be, but for
        #: --no-isolate or a debugger): the header line is due.
        self.wanted = False
        self.header_shown = False
        self._probed = False
        self._withheld: Optional[Tuple[int, ...]] = None
        self._plugin_listeners: Optional[Tuple[int, ...]] = None
        #: pytest_sessionstart has run: what pytest's process listens on
        #: from then on is the session's services (see _not_services).
        self.session_started = False
        #: a test's protocol has begun (its fixtures may listen from then on)
        self.testing = False
        if not self.disabled:
            for option, flag in (("usepdb", "--pdb"), ("trace", "--trace")):
                if config.getoption(option, False):
                    self.debugger = flag
                    break

    def withheld_fds(self) -> Tuple[int, ...]:
        """What a sandbox must not use of this process's descriptors: an
        xdist worker's link to its controller (what goes down it is
        believed there: a sandbox could report for every test, or have the
        controller import and call what it names), pytest-rerunfailures'
        link to its status server there (a sandbox could rewrite the rerun
        counts of every test of the session), pytest-reportlog's file (a
        sandbox could add reports to it), and what this process
        listened on before its session (plugins' own servers: a sandbox
        could take their clients' connections).  Taken once: they exist
        before the first test.  (Every socket this process listens on when
        a sandbox is forked, the fixtures' servers among them, is withheld
        by the runtime itself, in the sandbox.)  pytest's real stdout and
        stderr stay reachable: output of ``capsys.disabled()`` and live
        logging goes there, as in plain pytest."""
        if self._withheld is None:
            worker = compat.xdist_worker(self.config)
            fds = compat.xdist_channel_fds(worker) if worker is not None else []
            fds += compat.rerunfailures_fds(self.config)
            fds += host.fds_on(compat.reportlog_path(self.config))
            fds += self._plugin_listeners or ()
            self._withheld = tuple(sorted(fd for fd in set(fds) if fd > 2))
        return self._withheld

    @property
    def probed(self) -> bool:
        """Has a test needed a sandbox yet (see :meth:`ensure_probed`)?"""
        return self._probed

    def ensure_probed(self) -> None:
        """Before the first sandbox: move into a delegated cgroup if asked,
        probe the host, apply the policy (``strict`` raises the usage
        error).  Once; a run that isolates nothing never gets here."""
        if self._probed or self.in_process:
            return
        self._probed = True
        import isolate_runtime

        from .child import ChildSide

        # the services this process runs change only where the hooks below
        # say so: sandboxes made in between reuse the last look at them
        isolate_runtime.reuse_service_looks(True)

        self.child_side = ChildSide()
        self.config.pluginmanager.register(self.child_side, "isolate-child-side")
        stats_plugin = self.config.pluginmanager.get_plugin("isolate-stats")
        if stats_plugin is not None:
            stats_plugin.tracking = True
        self.delegation = host.delegate(self.settings["delegate"])
        self.caps = isolate_runtime.probe()
        if self.settings["policy"].value == "strict" and self.caps.missing():
            raise host.strict_error(self.caps)
        self.layers = host.layer_modes(self.caps)
        if self.settings["jobs"].source != "default":
            from .admission import Budget
            from .scheduler import Scheduler

            self.budget = Budget.resolve(self.settings, self.config)
            if self.budget.jobs > 1:
                self.jobs = Scheduler(self, self.budget)
        if self.session_started and not self.testing:
            self.not_services()

    def not_services(self) -> None:
        """What pytest's process listens on before its session starts is
        plugins' own (pytest-rerunfailures' status server, when pytest-xdist
        is installed): never relayed into a sandbox.  Fixtures start the
        services tests use, and they run later."""
        import isolate_runtime

        isolate_runtime.ignore_current_services()
        if self._plugin_listeners is None:
            self._plugin_listeners = host.listening_fds()

    def header(self) -> List[str]:
        """The header line (``-v``: with the details), once."""
        if self.caps is None and not self.in_process:
            return []  # the collection stopped before the probe (a usage error)
        self.header_shown = True
        lines = [host.header_line(self.caps, self.disabled, self.debugger)]
        if self.delegation:
            lines.insert(0, self.delegation)
        if self.budget is not None and not self.in_process:
            lines.append(f"{host.PREFIX}: {self.budget.header()}")
        verbose = (self.config.getoption("verbose", 0) or 0) > 0
        if verbose:
            lines += host.detail_lines(self.caps, self.disabled, self.debugger)
        network = None if self.in_process else host.network_line(self.caps, self.settings["network"])
        if network is not None and (verbose or self.settings["network"].source != "default"):
            lines.append(network)  # the default is said with -v only
        if verbose:
            if timeouts.active(self.config) and not self.in_process:
                lines.append(f"{host.PREFIX}: pytest-timeout's timeouts apply to isolated tests as sandbox timeouts "
                             "(stack dump, then the whole sandbox is killed)")
        return lines

    @property
    def in_process(self) -> bool:
        return self.disabled is not None or self.debugger is not None

    def sandboxed(self, item: pytest.Item) -> bool:
        """Does this item run in a sandbox (seen from pytest or from the sandbox)?"""
        if self.child_side is not None and self.child_side.active is item:
            return True
        s = item.stash.get(settings_key, None)
        return bool(s is not None and s.isolated.value and not self.in_process)

    def visible_base(self) -> Tuple[str, ...]:
        """Paths below ``/tmp`` or ``/dev/shm`` whose writes are listed like
        writes anywhere else (what is written elsewhere there counts as
        temporary files): the interpreter and virtualenv, the rootdir,
        ``sys.path`` and the places the loaded modules came from (a project
        checked out and installed under /tmp; an editable install is found
        through an import hook, not ``sys.path``)."""
        if self._visible is None:
            hidden = ("/tmp", "/dev/shm")
            candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, os.fspath(self.config.rootpath)]
            candidates += [p for p in sys.path if p and os.path.isabs(p)]
            candidates += import_roots()
            found: List[str] = []
            for path in dict.fromkeys(os.path.realpath(p) for p in candidates):
                # (not the whole of /tmp: what is written there is not listed)
                if os.path.isdir(path) and any(path.startswith(h + "/") for h in hidden):
                    found.append(path)
            # A path inside another one is shown with it.
            self._visible = tuple(p for p in found if not any(p.startswith(q + "/") for q in found))
        return self._visible

    def writable_anywhere(self, session: pytest.Session) -> Tuple[str, ...]:
        """Every path some sandbox of this session may write: the ones every
        isolated test gets, the ones plugins declare, and each collected
        test's own (a link one test plants there is followed by whoever
        writes there later, pytest's process included)."""
        if self._anywhere is None:
            paths = list(self.writable_base() + self.declared_writable)
            for item in session.items:
                try:
                    paths += list(self.settings.for_item(item).writable.value or ())
                except pytest.UsageError:  # a bad marker: that test fails with it, and runs no sandbox
                    continue
            self._anywhere = tuple(dict.fromkeys(paths))
        return self._anywhere

    def writable_base(self) -> Tuple[str, ...]:
        """Pass-throughs every isolated test gets: pytest's basetemp (so
        ``tmp_path`` follows pytest's retention) and the session's writable
        paths (ini ``isolate_writable``, ``PYTEST_ISOLATE_WRITABLE``: a
        marker's paths come on top of them).  Not the cache directory:
        pytest writes there at session end, and would follow a link a test
        planted; what a test stores with ``cache.set`` comes back as data."""
        if self._writable is None:
            paths: List[str] = []
            base = compat.basetemp(self.config)
            if base is not None:
                paths.append(base)
            paths.extend(self.settings["writable"].value or ())
            self._writable = tuple(paths)
        return self._writable


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    stats.add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> Optional[int]:
    if config.getoption("isolate_doctor", False):
        import isolate_runtime

        text = host.doctor_report(isolate_runtime.probe())
        compat.terminal_writer(config).write(text)
        return 0
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    name = host.active_pytest_isolated(config)
    if name is not None:
        raise pytest.UsageError(host.ISOLATED_PLUGIN.format(name=name))
    foreign = host.foreign_same_package(config.pluginmanager)
    if foreign is not None:
        raise pytest.UsageError(foreign)
    session = IsolateSession(config)
    config.stash[session_key] = session
    if not session.in_process:
        compat.harden_rm_rf()
        compat.harden_dead_symlinks()
    config.pluginmanager.register(stats.StatsPlugin(config), "isolate-stats")
    if timeouts.active(config):
        config.pluginmanager.register(timeouts.TimerGuard(session.sandboxed), timeouts.GUARD)
    if not session.in_process:
        adapters.register(config)
    if session.settings["all"].value or (session.settings["policy"].value == "strict" and _xdist_controller(config)):
        # Every test is isolated (or the tests are collected elsewhere, by
        # xdist's workers, and strict must refuse here): probe now (last: a
        # refusal unconfigures what is registered above).
        session.wanted = True
        session.ensure_probed()


def _xdist_controller(config: pytest.Config) -> bool:
    return getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = session.config.stash.get(session_key, None)
    if state is not None and not state.in_process:
        state.declared_writable = host.declared_writable(session.config)
        state.session_started = True
        if state.probed:
            state.not_services()


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, None, None]:
    # Inside pytest-cov's own wrapper (trylast: the innermost), which saves
    # and reports right after the loop: what sandboxes named must still be
    # something its report can read.
    yield
    from . import cov

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for path, now in cov.recheck():
        line = (f"{host.PREFIX}: coverage data for {path} left out of the report: it is {now} now, not the "
                "regular file it was when its test sent its data")
        if reporter is not None:
            reporter.write_line(line, yellow=True)
        else:
            sys.stderr.write(line + "\n")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # Sandboxes whose namespace teardown runs after their report: finish it
    # before pytest exits (xdist workers end with os._exit, skipping atexit).
    state = session.config.stash.get(session_key, None)
    if state is not None and state.jobs is not None:
        state.jobs.stop()  # an interrupted session
    if state is not None and state.held is not None:
        state.held.discard()  # its test never came (-x, an interrupt)
        state.held = None
    if "isolate_runtime.launcher" in sys.modules:  # a sandbox was made
        import isolate_runtime

        isolate_runtime.settle()


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is not None:
        if session.child_side is not None:
            config.pluginmanager.unregister(session.child_side)
        if session.probed:
            import isolate_runtime

            isolate_runtime.reuse_service_looks(False)
        adapters.unregister(config)
        guard = config.pluginmanager.get_plugin("isolate-timeout-guard")
        if guard is not None:
            config.pluginmanager.unregister(guard)
        stats_plugin = config.pluginmanager.get_plugin("isolate-stats")
        if stats_plugin is not None:
            stats_plugin.close()
            config.pluginmanager.unregister(stats_plugin)
        del config.stash[session_key]


def pytest_report_header(config: pytest.Config) -> List[str]:
    # Known before collection only under --isolate-all (xdist's controller
    # collects nothing, and shows no collection-end lines).
    session = config.stash.get(session_key, None)
    if session is None or not session.wanted:
        return []
    return session.header()


def pytest_report_collectionfinish(config: pytest.Config) -> List[str]:
    session = config.stash.get(session_key, None)
    if session is None or not session.wanted or session.header_shown:
        return []
    return session.header()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    session = config.stash[session_key]
    checked: Set[Tuple[str, Any]] = set()
    for item in items:
        s = timeouts.effective(item, session.settings.for_item(item))
        item.stash[settings_key] = s
        if not session.wanted and (s.isolated.value or (session.in_process and
                                                        item.get_closest_marker(MARKER) is not None)):
            session.wanted = True
        if s.isolated.value and not session.in_process:
            forked = host.forked_reason(config, item)
            if forked is not None:
                raise pytest.UsageError(host.FORKED_BOTH.format(
                    nodeid=item.nodeid, why=f"from {s.isolated.source}", forked=forked))
            for writable in (session.settings["writable"], s.writable):
                if (writable.source, writable.value) not in checked:
                    checked.add((writable.source, writable.value))
                    check_writable(writable)
    if session.wanted:
        session.ensure_probed()  # strict refuses here, before any test runs


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Optional[bool]:
    session = item.config.stash.get(session_key, None)
    if session is None or session.in_process:
        return None
    session.testing = True
    s = item.stash.get(settings_key, None)
    if s is None:  # added after collection by another plugin
        s = item.stash[settings_key] = timeouts.effective(item, session.settings.for_item(item))
    if not s.isolated.value:
        _services_changed(session)  # a test in this process may start or stop a service
        if session.jobs is not None:
            session.jobs.before_in_process(item)
        return None
    from . import phased, protocol, scopes

    if scopes.runs_in_process(item):
        _services_changed(session)
        if session.jobs is not None:
            session.jobs.before_in_process(item)
        return None
    session.ensure_probed()
    # A plugin that runs the protocol itself (pytest-rerunfailures) runs it
    # for an isolated test too, each phase isolated (phased.py), each try
    # with nothing else in flight.
    if session.jobs is not None and phased.may_take(item):
        session.jobs.before_in_process(item)
    taken = phased.offer(item, nextitem, sys.modules[__name__])
    if taken is not None:
        return bool(taken)
    item.stash[phased.own_key] = True
    try:
        if session.jobs is not None:
            session.jobs.run(item, nextitem, s)
        else:
            protocol.run_isolated(item, nextitem, s, session)
    finally:
        del item.stash[phased.own_key]
    return True


def _services_changed(session: Optional[IsolateSession]) -> None:
    """The last look at this process's listening services is stale (before
    the probe no sandbox was made, so there is none to forget)."""
    if session is not None and session.probed:
        import isolate_runtime

        isolate_runtime.services_changed()


def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> None:
    # In the pytest process, a fixture of a higher scope may start a service
    # (in a sandbox, the services are the sandbox's own: no harm done).
    if fixturedef.scope != "function":
        _services_changed(request.config.stash.get(session_key, None))
        from . import scopes

        scopes.note_setup(fixturedef)


def pytest_fixture_post_finalizer(fixturedef: Any, request: pytest.FixtureRequest) -> None:
    if fixturedef.scope != "function":
        _services_changed(request.config.stash.get(session_key, None))
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    __tracebackhide__ = True  # a higher scope's setup error is the fixture's, as pytest shows it
    session = item.config.stash.get(session_key, None)
    if session is None or not session.probed:
        return  # no sandbox yet: nothing of ours to set up
    from . import phased, scopes

    scopes.raise_failed_setup(item)
    phased.setup(item, session)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: "pytest.CallInfo[None]") -> Optional[pytest.TestReport]:
    session = item.config.stash.get(session_key, None)
    if session is None or not session.probed:
        return None
    from . import phased

    return phased.report(item, call)


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Optional[Tuple[str, str, str]]:
    if getattr(report, "isolate_status", None) is None:
        return None  # not one of ours
    from . import reports

    return reports.teststatus(report)


@pytest.hookimpl(trylast=True)
def pytest_isolate_launcher(item: pytest.Item) -> Callable[..., Any]:
    import isolate_runtime

    return isolate_runtime.run


__all__ = ["MARKER"]
