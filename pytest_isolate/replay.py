"""The sandbox's messages, logged in the parent as pytest would log them.

:class:`Replay` receives each message the sandbox sends (checked by
:mod:`pytest_isolate.messages`) and turns it into the hook calls pytest makes
for an in-process test: reports (subtests' too), warnings, coverage data,
cache values.
:class:`SandboxOutput` holds the files the sandbox prints into (under fd
capture), for the parent to read if the sandbox dies before reporting.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from typing import Any, Callable, List, Literal, Optional, Set, Tuple

import pytest
from isolate_runtime import ProtocolViolation

from . import compat, cov, messages, scopes

#: The most plugin data messages one test may send.
MAX_PLUGIN_MESSAGES = 1000
#: How many times over a test's subtests may claim the time its sandbox ran,
#: together: nested subtests overlap (plain pytest counts the inner one's
#: time in the outer one's too), eight levels deep at most.
SUBTEST_OVERLAP = 8


class Replay:
    """Receives the sandbox's messages, checks them (:mod:`messages`) and
    logs them in the parent.

    The setup report is logged as it arrives.  The call report is held
    until the sandbox's teardown report (or its end): if the sandbox then
    dies, its earlier word that the call passed is not believed (a test
    that reports success and exits with status 3 did not pass).

    With ``log=False`` the setup and call reports are collected in
    ``collected`` instead, for a plugin that runs the test's protocol
    itself and logs what it gets (subtests' reports are logged as they
    arrive either way, as in-process).

    With ``live=False`` (a test started before its turn) each message is
    still checked as it arrives, so a bad one ends the sandbox at once, but
    what it makes pytest do waits for :meth:`go_live`, at the test's turn:
    nothing of it is logged, merged or recorded before the tests ahead of it
    are (and nothing at all if its turn never comes).  A plugin's refusal of
    its data then (``pytest_isolate_merge_data``) is kept in ``refused``:
    the sandbox has been let go by then, and its result is made CRASHED
    when it is settled, as a refusal at once would have."""

    def __init__(self, item: pytest.Item, log: bool = True, live: bool = True) -> None:
        self.item = item
        self.config = item.config
        self.log = log
        self.collected: List[pytest.TestReport] = []
        self.live = live
        self._waiting: List[Callable[[], None]] = []
        #: Why a plugin refused its data after the sandbox's messages were
        #: read (``live=False``), if it did.
        self.refused: Optional[str] = None
        self.reports: List[pytest.TestReport] = []
        self.phases = messages.Phases()
        self.held_call: Optional[pytest.TestReport] = None
        self.teardown: Optional[pytest.TestReport] = None
        self.cache: List[Tuple[str, Any]] = []
        self.plugin_messages = 0
        #: Since when the sandbox may have been timing the test (its caller
        #: moves it earlier for a sandbox released before this was made).
        self.since = time.time()
        #: The durations taken so far (sandbox's part): of the phases, and
        #: of the subtests (which run within the call phase).
        self._claimed = {"phases": 0.0, "subtests": 0.0}

    def on_message(self, msg: Any) -> None:
        kind = messages.kind_of(msg)
        if kind == "report":
            report = messages.report_from(self.config, msg.get("report"), self.item)
            reused = msg.get("sections_reused", 0)
            earlier = self.reports[-1].sections if self.reports else []
            if isinstance(reused, bool) or not isinstance(reused, int) or not 0 <= reused <= len(earlier):
                raise ProtocolViolation("a report that reuses sections it does not have")
            report.sections = list(earlier[:reused]) + list(report.sections)
            if msg.get("text_repr") is True and isinstance(report.longrepr, str):
                report.longrepr = compat.TextRepr(report.longrepr)
            self.phases.accept(report.when)
            self._bound_duration(report, "phases")
            if report.when == "setup":
                # the higher scopes' setup, done here before the sandbox:
                # pytest counts it in the test's setup phase
                report.duration += self.item.stash.get(scopes.parent_seconds_key, 0.0)
            self._share(report)
            self.reports.append(report)
            if report.when == "setup":
                self.emit(report)
            elif report.when == "call":
                self.held_call = report
            else:
                self.log_held_call()
                self.teardown = report  # logged after the parent's teardown
        elif kind == "subtest":
            self.phases.accept_subtest()
            counted, shown = msg.get("counted", False), msg.get("shown", True)
            if not isinstance(counted, bool) or not isinstance(shown, bool):
                raise ProtocolViolation("a subtest message whose 'counted' or 'shown' is not true or false")
            report = messages.subtest_report_from(self.config, msg.get("report"), self.item)
            self._bound_duration(report, "subtests")
            compat.share_node_id(report, self.item)
            self._do(self._log_subtest, report, counted and report.failed, shown)
        elif kind == "warning":
            text, (module, qualname), filename, lineno, line = messages.check_warning(msg)
            self._warning(text, module, qualname, filename, lineno, line)
        elif kind == cov.KIND:
            self._do(self._merge_coverage, messages.check_coverage(msg, cov.file_tracer_names()))
        elif kind == "cache":
            self.cache.append(messages.check_cache(msg))
        elif kind == "junitxml":
            self._do(self._junitxml, *messages.check_junitxml(msg))
        elif kind == "plugin":
            self.merge_plugin_data(*messages.check_plugin_data(msg))
        else:
            raise ProtocolViolation(f"a message of unknown type {kind!r}")

    def _bound_duration(self, report: pytest.TestReport, pool: str) -> None:
        """A phase cannot have taken longer than pytest has seen the sandbox
        run, nor the phases together; a subtest neither, nor the subtests
        together more than SUBTEST_OVERLAP times over (a nested subtest's
        time is in the one around it too) (``pool``): the durations are
        the sandbox's word, and --durations, junitxml and the budgets read
        them."""
        elapsed = max(0.0, time.time() - self.since)
        times = SUBTEST_OVERLAP if pool == "subtests" else 1
        allowed = max(0.0, min(elapsed, times * elapsed - self._claimed[pool]))
        if report.duration > allowed:
            report.duration = allowed
        self._claimed[pool] += report.duration

    @staticmethod
    def _merge_coverage(data: Any) -> None:
        try:
            cov.merge(data)
        except Exception as e:  # a shape the checks let through: this test's data, not the session's
            raise ProtocolViolation(f"coverage data coverage.py could not merge ({type(e).__name__}: "
                                    f"{str(e)[:200]})") from None

    def _junitxml(self, what: str, name: str, value: str) -> None:
        xml = compat.junitxml(self.config)
        if xml is None:  # (its sandbox had one: a fork of this process)
            return
        if what == "attribute":
            xml.node_reporter(self.item.nodeid).add_attribute(name, value)
        else:
            xml.add_global_property(name, value)

    def _log_subtest(self, report: pytest.TestReport, counted: bool, shown: bool) -> None:
        if counted:
            compat.count_failed_subtest(self.item)
        # Logged as it arrives, as the subtests plugin logs it while the
        # test runs (the call report is logged after all of them); what the
        # terminal prints for one logged under capture is in the test's
        # captured output already (see child.send_subtest).
        with contextlib.nullcontext() if shown else compat.output_discarded(self.config):
            self.item.ihook.pytest_runtest_logreport(report=report)

    def emit(self, report: pytest.TestReport) -> None:
        """Log a phase report (or collect it, see the class's doc)."""
        if self.log:
            self._do(self.item.ihook.pytest_runtest_logreport, report=report)
        else:
            self.collected.append(report)

    def merge_plugin_data(self, name: str, data: Any) -> None:
        """Hand a plugin's data to its ``pytest_isolate_merge_data``; what it
        refuses (by raising) makes the test CRASHED, as any invalid message."""
        self.plugin_messages += 1
        if self.plugin_messages > MAX_PLUGIN_MESSAGES:
            raise ProtocolViolation(f"more than {MAX_PLUGIN_MESSAGES} messages of plugin data")
        if self.live:
            self._merge(name, data)
        else:
            self._waiting.append(functools.partial(self._merge_later, name, data))

    def _merge(self, name: str, data: Any) -> None:
        try:
            self.item.ihook.pytest_isolate_merge_data(item=self.item, name=name, data=data)
        except ProtocolViolation:
            raise
        except Exception as e:
            raise ProtocolViolation(f"the plugin data sent as {name!r} was refused: {type(e).__name__}: {e}") from None

    def _merge_later(self, name: str, data: Any) -> None:
        if self.refused is not None:
            return  # nothing after a refusal, as nothing is read after one at once
        try:
            self._merge(name, data)
        except ProtocolViolation as e:
            self.refused = e.reason

    def _do(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.live:
            func(*args, **kwargs)
        else:
            self._waiting.append(functools.partial(self._later, func, *args, **kwargs))

    def _later(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """At the test's turn: a refusal then is kept, as for plugin data."""
        try:
            func(*args, **kwargs)
        except ProtocolViolation as e:
            if self.refused is None:
                self.refused = e.reason

    def go_live(self) -> None:
        """The test's turn: do what its messages asked so far, in order, and
        the rest as it comes."""
        self.live = True
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            call()

    def log_held_call(self) -> None:
        if self.held_call is not None:
            report, self.held_call = self.held_call, None
            self.emit(report)

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
        compat.share_node_id(report, self.item)
        if self.reports and report.keywords == self.reports[0].keywords:
            report.keywords = self.reports[0].keywords
        report.when = sys.intern(report.when)  # type: ignore[assignment]
        report.outcome = sys.intern(report.outcome)  # type: ignore[assignment]

    def _warning(self, text: str, module: str, qualname: str, filename: str, lineno: int, line: str) -> None:
        category: Any = messages.warning_class(module, qualname)
        # With its line given, formatting the warning (pytest's terminal
        # does) never opens ``filename``.
        try:
            message = warnings.WarningMessage(category(text), category, filename, lineno, line=line)
        except Exception:  # a warning class whose constructor wants more
            category = UserWarning
            message = warnings.WarningMessage(UserWarning(text), UserWarning, filename, lineno, line=line)
        # What pytest's catch_warnings_for_item does with what it recorded;
        # warn_explicit would run the filters a second time (an "error"
        # filter would raise here, "once" would deduplicate differently).
        self._do(self.item.ihook.pytest_warning_recorded.call_historic,
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
    #: The files of every sandbox in flight (--isolate-jobs): each sandbox
    #: is given its own, and the others' withheld.
    _open: Set[int] = set()

    def __init__(self, config: pytest.Config) -> None:
        self.fds: List[int] = []
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is None or config.getoption("capture", "fd") != "fd" or not hasattr(os, "memfd_create"):
            return
        for name in ("stdout", "stderr"):
            self.fds.append(os.memfd_create(f"isolate-{name}", os.MFD_CLOEXEC))
        SandboxOutput._open.update(self.fds)

    def others(self) -> Tuple[int, ...]:
        """The files of the other sandboxes in flight."""
        return tuple(sorted(SandboxOutput._open.difference(self.fds)))

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
        SandboxOutput._open.difference_update(self.fds)
        for fd in self.fds:
            os.close(fd)
        self.fds = []
