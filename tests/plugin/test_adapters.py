"""The first-party adapters (``pytest_isolate/adapters``) take what a sandbox
sends them as hostile data.

That each one carries its plugin's state back (syrupy, pytest-benchmark,
Hypothesis) is compared with plain pytest in ``tests/compat/test_plugins.py``;
here a test forges its adapter's data.
"""
from __future__ import annotations

import importlib.util
from typing import List

import pytest

from ..conftest import skip_unless


def need(module: str) -> None:
    skip_unless(importlib.util.find_spec(module) is not None, f"{module} is not installed (install the test extras)")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", *args, timeout=120)


def _crashed(result: pytest.RunResult, reason: str) -> None:
    result.stdout.fnmatch_lines([f"*CRASHED: the sandbox sent an invalid message during call: {reason}*"])


SNAPSHOT = """
from isolate_runtime import send_message

def test_forges(snapshot):
    send_message({{"t": "plugin", "name": "syrupy", "data": {data}}})
"""
AMBER = ["syrupy.extensions.amber", "AmberSnapshotExtension"]


@pytest.mark.parametrize("data,reason", [
    ({"assertions": [{"extension": AMBER, "executions": [
        {"index": 0, "created": True, "updated": False, "success": True, "data": {"text": "forged"}}]}]},
     "a snapshot written though --snapshot-update is not given"),
    ({"assertions": [{"extension": ["os", "system"], "executions": []}]},
     "a snapshot extension os.system that is not loaded here"),
    ({"assertions": [{"extension": AMBER, "executions": [{"index": -1, "created": False, "updated": False,
                                                          "success": True}]}]},
     "a snapshot's index is out of range (-1)"),
    ({"assertions": [{"extension": AMBER, "executions": [{"index": 0, "created": "yes", "updated": False,
                                                          "success": True}]}]},
     "a snapshot's created is not true or false"),
    ({"assertions": [{"extension": ["syrupy.extensions.amber"], "executions": []}]},
     "a snapshot extension that is not (module, name)"),
], ids=["write-without-update", "unknown-extension", "negative-index", "flag-not-bool", "extension-not-a-pair"])
def test_syrupy_data_is_checked(pytester: pytest.Pytester, full_sandbox: None, data: object, reason: str) -> None:
    need("syrupy")
    pytester.makepyfile(test_snap=SNAPSHOT.format(data=repr(data)))
    result = _run(pytester)
    _crashed(result, reason)
    assert not (pytester.path / "__snapshots__").exists()


@pytest.mark.parametrize("data,reason", [
    ({"base64": "not base64!"}, "a snapshot's data is not base64"),
    ({"path": "/etc/passwd"}, "a snapshot's data is neither text nor base64"),
], ids=["bad-base64", "neither"])
def test_syrupy_snapshot_data_is_checked(pytester: pytest.Pytester, full_sandbox: None, data: object,
                                         reason: str) -> None:
    need("syrupy")
    sent = {"assertions": [{"extension": AMBER, "executions": [
        {"index": 0, "created": True, "updated": False, "success": True, "data": data}]}]}
    pytester.makepyfile(test_snap=SNAPSHOT.format(data=repr(sent)))
    _crashed(_run(pytester, "--snapshot-update"), reason)
    assert not (pytester.path / "__snapshots__").exists()


def test_syrupy_data_can_only_name_the_tests_own_snapshots(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Under --snapshot-update a test may write its own snapshots (as
    in-process), nothing else: the file and the snapshot's name come from
    the item and the index, whatever path the sandbox has in mind."""
    need("syrupy")
    data = {"assertions": [{"extension": AMBER, "executions": [
        {"index": "../../escape", "created": True, "updated": False, "success": True,
         "data": {"text": "forged"}}]}]}
    pytester.makepyfile(test_snap=SNAPSHOT.format(data=repr(data)))
    result = _run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=1)
    written: List[str] = sorted(str(p.relative_to(pytester.path)) for p in pytester.path.rglob("*.ambr"))
    assert written == ["__snapshots__/test_snap.ambr"], written
    assert "test_forges[../../escape]" in (pytester.path / "__snapshots__" / "test_snap.ambr").read_text()


LINK_IN_SNAPSHOTS = """
import os, pytest
from isolate_runtime import send_message

@pytest.mark.isolated(writable=["__snapshots__"])
def test_a_plants_a_link():
    os.symlink(os.environ["VICTIM"], "__snapshots__/test_snap.ambr")

def test_b_forges(snapshot):
    send_message({"t": "plugin", "name": "syrupy", "data": {"assertions": [{"extension": %r, "executions": [
        {"index": 0, "created": True, "updated": False, "success": True, "data": {"text": "forged"}}]}]}})
""" % (AMBER,)


def test_syrupy_writes_no_snapshot_where_a_sandbox_may_write(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Another test may write the snapshot folder: syrupy, in pytest's
    process, would follow the link it planted there."""
    need("syrupy")
    pytester.mkdir("__snapshots__")
    victim = pytester.path / "victim"
    pytester.makepyfile(test_snap=LINK_IN_SNAPSHOTS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VICTIM", str(victim))
        result = _run(pytester, "--snapshot-update")
    assert not victim.exists(), victim.read_text()
    result.stdout.fnmatch_lines([
        "*PytestWarning: pytest-isolate: the snapshot */__snapshots__/test_snap.ambr was not written: it lies in "
        "*/__snapshots__, which isolated tests may write, and pytest would follow a link a test planted there. "
        "Keep snapshots out of writable paths, or update them without isolation (--no-isolate)."])


BENCHMARK = """
from isolate_runtime import send_message

def test_forges():
    send_message({{"t": "plugin", "name": "benchmark", "data": {data}}})
"""
GOOD_BENCH = {"iterations": 1, "data": [0.1], "group": None, "extra_info": {}, "has_error": False, "skipped": False}


@pytest.mark.parametrize("changes,reason", [
    ({"data": [-1.0]}, "a benchmark's timing is not a finite number >= 0"),
    ({"data": ["fast"]}, "a benchmark's timing is not a finite number >= 0"),
    ({"iterations": 0}, "a benchmark's iterations is out of range (0)"),
    ({"extra_info": []}, "a benchmark's extra_info is not an object"),
    ({"data": [2e9]}, "a benchmark's timing of more than 1e+09 seconds"),
], ids=["negative", "not-a-number", "no-iterations", "extra-info-not-an-object", "too-long"])
def test_benchmark_data_is_checked(pytester: pytest.Pytester, full_sandbox: None, changes: object,
                                   reason: str) -> None:
    need("pytest_benchmark")
    pytester.makepyfile(test_bench=BENCHMARK.format(data=repr([dict(GOOD_BENCH, **changes)])))  # type: ignore[arg-type]
    _crashed(_run(pytester), reason)


def test_benchmark_timings_are_capped_per_test(pytester: pytest.Pytester, full_sandbox: None) -> None:
    # each costs pytest a float to the session's end: 16 MiB of "0," would be 256 MB
    need("pytest_benchmark")
    pytester.makepyfile(test_bench="""
        from isolate_runtime import send_message

        def test_forges():
            for _ in range(6):  # each message under every limit, together over the cap
                send_message({"t": "plugin", "name": "benchmark", "data": [
                    {"iterations": 1, "data": [0] * 190_000, "group": None, "extra_info": {}, "has_error": False,
                     "skipped": False}]})
    """)
    _crashed(_run(pytester), "more than 1,000,000 benchmark timings from one test")


LINK_IN_A_WRITABLE_DATABASE = """
import base64, os
from hypothesis import given, settings, strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from isolate_runtime import send_message

DB = os.environ["EXAMPLES"]

@settings(database=DirectoryBasedExampleDatabase(DB), max_examples=1)
@given(st.just(1))
def test_plants_a_link_then_forges_a_save(x):
    key_dir = DirectoryBasedExampleDatabase(DB)._key_path(b"k")
    os.makedirs(DB, exist_ok=True)
    os.symlink(os.environ["VICTIM"], key_dir)
    b64 = lambda b: base64.b64encode(b).decode()
    send_message({"t": "plugin", "name": "hypothesis", "data": [[DB, "save", b64(b"k"), b64(b"v")]]})
"""


def test_hypothesis_changes_to_a_writable_database_are_not_replayed(pytester: pytest.Pytester,
                                                                     full_sandbox: None) -> None:
    """The sandbox wrote to a database in a writable path itself, and could
    plant links there: pytest replays nothing on it."""
    need("hypothesis")
    basetemp = pytester.path / "basetemp"
    victim = pytester.path / "victim"
    victim.mkdir()
    pytester.makepyfile(test_prop=LINK_IN_A_WRITABLE_DATABASE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAMPLES", str(basetemp / "examples"))
        mp.setenv("VICTIM", str(victim))
        result = _run(pytester, f"--basetemp={basetemp}")
    result.assert_outcomes(passed=1)
    assert (basetemp / "examples").is_dir(), "the sandbox could not write to its writable database"
    assert list(victim.iterdir()) == []


ANOTHER_TESTS_DATABASE = """
import base64, os, pytest
from hypothesis.database import DirectoryBasedExampleDatabase
from isolate_runtime import send_message

DB = os.environ["EXAMPLES"]

@pytest.mark.isolated(writable=[DB])
def test_a_plants_a_link():
    os.symlink(os.environ["VICTIM"], DirectoryBasedExampleDatabase(DB)._key_path(b"k"))

def test_b_forges_a_save():
    from hypothesis import settings
    settings.register_profile("here", database=DirectoryBasedExampleDatabase(DB))
    settings.load_profile("here")
    b64 = lambda b: base64.b64encode(b).decode()
    send_message({"t": "plugin", "name": "hypothesis", "data": [[DB, "save", b64(b"k"), b64(b"v")]]})
"""


def test_hypothesis_changes_to_a_database_another_test_may_write_are_not_replayed(pytester: pytest.Pytester,
                                                                                  full_sandbox: None) -> None:
    need("hypothesis")
    examples = pytester.mkdir("examples")
    victim = pytester.mkdir("victim")
    pytester.makeconftest("""
        import os
        from hypothesis import settings
        from hypothesis.database import DirectoryBasedExampleDatabase
        settings.register_profile("here", database=DirectoryBasedExampleDatabase(os.environ["EXAMPLES"]))
        settings.load_profile("here")
    """)
    pytester.makepyfile(test_prop=ANOTHER_TESTS_DATABASE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXAMPLES", str(examples))
        mp.setenv("VICTIM", str(victim))
        result = _run(pytester)
    result.assert_outcomes(passed=2)
    assert any(p.is_symlink() for p in examples.iterdir()), "the first test could not plant its link"
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize("change,reason", [
    (["/x", "chmod", "a2V5"], "an example database change that is not (path, save|delete|move, keys/values)"),
    (["/x", "save", "a2V5"], "an example database change that is not (path, save|delete|move, keys/values)"),
    (["/x", "save", "a2V5", "!!"], "an example database key or value that is not base64"),
], ids=["unknown-change", "missing-value", "not-base64"])
def test_hypothesis_data_is_checked(pytester: pytest.Pytester, full_sandbox: None, change: List[str],
                                    reason: str) -> None:
    need("hypothesis")
    pytester.makepyfile(test_prop=f"""
        from isolate_runtime import send_message

        def test_forges():
            send_message({{"t": "plugin", "name": "hypothesis", "data": [{change!r}]}})
    """)
    _crashed(_run(pytester), reason)


def test_the_hypothesis_adapter_imports_nothing_into_other_tests(pytester: pytest.Pytester,
                                                                  full_sandbox: None) -> None:
    """A sandbox imports Hypothesis only if pytest had (importing it costs
    each test far more than a small test costs)."""
    need("hypothesis")
    pytester.makeconftest("""
        import sys

        IMPORTED = {}

        def pytest_collection_finish(session):
            IMPORTED["by pytest"] = "hypothesis" in sys.modules
    """)
    pytester.makepyfile(test_plain="""
        import sys
        from conftest import IMPORTED

        def test_plain():
            assert ("hypothesis" in sys.modules) == IMPORTED["by pytest"]
    """)
    _run(pytester).assert_outcomes(passed=1)
