"""The parent's checks of what a sandbox sends (no sandbox needed)."""
from __future__ import annotations

import copy
import os
import re
import types
from pathlib import Path
from typing import Any, Dict

import pytest
from isolate_runtime import ProtocolViolation

from pytest_isolate import cov, messages

NODEID = "test_x.py::test_one"


def _report(**changes: Any) -> Dict[str, Any]:
    report = pytest.TestReport(nodeid=NODEID, location=("test_x.py", 0, "test_one"), keywords={"test_one": 1},
                               outcome="passed", longrepr=None, when="call", sections=[("Captured stdout call", "hi")],
                               duration=0.1, user_properties=[("k", "v")])
    data = report._to_json()
    data = copy.deepcopy(data)
    data["$report_type"] = "TestReport"
    for k, v in changes.items():
        data[k] = v
    # as the sandbox sends it: JSON (tuples are lists)
    import json

    out: Dict[str, Any] = json.loads(json.dumps(data))
    return out


def test_a_real_report_passes_and_gets_its_tuples_back() -> None:
    d = messages.check_report(_report(), NODEID)
    assert d["sections"] == [("Captured stdout call", "hi")]
    assert d["user_properties"] == [("k", "v")]


@pytest.mark.parametrize("changes,reason", [
    ({"nodeid": "test_x.py::test_other"}, "a report for 'test_x.py::test_other' while"),
    ({"$report_type": "CollectReport"}, "not a test report"),
    ({"when": "collect"}, "phase 'collect'"),
    ({"outcome": "won"}, "outcome 'won'"),
    ({"duration": "fast"}, "duration is not a finite number"),
    ({"duration": -1}, "duration is not a finite number"),
    ({"sections": [["t", 1]]}, "section's content is not a string"),
    ({"sections": [["only-title"]]}, "sections are not pairs"),
    ({"user_properties": [["isolate.peak_memory_bytes", 1]]}, "names starting with 'isolate.'"),
    ({"isolate_status": "timeout"}, "attribute 'isolate_status'"),
    ({"passed": True}, "attribute 'passed'"),
    ({"__class__": "x"}, "attribute '__class__'"),
    ({"keywords": {"k": [1]}}, "keywords are not names with plain values"),
    ({"longrepr": 5}, "longrepr is not an object"),
    ({"longrepr": ["f.py", "x", "why"]}, "a skip line is not an integer"),
    ({"outcome": "skipped", "longrepr": "why"}, "a skipped report without its skip location"),
    ({"outcome": "skipped", "longrepr": None}, "a skipped report without its skip location"),
    ({"url": 5}, "a report's url is not a string"),
    ({"url": "http://x/\x1b"}, "a report's url 'http://x/.x1b' with the character '.x1b', which XML cannot"),
    ({"user_properties": [["p\x00", 1]]}, "a user property's name 'p.x00' with the character '.x00'"),
    ({"longrepr": {"reprcrash": {"path": "p", "lineno": 1, "message": 3}, "reprtraceback": {}}},
     "reprcrash message is not a string"),
    ({"longrepr": {"reprcrash": None, "reprtraceback": {"reprentries": [{"type": "Evil", "data": {"lines": []}}],
                                                        "extraline": None, "style": "long"}}},
     "unknown type 'Evil'"),
    ({"longrepr": {"reprcrash": None, "reprtraceback": {"reprentries": [
        {"type": "ReprEntry", "data": {"lines": [1], "reprfuncargs": None, "reprlocals": None,
                                       "reprfileloc": None, "style": "long"}}], "extraline": None, "style": "long"}}},
     "lines is not a string"),
])
def test_what_pytest_could_choke_on_is_refused(changes: Dict[str, Any], reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=reason):
        messages.check_report(_report(**changes), NODEID)


def test_a_plugins_own_attribute_travels_but_not_pytests() -> None:
    """Hypothesis keeps its statistics in ``report._hypothesis_stats``."""
    assert messages.check_report(_report(_hypothesis_stats="stats"), NODEID)["_hypothesis_stats"] == "stats"
    own = pytest.TestReport(nodeid=NODEID, location=("test_x.py", 0, "test_one"), keywords={}, outcome="passed",
                            longrepr=None, when="call")
    for name in vars(own):
        if name not in ("nodeid", "location", "keywords", "outcome", "longrepr", "when", "sections", "duration",
                        "start", "stop", "user_properties"):
            with pytest.raises(ProtocolViolation, match=f"attribute '{name}'"):
                messages.check_report(_report(**{name: "x"}), NODEID)


def test_other_plugins_attributes_are_left_behind() -> None:
    """A plugin of pytest's process acts on what it finds on a report:
    only the attributes known to be safe to hand it travel."""
    got = messages.check_report(_report(_hypothesis_failing_examples='["/dev/zero", "a", "b"]',
                                        extras=[{"content": "/etc/shadow"}], plugin_says=1), NODEID)
    assert not {"_hypothesis_failing_examples", "extras", "plugin_says"} & set(got)


def test_an_attribute_that_travels_must_have_its_type() -> None:
    with pytest.raises(ProtocolViolation, match=re.escape(
            "a report whose '_hypothesis_stats' (Hypothesis's statistics) is not text")):
        messages.check_report(_report(_hypothesis_stats=["x"]), NODEID)


def test_rerunfailures_try_number_is_refused() -> None:
    with pytest.raises(ProtocolViolation, match="a report with attribute 'rerun'"):
        messages.check_report(_report(rerun=1), NODEID)


def test_a_failed_report_with_an_xfail_reason_is_refused() -> None:
    """pytest's exit code, -x and junitxml count it as xfailed; the terminal as failed."""
    with pytest.raises(ProtocolViolation, match="a failed report with an xfail reason"):
        messages.check_report(_report(outcome="failed", wasxfail="forged"), NODEID)
    assert messages.check_report(_report(outcome="passed", wasxfail="why"), NODEID)["wasxfail"] == "why"


def test_phases_come_in_order_and_once() -> None:
    p = messages.Phases()
    with pytest.raises(ProtocolViolation, match="call report before the setup report"):
        p.accept("call")
    p.accept("setup")
    p.accept("teardown")
    with pytest.raises(ProtocolViolation, match="call report after the teardown report"):
        p.accept("call")
    with pytest.raises(ProtocolViolation, match="second setup report"):
        p.accept("setup")


@pytest.mark.parametrize("key", ["../../x", "/etc/passwd", "a/../b", ".", "a//b", "", "a\nb", "x" * 200])
def test_a_cache_key_stays_below_the_cache(key: str) -> None:
    with pytest.raises(ProtocolViolation, match="not a plain relative name"):
        messages.check_cache({"key": key, "value": 1})


@pytest.mark.parametrize("key", ["pytest-isolate/stats-v1", "pytest-isolate"])
def test_pytest_isolates_own_cache_entries_are_refused(key: str) -> None:
    # "pytest-isolate" itself: a file of that name would stop the figures
    # from ever being stored again
    with pytest.raises(ProtocolViolation, match=re.escape(
            f"a cache key {key!r} (keys under 'pytest-isolate/' are pytest-isolate's own: the "
            "figures of earlier runs)")):
        messages.check_cache({"key": key, "value": {}})


def test_a_plain_cache_key_passes() -> None:
    assert messages.check_cache({"key": "cache/lastfailed", "value": {"a": True}}) == (
        "cache/lastfailed", {"a": True})


@pytest.mark.parametrize("msg,reason", [
    ({"what": "element", "name": "a", "value": "b"}, "a junitxml record of kind 'element'"),
    ({"what": "attribute", "name": "", "value": "b"}, "name that is empty or longer than 256 characters"),
    ({"what": "attribute", "name": "n" * 257, "value": "b"}, "name that is empty or longer than 256 characters"),
    ({"what": "suite property", "name": 3, "value": "b"}, "a junitxml record's name is not a string"),
    ({"what": "suite property", "name": "n", "value": ["b"]}, "a junitxml record's value is not a string"),
    ({"what": "attribute", "name": "{ns", "value": "b"},
     "an XML attribute named '{ns' (a letter or '_', then letters, digits, '_', '.' or '-')"),
    ({"what": "attribute", "name": 'a="1"/><x', "value": "b"}, "an XML attribute named 'a=\"1\"/><x'"),
    ({"what": "suite property", "name": "p\ufffe", "value": "b"},
     "a junitxml record's name 'p\\ufffe' with the character '\\ufffe', which XML cannot hold"),
])
def test_a_junitxml_record_is_checked(msg: Dict[str, Any], reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=re.escape(reason)):
        messages.check_junitxml(msg)


def test_a_junitxml_record_passes_as_text() -> None:
    assert messages.check_junitxml({"what": "attribute", "name": "n", "value": "<v>"}) == ("attribute", "n", "<v>")


@pytest.mark.parametrize("value,reason", [
    ({"how": "explode"}, "ended 'explode'"),
    ({"how": "exit", "returncode": 1000}, "exit code of 1000"),
    ({"how": "exit", "message": 5}, "exit message is not a string"),
    ([], "is not an object"),
])
def test_the_end_is_checked(value: Any, reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=reason):
        messages.check_end(value)


def test_warning_classes_are_found_among_real_warnings_only() -> None:
    assert messages.warning_class("builtins", "DeprecationWarning") is DeprecationWarning
    assert messages.warning_class("pytest", "PytestWarning") is UserWarning or issubclass(
        messages.warning_class("_pytest.warning_types", "PytestWarning"), Warning)
    # a name that is not a warning class never reaches getattr on a module
    assert messages.warning_class("os", "system") is UserWarning
    assert messages.warning_class("builtins", "ValueError") is UserWarning


def test_coverage_data_is_checked() -> None:
    good = {"arcs": True, "contexts": {"": {__file__: [[1, 2], [-1, 1]]}}, "tracers": {}}
    assert messages.check_coverage({"data": good}) == good
    for bad, reason in (({"arcs": "yes", "contexts": {}}, "without its mode"),
                        ({"arcs": False, "contexts": {"": {"/x.py": ["1"]}}}, "covered line is not an integer"),
                        ({"arcs": True, "contexts": {"": {"/x.py": [[1]]}}}, "arc is not a pair"),
                        ({"arcs": False, "contexts": {"": {"/x.py": [-1]}}},
                         re.escape("a covered line is out of range (-1)")),
                        ({"arcs": False, "contexts": {"": {"/x.py": [10_000_001]}}},
                         re.escape("a covered line is out of range (10000001)")),
                        ({"arcs": True, "contexts": {"": {"/x.py": [[-10_000_001, 1]]}}},
                         re.escape("an arc's start is out of range (-10000001)")),
                        ({"arcs": True, "contexts": {"": {"/x.py": [[1, 2 ** 40]]}}},
                         re.escape("an arc's end is out of range (1099511627776)"))):
        with pytest.raises(ProtocolViolation, match=reason):
            messages.check_coverage({"data": bad})


def test_coverage_data_names_only_regular_files_and_loaded_tracers(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    link = tmp_path / "link.py"
    link.symlink_to(__file__)
    for path, reason in ((str(fifo), "which is a FIFO, not a regular file"),
                         ("/dev/zero", "which is a character device, not a regular file"),
                         (str(link), "which is a symbolic link, not a regular file"),
                         (str(tmp_path), "which is a directory, not a regular file"),
                         ("x.py", "'x.py', which is not an absolute path"),
                         ("/a\0b.py", "which is not a file name")):
        with pytest.raises(ProtocolViolation, match=re.escape(reason)):
            messages.check_coverage({"data": {"arcs": False, "contexts": {"": {path: [1]}}, "tracers": {}}})
        with pytest.raises(ProtocolViolation, match=re.escape(reason)):
            messages.check_coverage({"data": {"arcs": False, "contexts": {}, "tracers": {path: "p.P"}}},
                                    tracers={"p.P"})
    with pytest.raises(ProtocolViolation, match="plugin 'no.such.plugin', which this process's coverage has not"):
        messages.check_coverage({"data": {"arcs": False, "contexts": {}, "tracers": {__file__: "no.such.plugin"}}},
                                tracers={"p.P"})
    # a file the sandbox wrote in its copy-on-write layers is gone: left out, not refused
    gone = str(tmp_path / "gone.py")
    got = messages.check_coverage({"data": {"arcs": False, "contexts": {"": {gone: [1], __file__: [2]}},
                                            "tracers": {gone: "p.P", __file__: "p.P"}}}, tracers={"p.P"})
    assert got == {"arcs": False, "contexts": {"": {__file__: [2]}}, "tracers": {__file__: "p.P"}}


def test_a_file_tracer_that_conflicts_with_the_parents_is_not_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    coverage = pytest.importorskip("coverage")
    data = coverage.CoverageData(no_disk=True)
    try:
        data.add_lines({__file__: [1]})
        data.add_file_tracers({__file__: "a.A"})
        monkeypatch.setattr(cov, "_current", lambda: types.SimpleNamespace(_data=data))
        cov.merge({"arcs": False, "contexts": {"": {__file__: [2]}}, "tracers": {__file__: "b.B"}})
        assert data.file_tracer(__file__) == "a.A"
        assert sorted(data.lines(__file__) or []) == [1, 2]
    finally:
        # its in-memory SQLite connection: left to the collector, Python 3.13
        # warns (ResourceWarning) in whichever test is running then
        data.close(force=True)


def _subtest(**changes: Any) -> Dict[str, Any]:
    data = _report()
    del data["$report_type"]
    data.update({"_report_type": "SubTestReport", "_subtest.context": {"msg": "loop", "kwargs": {"i": "2"}}})
    data.update(changes)
    return data


def test_a_real_subtest_report_passes() -> None:
    d = messages.check_report(_subtest(), NODEID, subtest=True)
    assert d["_subtest.context"] == {"msg": "loop", "kwargs": {"i": "2"}}


@pytest.mark.parametrize("changes,reason", [
    ({"_report_type": "TestReport"}, "not a subtest report"),
    ({"$report_type": "TestReport"}, "not a subtest report"),
    ({"_subtest.context": {"msg": None}}, "context has the wrong fields"),
    ({"_subtest.context": {"msg": 5, "kwargs": {}}}, "subtest's message is not a string"),
    ({"_subtest.context": {"msg": None, "kwargs": []}}, "subtest's parameters is not an object"),
    ({"when": "setup"}, "subtest report for phase 'setup'"),
    ({"__evil__": 1}, "attribute '__evil__'"),
    ({"nodeid": "test_x.py::test_other"}, "a report for 'test_x.py::test_other' while"),
])
def test_what_is_not_a_subtest_report_is_refused(changes: Dict[str, Any], reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=reason):
        messages.check_report(_subtest(**changes), NODEID, subtest=True)


def test_a_test_report_is_not_a_subtest_report_and_back() -> None:
    with pytest.raises(ProtocolViolation, match="not a subtest report"):
        messages.check_report(_report(), NODEID, subtest=True)
    with pytest.raises(ProtocolViolation, match="not a test report"):
        messages.check_report(_subtest(), NODEID)


def test_subtest_reports_come_between_the_setup_and_the_call_report() -> None:
    p = messages.Phases()
    with pytest.raises(ProtocolViolation, match="subtest report before the setup report"):
        p.accept_subtest()
    p.accept("setup")
    for _ in range(3):
        p.accept_subtest()
    p.accept("call")
    with pytest.raises(ProtocolViolation, match="subtest report after the call report"):
        p.accept_subtest()
    p.accept("teardown")
    with pytest.raises(ProtocolViolation, match="subtest report after the teardown report"):
        p.accept_subtest()


@pytest.mark.parametrize("field", ["counted", "shown"])
def test_a_subtest_messages_flags_are_booleans(pytester: pytest.Pytester, field: str) -> None:
    from pytest_isolate.replay import Replay

    # (syrupy's session finish needs a whole run: not loaded here)
    module = pytester.getmodulecol("def test_one(): pass", configargs=("-p", "no:syrupy"))
    [item] = pytester.genitems([module])
    replay = Replay(item)
    replay.phases.accept("setup")
    with pytest.raises(ProtocolViolation, match="'counted' or 'shown' is not true or false"):
        replay.on_message({"t": "subtest", "report": _subtest(nodeid=item.nodeid), field: "yes"})


def test_coverage_data_coverage_cannot_merge_crashes_its_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the checks let through and coverage.py still fails on is this
    test's bad data, not the session's end."""
    from pytest_isolate import replay

    def merge(data: Any) -> None:
        raise ValueError("bad")

    monkeypatch.setattr(cov, "merge", merge)
    refused = "coverage data coverage.py could not merge (ValueError: bad)"
    with pytest.raises(ProtocolViolation, match=re.escape(refused)):
        replay.Replay._merge_coverage({})
