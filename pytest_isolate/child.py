"""What runs inside the sandbox: the function scope of one test.

The sandboxed process is a fork of the pytest process, so it already holds
the item, the configuration and every higher-scoped fixture the parent set
up (copy-on-write).  It runs ``runtestprotocol`` for the item with a
``nextitem`` whose chain is the item's parent chain, so only the function
scope is torn down here; the parent owns every other finalizer.  Each phase
report is sent to the parent the moment it exists, through pytest's own
serialization hook, preceded by the warnings recorded during that phase
(the messages are listed in :mod:`pytest_isolate.messages`).

What the test prints goes to files of this sandbox's own (the parent made
them and reads them if the sandbox dies), not to pytest's capture files:
nothing this sandbox or what it started writes late can land in another
test's output.

The functions the runtime's own path here relies on are bound at import:
a test that mocks ``os.getpid`` or ``os.write`` does not change them.
"""
from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import re
import sys
import warnings
from typing import Any, Dict, Generator, Iterator, List, Mapping, Optional, Sequence, Tuple

import pytest
from isolate_runtime import message_budget_left, send_message

from . import compat
from .cov import SandboxCoverage
from .messages import End

_getpid = os.getpid
_dumps = json.dumps
_dup2 = os.dup2
_fstat = os.fstat

#: A report's new captured output may take this share of what is left of
#: the sandbox's message limit (the rest of the test's reports still fit).
SECTION_SHARE = 3
#: A report's failure text (its message is in it several times) may take
#: this share of it.
LONGREPR_SHARE = 6


class ParentScope:
    """Stands in for ``nextitem`` in the sandbox: its chain is the test's
    parent chain, so ``SetupState.teardown_exact`` stops at the function
    scope and never runs a finalizer the parent owns."""

    def __init__(self, chain: Sequence[Any]) -> None:
        self._chain = list(chain)
        self.nodeid = chain[-1].nodeid if chain else ""

    def listchain(self) -> List[Any]:
        return list(self._chain)


def send(kind: str, **fields: Any) -> None:
    fields["t"] = kind
    send_message(fields)


class ChildSide:
    """Registered in every pytest process; acts only in a sandbox, where
    ``active`` is the item being run."""

    def __init__(self) -> None:
        self.active: Optional[pytest.Item] = None
        self.pid = 0
        self.log: List[warnings.WarningMessage] = []
        #: The sections the parent already has for the active item.
        self.sent_sections: List[Tuple[str, str]] = []
        #: The phase the active item is in, and whether its hook (call,
        #: teardown) is running: a report made inside it, or one for
        #: another phase, is not that phase's report (subtests make one
        #: per subtest, with ``when="call"``).
        self.phase = ""
        self.in_phase = 0
        #: The active item's count of failed subtests the parent knows of.
        self.failed_subtests = 0

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.active is item:
            item.ihook.pytest_isolate_child_setup(item=item)

    @contextlib.contextmanager
    def _phase(self, when: str) -> Iterator[None]:
        self.phase = when
        self.in_phase += 1
        try:
            yield
        finally:
            self.in_phase -= 1

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, None]:
        with self._phase("call"):
            yield

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, Any, None]:
        with self._phase("teardown"):
            yield

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Generator[None, Any, None]:
        """In a sandbox only this and the session's bookkeeping (``-x``)
        see a report logged while the test runs (see :func:`run_item`):
        a subtest's report, which goes to the parent to be logged there."""
        if self.active is not None and report.nodeid == self.active.nodeid:
            self.send_subtest(self.active, report)
        yield

    def send_subtest(self, item: pytest.Item, report: pytest.TestReport) -> None:
        data = wire(item.config, report)
        if data.get("_report_type") != "SubTestReport":
            return  # what else a plugin logs here stays here, as it is not the test's
        # unittest's subTest logs under capture: what the terminal prints
        # for it lands in the test's captured output, not on the terminal.
        # That is printed here, into this test's capture, and the parent
        # must keep its own copy off the terminal.
        shown = not compat.capturing_now(item.config)
        if not shown:
            terminal = item.config.pluginmanager.get_plugin("terminalreporter")
            if terminal is not None:
                terminal.pytest_runtest_logreport(report=report)
        self.send_warnings()
        sections = [tuple(x) for x in data.get("sections", [])]
        data["sections"] = [list(x) for x in fit(sections, message_budget_left() // SECTION_SHARE)]
        data["longrepr"] = fit_text(data.get("longrepr"), message_budget_left() // LONGREPR_SHARE)
        # The subtests fixture counts a failed subtest before logging it.
        count = compat.failed_subtest_count(item)
        counted, self.failed_subtests = count > self.failed_subtests, count
        send("subtest", report=data, counted=counted, shown=shown)

    # Outermost wrapper: sees the report after every other plugin (skipping,
    # tmp_path, ...) has shaped it.
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Generator[None, Any, None]:
        outcome = yield
        if self.active is None or self.in_phase or call.when != self.phase:
            # (a subtest's: it travels once it is logged, as the subtest
            # report built from it)
            return
        if _getpid() != self.pid:
            # The test forked and the child returned into pytest instead of
            # calling os._exit: end that stray copy of the session here.
            sys.stderr.write("pytest-isolate: a process forked by the test returned into pytest; "
                             "ending it (call os._exit in forked children)\n")
            os._exit(70)
        report = outcome.get_result()
        report.sections = merge_sections(report.sections)
        self.send_warnings()
        data = wire(item.config, report)
        # A later phase's report repeats the earlier phases' output: only
        # what is new travels, the parent puts the rest back.
        sections = [tuple(x) for x in data["sections"]]
        reused = 0
        while reused < min(len(sections), len(self.sent_sections)) and \
                sections[reused] == self.sent_sections[reused]:
            reused += 1
        new = fit(sections[reused:], message_budget_left() // SECTION_SHARE)
        self.sent_sections = sections[:reused] + new
        data["sections"] = [list(x) for x in new]
        data["longrepr"] = fit_text(data.get("longrepr"), message_budget_left() // LONGREPR_SHARE)
        # A failure pytest renders without a crash line (a missing fixture,
        # a doctest) travels as its text: the parent gives it back its kind.
        longrepr = report.longrepr
        as_text = hasattr(longrepr, "toterminal") and not (hasattr(longrepr, "reprcrash")
                                                           and hasattr(longrepr, "reprtraceback"))
        send("report", report=data, sections_reused=reused, **({"text_repr": True} if as_text else {}))

    def send_warnings(self) -> None:
        pending, self.log[:] = list(self.log), []
        for w in pending:
            cat = w.category
            # The source line, read here as pytest would read it (the
            # parent never opens a file the sandbox names: a FIFO would
            # hang pytest, /dev/zero fill its memory).
            line = str(w.line) if w.line is not None else _source_line(str(w.filename), int(w.lineno or 0))
            send("warning", message=str(w.message), category=[cat.__module__, cat.__qualname__],
                 filename=str(w.filename), lineno=int(w.lineno or 0), line=line[:LINE_LIMIT])


#: The most of a warning's source line sent (pytest shows it stripped).
LINE_LIMIT = 4096


def _source_line(filename: str, lineno: int) -> str:
    """What ``warnings.formatwarning`` would show, from a regular file only
    (a FIFO would hang the test, a device be read without end)."""
    import linecache

    try:
        if filename not in linecache.cache and not os.path.isfile(filename):
            return ""
        return linecache.getline(filename, lineno)
    except Exception:  # as warnings.formatwarning: no line
        return ""


def plain(value: Any) -> Any:
    """``value`` as JSON types: tuples become lists, anything else that is
    not plain data its ``str()`` (what junitxml would print of it)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def wire(config: pytest.Config, report: pytest.TestReport) -> Dict[str, Any]:
    data: Dict[str, Any] = config.hook.pytest_report_to_serializable(config=config, report=report)
    out: Dict[str, Any] = plain(data)
    return out


def _cost(text: str) -> int:
    """The bytes ``text`` takes in a frame (JSON: a control character is six)."""
    if text.isascii() and text.isprintable():
        return len(text) + text.count('"') + text.count("\\")
    return len(_dumps(text, ensure_ascii=False).encode("utf-8", "backslashreplace")) - 2


def fit(sections: Sequence[Tuple[str, str]], budget: int) -> List[Tuple[str, str]]:
    """Sections that together take at most ``budget`` bytes as they are
    sent: a long one keeps its end, after a note that says so."""
    costs = [_cost(c) for _, c in sections]
    size = sum(costs)
    if size <= budget:
        return list(sections)
    out = []
    for (title, content), cost in zip(sections, costs):
        share = max(1024, budget * cost // max(1, size))
        if cost > share:
            cut = len(content) - max(1, len(content) * share // cost)
            content = (f"[pytest-isolate: the first {cut} characters of this output were cut: what one test "
                       f"sends back is limited by --isolate-message-limit]\n" + content[cut:])
        out.append((title, content))
    return out


def fit_text(value: Any, budget: int) -> Any:
    """A serialized longrepr whose text takes at most about ``budget``
    characters and ``budget // 256`` values: a long list (the lines of a
    message of many lines) keeps its start, then a line that says what was
    cut; a long string keeps its start, then a note (a failure message of
    megabytes is in the report several times: whole, the report would be
    over the limit, or over the channel's count of values, and the test
    CRASHED)."""
    cap = max(64, budget // 256)
    chars, values = _measure_text(value)
    if values > cap:
        value = _cut_lists(value, cap, values)
        chars, values = _measure_text(value)
    if chars <= budget:
        return value

    def cut(v: Any) -> Any:
        if isinstance(v, str):
            cost = _cost(v)
            share = max(256, budget * cost // chars)
            if cost <= share:
                return v
            keep = max(1, len(v) * share // cost)
            return (v[:keep] + f"\n[pytest-isolate: the last {len(v) - keep} characters of this text were cut: "
                    "what one test sends back is limited by --isolate-message-limit]")
        if isinstance(v, list):
            return [cut(x) for x in v]
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        return v

    return cut(value)


def _measure_text(value: Any) -> Tuple[int, int]:
    """(bytes its strings take in a frame, values in it)."""
    chars = values = 0
    stack = [value]
    while stack:
        v = stack.pop()
        values += 1
        if isinstance(v, str):
            chars += _cost(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return chars, values


def _cut_lists(value: Any, cap: int, values: int) -> Any:
    if isinstance(value, list):
        keep = max(4, cap * len(value) // values)
        kept = [_cut_lists(x, cap, values) for x in value[:keep]]
        if len(value) > keep and all(isinstance(x, str) for x in value):
            kept.append(f"[pytest-isolate: {len(value) - keep} more lines were cut: what one test sends back is "
                        "limited by --isolate-message-limit]")
        return kept
    if isinstance(value, dict):
        return {k: _cut_lists(x, cap, values) for k, x in value.items()}
    return value


def merge_sections(sections: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """One section per title: the parent's part of a phase (higher-scoped
    setup output) and the sandbox's part are one phase to the user."""
    out: Dict[str, str] = {}
    for title, content in sections:
        before = out.get(title)
        if before and content and title.startswith("Captured log ") and not before.endswith("\n"):
            before += "\n"  # pytest strips each phase's log text: the two parts are lines apart
        out[title] = (before or "") + content
    merged = list(out.items())
    # pytest adds a phase's captured stdout and stderr before its log (the
    # logging plugin's wrapper is the outer one): the parent's log of a
    # higher-scoped setup must not put its title first
    for when in {m.group(2) for m in map(_CAPTURED.match, out) if m}:
        slots = [i for i, (title, _) in enumerate(merged) if _phase(title) == when]
        ordered = sorted((merged[i] for i in slots), key=lambda section: _RANK[section[0].split()[1]])
        for i, section in zip(slots, ordered):
            merged[i] = section
    return merged


_CAPTURED = re.compile(r"Captured (stdout|stderr|log) (\w+)$")
_RANK = {"stdout": 0, "stderr": 1, "log": 2}


def _phase(title: str) -> Optional[str]:
    m = _CAPTURED.match(title)
    return m.group(2) if m else None


def private_capture(config: pytest.Config, files: Sequence[int]) -> None:
    """Point pytest's fd capture in this sandbox at ``files`` (one per
    captured fd, made by the parent): the file objects stay the same,
    only the descriptors beneath them change."""
    capturing = compat.global_capture(config)
    if capturing is None or not files:
        return
    for cap, new in zip((getattr(capturing, "out", None), getattr(capturing, "err", None)), files):
        tmpfile = getattr(cap, "tmpfile", None)
        target = getattr(cap, "targetfd", None)
        if tmpfile is None or not isinstance(target, int) or new < 0:
            continue
        try:
            old = tmpfile.fileno()
        except (AttributeError, ValueError, OSError):
            continue
        try:
            tmpfile.flush()
            before = _fstat(old)
            redirected = _fstat(target)
            _dup2(new, old)
            if (redirected.st_dev, redirected.st_ino) == (before.st_dev, before.st_ino):
                _dup2(new, target)  # capturing right now: the fd itself too
            tmpfile.seek(0)
        except OSError:
            continue


class CacheRelay:
    """``config.cache.set`` in the sandbox: the value goes to the parent,
    which stores it (the sandbox's copy of the cache directory is not the
    parent's: a link planted there would be followed by the parent)."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._get = cache.get
        self._stored: Dict[str, Any] = {}

    def set(self, key: str, value: object) -> None:
        self._stored[key] = plain(value)
        send("cache", key=key, value=self._stored[key])

    def get(self, key: str, default: object) -> object:
        if key in self._stored:
            return self._stored[key]
        return self._get(key, default)

    def install(self) -> None:
        self._cache.set = self.set
        self._cache.get = self.get


def relay_junitxml(item: pytest.Item) -> None:
    """``record_xml_attribute`` and ``record_testsuite_property`` in the
    sandbox: they write into pytest's junitxml writer, whose copy here is
    never written out; the name and value go to the parent, which records
    them in its own (what pytest writes is ``str(value)``)."""
    xml = compat.junitxml(item.config)
    if xml is None:
        return

    def add_attribute(name: object, value: object) -> None:
        send("junitxml", what="attribute", name=str(name), value=str(value))

    class SuiteProperties(list):  # type: ignore[type-arg]
        # record_testsuite_property is session-scoped: the parent made it,
        # bound to the writer; what it calls appends (name, text) here
        def append(self, entry: Any) -> None:
            name, value = entry
            send("junitxml", what="suite property", name=str(name), value=str(value))

    xml.node_reporter(item.nodeid).add_attribute = add_attribute
    xml.global_properties = SuiteProperties()


def plugin_data(item: pytest.Item) -> List[Tuple[str, Any]]:
    """What plugins send back (``pytest_isolate_child_data``), as plain data."""
    out: List[Tuple[str, Any]] = []
    try:
        answers = item.ihook.pytest_isolate_child_data(item=item)
    except Exception as e:  # a plugin's bug: its data is lost, the test's result is not
        sys.stderr.write(f"pytest-isolate: a pytest_isolate_child_data implementation raised {e!r}; "
                         "no plugin data was sent for this test\n")
        return out
    for answer in answers:
        if not isinstance(answer, Mapping):
            sys.stderr.write(f"pytest-isolate: a pytest_isolate_child_data implementation returned "
                             f"{type(answer).__name__}, not a mapping of names to data; not sent\n")
            continue
        out.extend((str(name), plain(data)) for name, data in answer.items())
    return out


def run_item(side: ChildSide, item: pytest.Item, chain: Sequence[Any], capture: Sequence[int] = (),
             suite_reruns: Optional[int] = None) -> Dict[str, Any]:
    """The sandbox payload: returns how the protocol ended (:class:`End`).
    ``suite_reruns``: pytest-rerunfailures' suite rerun count when the
    sandbox was made (its link to the count is withheld)."""
    side.active, side.pid, side.sent_sections, side.phase = item, _getpid(), [], "setup"
    side.failed_subtests = compat.failed_subtest_count(item)
    # A report logged here (a subtest's) reaches the parent, which logs it:
    # none of this process's reporters (terminal, xdist's link to its
    # controller, report files) may log it a second time.
    compat.keep_hookimpls(item.config, "pytest_runtest_logreport", (side, item.session))
    private_capture(item.config, capture)
    compat.continue_live_setup(item)
    relay_junitxml(item)
    compat.rerunfailures_stand_in(item.config, suite_reruns)
    cache = getattr(item.config, "cache", None)
    if cache is not None:
        CacheRelay(cache).install()
    coverage = SandboxCoverage.take_over()
    nextitem = ParentScope(chain)
    compat.pin_teardown(item, nextitem)
    ended = End("done")
    # pytest's faulthandler_timeout, armed here: the stack to dump is the
    # test's (the watchdog armed in pytest's process is not forked with it).
    dump = compat.faulthandler_timeout(item.config)
    if dump is not None:
        faulthandler.dump_traceback_later(dump[0], file=dump[1], exit=dump[2])
    try:
        # Recorded for pytest's warnings plugin in the parent; without it
        # (-p no:warnings) a warning is printed to the test's stderr, as
        # Python prints it: captured with the rest.
        recorded = item.config.pluginmanager.has_plugin("warnings")
        with warnings.catch_warnings(record=True) if recorded else contextlib.nullcontext([]) as log:
            assert log is not None
            side.log = log
            try:
                compat.runtestprotocol(item, log=False, nextitem=nextitem)  # type: ignore[arg-type]
            except pytest.exit.Exception as e:
                ended = End("exit", str(e.msg), e.returncode)
            except KeyboardInterrupt:
                ended = End("interrupt")
            if ended.how != "done":
                # As pytest's session finish would: the function scope still
                # gets its finalizers, without a report.
                try:
                    compat.setup_state(item).teardown_exact(nextitem)
                except BaseException:
                    pass
            if dump is not None:
                faulthandler.cancel_dump_traceback_later()
            side.send_warnings()
        for name, data in plugin_data(item):
            send("plugin", name=name, data=data)
        if coverage is not None:
            data = coverage.payload()
            if data is not None:
                send("coverage", data=data)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return ended.to_wire()
