"""What the sandbox tells pytest, and how pytest checks it.

The sandbox's side (:mod:`pytest_isolate.child`) sends plain data over the
runtime's channel (:func:`isolate_runtime.send_message`)::

    {"t": "report",   "report": <pytest_report_to_serializable dict>}
    {"t": "subtest",  "report": <the same, of a subtest report>, "counted": bool, "shown": bool}
    {"t": "warning",  "message": str, "category": [module, qualname], "filename": str, "lineno": int}
    {"t": "coverage", "data": {"arcs": bool, "contexts": {context: {path: lines or arcs}}, ...}}
    {"t": "cache",    "key": str, "value": <JSON>}
    {"t": "plugin",   "name": str, "data": <JSON>}   (pytest_isolate_child_data)

and its payload returns how the protocol ended (:class:`End`).

Everything here is hostile input (docs/security-model.rst): a test may be written to lie
about its result or to break pytest.  Each message is checked for type and
shape before anything of pytest sees it; a report must be for the item
being run, in phase order, each phase once (subtest reports: any number,
between the setup and the call report).  Anything else raises
:class:`~isolate_runtime.ProtocolViolation`, which ends that test as
CRASHED with the reason; the session goes on.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional, Tuple

import pytest

from . import checks, compat, cov

PHASES = ("setup", "call", "teardown")
OUTCOMES = ("passed", "failed", "skipped")
#: Attributes of a report the parent sets itself: never taken from the sandbox.
OWN_ATTRIBUTES = frozenset({"isolate_status"})
#: Attributes that are pytest-xdist's or the debugger's on a report:
#: ``node`` (``-v`` and junitxml read it as xdist's worker node, so a value
#: from the sandbox there breaks them), the keys xdist adds to a report on
#: its way from a worker to the controller, and ``_pdbshown``.
_READ_AS_THEIRS = frozenset({"node", "worker_id", "item_index", "testrun_uid",
                             # pytest's debugging plugin: "--pdb showed this failure", and the terminal
                             # leaves its traceback out (--pdb turns isolation off: never a sandbox's)
                             "_pdbshown",
                             # pytest-rerunfailures' try number, which it sets in pytest's process
                             # (its summary sorts by it)
                             "rerun"})
#: A plugin's own attribute of a report: a name, private or not, never a dunder.
_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]{0,63}$")
#: The attributes other plugins set on a report in the sandbox that reach
#: pytest's process, each with the type its value must have there.  Any
#: other is left behind: a plugin of pytest's process acts on what it finds
#: on a report (Hypothesis writes a patch to the file that
#: ``_hypothesis_failing_examples`` names, and reads that file), and what
#: it found would be the test's word.
TRAVELS: Dict[str, Tuple[type, str]] = {
    "_hypothesis_stats": (str, "Hypothesis's statistics"),
}


def _pytests_own_attributes() -> frozenset:  # type: ignore[type-arg]
    """What pytest keeps in a report's ``__dict__`` (``_id`` on pytest >=
    9.2): never taken from the sandbox as an extra attribute."""
    report = pytest.TestReport(nodeid="t.py::t", location=("t.py", 0, "t"), keywords={}, outcome="passed",
                               longrepr=None, when="call")
    return frozenset(vars(report))


_PYTESTS_OWN = _pytests_own_attributes()
#: What XML 1.0 cannot hold at all (pytest escapes it in values it writes
#: to junitxml, never in names).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: The name of an XML attribute (``record_xml_attribute``): ASCII, no
#: namespace (ElementTree reads ``{...}`` as one, and fails on half of it).
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")
#: The highest line number coverage data may name (coverage keeps a file's
#: lines as a bit per line up to the highest: a line of 2**33 is a GB).
MOST_LINE = 10_000_000
#: pytest-isolate's own entries in pytest's cache: never written from a sandbox.
OWN_CACHE_PREFIX = "pytest-isolate/"
_CACHE_PART = re.compile(r"^[A-Za-z0-9_.@+-]{1,128}$")


_fail = checks.fail
_str = checks.string
_number = checks.number
_list = checks.listing
_dict = checks.mapping
_strings = checks.strings


def _int(value: Any, what: str, optional: bool = False) -> Optional[int]:
    if value is None and optional:
        return None
    return checks.integer(value, what)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# ------------------------------------------------------------------ reports

def _fileloc(value: Any, what: str, optional: bool = True) -> None:
    if value is None and optional:
        return
    d = _dict(value, what)
    if set(d) != {"path", "lineno", "message"}:
        raise _fail(f"{what} has the wrong fields")
    _str(d["path"], f"{what} path")
    _int(d["lineno"], f"{what} lineno", optional=True)
    _str(d["message"], f"{what} message")


def _entry(value: Any) -> None:
    d = _dict(value, "a traceback entry")
    kind, data = d.get("type"), _dict(d.get("data"), "a traceback entry's data")
    _strings(data.get("lines"), "a traceback entry's lines")
    if kind == "ReprEntry":
        args = data.get("reprfuncargs")
        if args is not None:
            for pair in _list(_dict(args, "reprfuncargs").get("args"), "reprfuncargs args"):
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise _fail("reprfuncargs args are not pairs")
                _str(pair[0], "an argument name")
                _str(pair[1], "an argument value")
        local = data.get("reprlocals")
        if local is not None:
            _strings(_dict(local, "reprlocals").get("lines"), "reprlocals lines")
        _fileloc(data.get("reprfileloc"), "reprfileloc")
        _str(data.get("style"), "a traceback entry's style")
    elif kind != "ReprEntryNative":
        raise _fail(f"a traceback entry of unknown type {kind!r}")


def _traceback(value: Any) -> None:
    d = _dict(value, "a traceback")
    for entry in _list(d.get("reprentries"), "a traceback's entries"):
        _entry(entry)
    if d.get("extraline") is not None:
        _str(d["extraline"], "a traceback's extra line")
    _str(d.get("style"), "a traceback's style")


def _longrepr(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # a skip: (path, lineno, reason)
        if len(value) != 3:
            raise _fail("a skip location is not (path, lineno, reason)")
        return (_str(value[0], "a skip path"), _int(value[1], "a skip line", optional=True),
                _str(value[2], "a skip reason"))
    d = _dict(value, "longrepr")
    _fileloc(d.get("reprcrash"), "reprcrash")
    _traceback(d.get("reprtraceback"))
    for section in _list(d.get("sections", []), "longrepr sections"):
        if not (isinstance(section, list) and len(section) in (2, 3)):
            raise _fail("a longrepr section is not (title, content[, sep])")
        _strings(section, "a longrepr section")
    chain = d.get("chain")
    if chain is not None:
        for link in _list(chain, "an exception chain"):
            if not (isinstance(link, list) and len(link) == 3):
                raise _fail("an exception chain link is not (traceback, crash, description)")
            _traceback(link[0])
            _fileloc(link[1], "a chain link's crash")
            if link[2] is not None:
                _str(link[2], "a chain link's description")
    return value


def _xml_text(value: str, what: str) -> str:
    """``value``, which junitxml writes unescaped (a name, an attribute's
    value pytest does not clean): it must be text XML can hold."""
    bad = _NOT_XML.search(value)
    if bad:
        raise _fail(f"{what} {value[:80]!r} with the character {bad.group()!r}, which XML cannot hold")
    return value


def _pairs(value: Any, what: str) -> List[Tuple[str, Any]]:
    out = []
    for pair in _list(value, what):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _fail(f"{what} are not pairs")
        out.append((_str(pair[0], f"a name in {what}"), pair[1]))
    return out


_STANDARD = frozenset({"$report_type", "nodeid", "location", "keywords", "outcome", "longrepr", "when",
                       "user_properties", "sections", "duration", "start", "stop", "wasxfail"})


#: The subtest reports' own fields (pytest >= 9 and pytest-subtests alike).
_SUBTEST = frozenset({"_report_type", "_subtest.context"})


def _subtest_context(value: Any) -> None:
    d = _dict(value, "a subtest's context")
    if set(d) != {"msg", "kwargs"}:
        raise _fail("a subtest's context has the wrong fields")
    if d["msg"] is not None:
        _str(d["msg"], "a subtest's message")
    _dict(d["kwargs"], "a subtest's parameters")


def check_report(data: Any, nodeid: str, subtest: bool = False) -> Dict[str, Any]:
    """The report dict, checked: the right item, known shapes, nothing of
    the parent's own attributes.  Tuples are restored where pytest makes
    them.  ``subtest``: a subtest's report (``when`` is ``"call"``)."""
    d = dict(_dict(data, "a report"))
    if subtest:
        if d.get("_report_type") != "SubTestReport" or d.get("$report_type", "SubTestReport") != "SubTestReport":
            raise _fail("a subtest message that is not a subtest report")
        _subtest_context(d.get("_subtest.context"))
        if d.get("when") != "call":
            raise _fail(f"a subtest report for phase {d.get('when')!r}")
    elif d.get("$report_type") != "TestReport":
        raise _fail("a message that is not a test report")
    if _str(d.get("nodeid"), "a report's nodeid") != nodeid:
        raise _fail(f"a report for {d['nodeid']!r} while {nodeid!r} runs")
    if d.get("when") not in PHASES:
        raise _fail(f"a report for phase {d.get('when')!r}")
    if d.get("outcome") not in OUTCOMES:
        raise _fail(f"a report with outcome {d.get('outcome')!r}")
    d["longrepr"] = _longrepr(d.get("longrepr"))
    if d["outcome"] == "skipped" and "wasxfail" not in d and not isinstance(d["longrepr"], tuple):
        raise _fail("a skipped report without its skip location (path, lineno, reason)")
    keywords = _dict(d.get("keywords", {}), "a report's keywords")
    if not all(isinstance(k, str) and _scalar(v) for k, v in keywords.items()):
        raise _fail("a report's keywords are not names with plain values")
    d["sections"] = [(t, _str(c, "a section's content")) for t, c in _pairs(d.get("sections", []),
                                                                               "a report's sections")]
    d["user_properties"] = _pairs(d.get("user_properties", []), "a report's user properties")
    for name, _value in d["user_properties"]:
        _xml_text(name, "a user property's name")
        if name.startswith("isolate."):
            raise _fail(f"a user property named {name!r} (names starting with 'isolate.' are pytest-isolate's "
                        "own: the figures it records)")
    d["duration"] = _number(d.get("duration", 0.0), "a report's duration")
    for key in ("start", "stop"):
        if key in d:
            d[key] = _number(d[key], f"a report's {key}")
    if "wasxfail" in d:
        _str(d["wasxfail"], "a report's xfail reason")
        if d["outcome"] == "failed":  # pytest's xfail: skipped (it failed) or passed (it did not)
            raise _fail("a failed report with an xfail reason")
    if "url" in d:  # junitxml (xunit1) writes it as the test case's url
        _xml_text(_str(d["url"], "a report's url"), "a report's url")
    for key in list(d):
        if key in _STANDARD or (subtest and key in _SUBTEST):
            continue
        if (key in OWN_ATTRIBUTES or key in _PYTESTS_OWN or key in _READ_AS_THEIRS or not _NAME.match(key)
                or hasattr(pytest.TestReport, key)):
            raise _fail(f"a report with attribute {key!r}")
        if key not in TRAVELS:
            del d[key]
            continue
        kind, what = TRAVELS[key]
        if not isinstance(d[key], kind):
            raise _fail(f"a report whose {key!r} ({what}) is not {_KIND_NAMES.get(kind, kind.__name__)}")
    return d


_KIND_NAMES: Dict[type, str] = {str: "text"}


def report_from(config: pytest.Config, data: Any, item: pytest.Item) -> pytest.TestReport:
    """A :class:`pytest.TestReport` from the sandbox's report message."""
    d = check_report(data, item.nodeid)
    try:
        report: Any = config.hook.pytest_report_from_serializable(config=config, data=d)
    except Exception as e:  # a shape the checks above let through
        raise _fail(f"a report pytest cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(report, pytest.TestReport):
        raise _fail("a message that is not a test report")
    report.location = item.location  # the parent's, not the sandbox's word
    return report


def subtest_report_from(config: pytest.Config, data: Any, item: pytest.Item) -> pytest.TestReport:
    """A subtest report (``SubtestReport`` of pytest >= 9, ``SubTestReport``
    of pytest-subtests) from the sandbox's subtest message, made by the
    subtests plugin's own deserialization hook."""
    d = check_report(data, item.nodeid, subtest=True)
    try:
        report: Any = config.hook.pytest_report_from_serializable(config=config, data=d)
    except Exception as e:  # a shape the checks above let through
        raise _fail(f"a subtest report pytest cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(report, pytest.TestReport) or type(report).__name__ not in ("SubtestReport", "SubTestReport"):
        raise _fail("a subtest report, but no subtests plugin here to read it")
    compat.keep_subtest_parameters(report, d["_subtest.context"]["kwargs"])
    report.location = item.location
    return report


class Phases:
    """Reports must come setup, [call,] teardown, each once; subtest
    reports, any number of them, between the setup and the call report."""

    def __init__(self) -> None:
        self.seen: List[str] = []

    def accept(self, when: str) -> None:
        if when in self.seen:
            raise _fail(f"a second {when} report")
        order = PHASES.index(when)
        if self.seen and PHASES.index(self.seen[-1]) > order:
            raise _fail(f"a {when} report after the {self.seen[-1]} report")
        if not self.seen and when != "setup":
            raise _fail(f"a {when} report before the setup report")
        self.seen.append(when)

    def accept_subtest(self) -> None:
        if self.seen != ["setup"]:
            where = f"after the {self.seen[-1]} report" if self.seen else "before the setup report"
            raise _fail(f"a subtest report {where}")


# ------------------------------------------------------------------ other messages

def check_warning(msg: Dict[str, Any]) -> Tuple[str, Tuple[str, str], str, int, str]:
    """A warning: its text, category, file and line number, and its source
    line as the sandbox read it (pytest must not open the file named: it
    could be a FIFO or a device)."""
    category = _list(msg.get("category"), "a warning's category")
    if len(category) != 2:
        raise _fail("a warning's category is not (module, name)")
    lineno = _int(msg.get("lineno"), "a warning's line")
    return (_str(msg.get("message"), "a warning's message"),
            (_str(category[0], "a warning's module"), _str(category[1], "a warning's class")),
            _str(msg.get("filename"), "a warning's file"), lineno or 0,
            _str(msg.get("line", ""), "a warning's source line"))


def warning_class(module: str, qualname: str) -> type:
    """The warning class named, looked up among the warning classes that
    exist (never by attribute access on objects the name chooses)."""
    return checks.subclass_named(Warning, module, qualname) or UserWarning


#: What a test may record for junitxml from its sandbox.
JUNITXML = ("attribute", "suite property")


def check_junitxml(msg: Dict[str, Any]) -> Tuple[str, str, str]:
    """``record_xml_attribute`` / ``record_testsuite_property`` from the
    sandbox: which, the name and the value, as text."""
    what = msg.get("what")
    if what not in JUNITXML:
        raise _fail(f"a junitxml record of kind {what!r}")
    name = _str(msg.get("name"), "a junitxml record's name")
    if not name or len(name) > 256:
        raise _fail("a junitxml record's name that is empty or longer than 256 characters")
    if what == "attribute" and not _XML_NAME.match(name):
        raise _fail(f"an XML attribute named {name[:80]!r} (a letter or '_', then letters, digits, '_', '.' or '-')")
    _xml_text(name, "a junitxml record's name")
    return what, name, _str(msg.get("value"), "a junitxml record's value")


def check_cache(msg: Dict[str, Any]) -> Tuple[str, Any]:
    """``config.cache.set(key, value)`` from the sandbox: the key names a
    file below the cache's values directory, so it must stay there."""
    key = _str(msg.get("key"), "a cache key")
    parts = key.split("/")
    if not parts or len(parts) > 8 or not all(_CACHE_PART.match(p) and p not in (".", "..") for p in parts):
        raise _fail(f"a cache key {key!r} that is not a plain relative name")
    if parts[0] == OWN_CACHE_PREFIX.rstrip("/"):  # a file of that name would block the directory too
        raise _fail(f"a cache key {key!r} (keys under {OWN_CACHE_PREFIX!r} are pytest-isolate's own: the figures "
                    "of earlier runs)")
    return key, msg.get("value")


def _source_file(path: str) -> bool:
    """Whether coverage data for ``path`` may be kept: coverage's report in
    this process opens every file in its data, so a FIFO there would hang
    pytest and a device would be read without end.  Coverage itself records
    absolute paths with every link resolved, of the files whose code ran:
    anything else did not come from it.  Checked as the data comes in, and
    again before the report (:func:`cov.recheck`).  A file this process cannot see
    (written in the sandbox's copy-on-write layers, gone with it) is left
    out, not refused: coverage measured it truly, but there is nothing here
    to report it from."""
    shown = repr(path[:200]) + ("..." if len(path) > 200 else "")
    if not os.path.isabs(path):
        raise _fail(f"coverage data for {shown}, which is not an absolute path")
    try:
        mode = os.lstat(path).st_mode
    except (ValueError, UnicodeError):  # a NUL byte or a lone surrogate
        raise _fail(f"coverage data for {shown}, which is not a file name") from None
    except OSError:
        return False
    what = cov.not_regular(mode)
    if what is not None:
        raise _fail(f"coverage data for {shown}, which is {what}, not a regular file")
    return True


def check_coverage(msg: Dict[str, Any], tracers: Collection[str] = ()) -> Dict[str, Any]:
    """``{"arcs": bool, "contexts": {context: {file: lines or arcs}},
    "tracers": {file: plugin}}``, with only the files this process can
    report from (:func:`_source_file`).  ``tracers``: the file tracer
    plugins this process's coverage has loaded; the sandbox is a fork of
    it, so its coverage has the same ones, and a file tracer named that is
    not among them could not be resolved when the report is made."""
    data = _dict(msg.get("data"), "coverage data")
    arcs = data.get("arcs")
    if not isinstance(arcs, bool):
        raise _fail("coverage data without its mode")
    kept: Dict[str, bool] = {}

    def keep(path: str) -> bool:
        if path not in kept:
            kept[path] = _source_file(path)
        return kept[path]

    contexts: Dict[str, Dict[str, List[Any]]] = {}
    for context, per_file in _dict(data.get("contexts"), "coverage contexts").items():
        contexts[context] = {}
        for path, got in _dict(per_file, "coverage of a context").items():
            for x in _list(got, "covered lines"):
                if arcs:
                    if not (isinstance(x, list) and len(x) == 2):
                        raise _fail("a covered arc is not a pair")
                    # an arc's ends are lines, or minus a code object's first line
                    checks.integer(x[0], "an arc's start", least=-MOST_LINE, most=MOST_LINE)
                    checks.integer(x[1], "an arc's end", least=-MOST_LINE, most=MOST_LINE)
                else:
                    checks.integer(x, "a covered line", least=0, most=MOST_LINE)
            if keep(path):
                contexts[context][path] = got
    traced: Dict[str, str] = {}
    for path, tracer in _dict(data.get("tracers", {}), "coverage file tracers").items():
        _str(tracer, "a file tracer")
        if tracer not in tracers:
            raise _fail(f"coverage data for {path[:200]!r} traced by the plugin {tracer[:80]!r}, which this "
                        f"process's coverage has not loaded (loaded: {', '.join(sorted(tracers)) or 'none'})")
        if keep(path):
            traced[path] = tracer
    return {"arcs": arcs, "contexts": contexts, "tracers": traced}


_PLUGIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def check_plugin_data(msg: Dict[str, Any]) -> Tuple[str, Any]:
    """A plugin's data (``pytest_isolate_child_data``): a plain name; the
    data is JSON, for the plugin's ``pytest_isolate_merge_data`` to check."""
    name = _str(msg.get("name"), "a plugin data name")
    if not _PLUGIN_NAME.match(name):
        raise _fail(f"plugin data under the name {name[:80]!r} (a letter, then letters, digits, '_', '.' or '-', "
                    "at most 64)")
    if "data" not in msg:
        raise _fail(f"plugin data {name!r} without its data")
    return name, msg["data"]


@dataclass(frozen=True)
class End:
    """How the sandbox's protocol for the test ended."""

    #: ``"done"``: it ran to the end; ``"exit"``: the test called
    #: ``pytest.exit``; ``"interrupt"``: KeyboardInterrupt.
    how: str
    message: str = ""
    returncode: Optional[int] = None

    def to_wire(self) -> Dict[str, Any]:
        return {"how": self.how, "message": self.message, "returncode": self.returncode}


def check_end(value: Any) -> End:
    d = _dict(value, "the end of the test")
    how = d.get("how")
    if how not in ("done", "exit", "interrupt"):
        raise _fail(f"the test ended {how!r}")
    message = _str(d.get("message", ""), "an exit message")[:4096]
    code = _int(d.get("returncode"), "an exit code", optional=True)
    if code is not None and not 0 <= code <= 255:
        raise _fail(f"an exit code of {code}")
    return End(str(how), message, code)


def kind_of(msg: Any) -> str:
    return _str(_dict(msg, "a message").get("t"), "a message's type")


__all__ = ["End", "Phases", "check_cache", "check_coverage", "check_end", "check_junitxml", "check_plugin_data",
           "check_warning", "kind_of", "report_from", "subtest_report_from", "warning_class"]
