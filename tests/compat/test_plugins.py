"""Third-party plugins and pytest's own subtests, plain vs ``--isolate-all``.

Each test first checks what plain pytest does with the inner project (so the
project really exercises the feature), then that the isolated run is the
same in every aspect the harness compares.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from .conftest import need
from .harness import ISOLATED, PLAIN, Compat, Run, assert_isolated, assert_same, plugin_modules

#: Deselect with ``-m 'not compat'`` (e.g. in CI while the fixes are under way).
pytestmark = pytest.mark.compat

#: pytest >= 9 has the ``subtests`` fixture built in; before, pytest-subtests brings it.
SUBTEST_PLUGINS = [] if int(pytest.__version__.split(".")[0]) >= 9 else ["pytest-subtests"]


def _need_subtests() -> None:
    for dist in SUBTEST_PLUGINS:
        need(dist)


# ------------------------------------------------------------------ subtests

SUBTESTS = {"test_sub.py": """
    import unittest

    def test_fixture(subtests):
        for i in range(5):
            with subtests.test(msg="loop", i=i):
                assert i != 2

    def test_fixture_all_pass(subtests):
        for i in range(3):
            with subtests.test(i=i):
                pass

    class TestCase(unittest.TestCase):
        def test_subtest(self):
            for i in range(4):
                with self.subTest(i=i):
                    self.assertNotEqual(i, 3)

        def test_subtest_all_pass(self):
            for i in range(2):
                with self.subTest(i=i):
                    pass
"""}


def _verbose_lines(run: Run) -> list[str]:
    """The ``-v`` progress lines, without pytest-isolate's own figure lines
    (docs/stats.rst: ``-v`` adds one line of figures under each isolated test)."""
    return [run.normalize(line) for line in run.stdout.splitlines()
            if line.startswith("test_sub.py::") or ("SUB" in line and not line.startswith("    isolate:"))]


def test_subtests_counts(compat: Compat) -> None:
    _need_subtests()
    compat.write(SUBTESTS, plugins=SUBTEST_PLUGINS)
    plain, iso = compat.both()
    assert "SUBFAIL" in plain.stdout, plain  # pytest 9: SUBFAILED; pytest-subtests: SUBFAIL
    assert_isolated(iso)
    assert_same(plain, iso)


def test_subtests_verbose_lines(compat: Compat) -> None:
    _need_subtests()
    compat.write(SUBTESTS, plugins=SUBTEST_PLUGINS)
    plain, iso = compat.both("-v")
    assert any("SUBFAIL" in line for line in _verbose_lines(plain)), plain
    assert _verbose_lines(iso) == _verbose_lines(plain)
    assert_same(plain, iso)


@pytest.mark.slow
def test_subtests_under_xdist_count_a_failure_once(compat: Compat) -> None:
    _need_subtests()
    need("pytest-xdist")
    compat.write(SUBTESTS, plugins=SUBTEST_PLUGINS)
    compat.plugins += tuple(plugin_modules("pytest-xdist"))
    plain, iso = compat.both("-n", "2")
    assert "SUBFAIL" in plain.stdout, plain  # pytest 9: SUBFAILED; pytest-subtests: SUBFAIL
    # xdist reports in completion order: compare the reports as a set
    assert sorted(iso.reports) == sorted(plain.reports)
    assert_same(plain, iso, aspects=("exit", "summary", "counts", "warnings", "files"))


# ------------------------------------------------------------------ pytest-rerunfailures

RERUNS = {"test_flaky.py": """
    import pytest

    def test_always_fails():
        assert False

    @pytest.mark.flaky(reruns=2)
    def test_marked_always_fails():
        assert False

    @pytest.mark.flaky(reruns=2)
    def test_passes_on_the_third_try(tmp_path_factory):
        # state across tries in pytest's basetemp, which isolated tests may write
        counter = tmp_path_factory.getbasetemp() / "tries"
        tries = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(tries))
        assert tries == 3

    @pytest.fixture(scope="module")
    def shared():
        return []

    @pytest.mark.flaky(reruns=1)
    def test_rerun_with_a_module_fixture(shared):
        assert shared == []
"""}


def test_rerunfailures_marker(compat: Compat) -> None:
    need("pytest-rerunfailures")
    compat.write(RERUNS, plugins=["pytest-rerunfailures"])
    plain, iso = compat.both()
    assert plain.summary == "2 failed, 2 passed, 4 rerun", plain
    assert_isolated(iso)
    assert_same(plain, iso)


def test_rerunfailures_option(compat: Compat) -> None:
    need("pytest-rerunfailures")
    compat.write(RERUNS, plugins=["pytest-rerunfailures"])
    plain, iso = compat.both("--reruns", "2")
    assert plain.summary == "2 failed, 2 passed, 6 rerun", plain
    assert_same(plain, iso)


BROKEN_MODULE_TEARDOWN = {"test_mod.py": """
    import pytest

    @pytest.fixture(scope="module")
    def shared():
        yield
        raise RuntimeError("the module's teardown broke")

    def test_a(shared):
        pass

    def test_b():
        pass
"""}


@pytest.mark.parametrize("loaded", [["pytest-rerunfailures"], ["pytest-benchmark"],
                                    ["pytest-rerunfailures", "pytest-benchmark"]], ids="+".join)
def test_a_broken_module_teardown_with_plugins_that_watch_reports(compat: Compat, loaded: list[str]) -> None:
    # the teardown runs in pytest's process after a test set up in a sandbox:
    # the plugins' report hooks there see an item whose setup they never saw
    for dist in loaded:
        need(dist)
    compat.write(BROKEN_MODULE_TEARDOWN, plugins=loaded)
    plain, iso = compat.both()
    assert plain.summary == "2 passed, 1 error", plain
    assert_isolated(iso)
    assert_same(plain, iso)


@pytest.mark.slow
def test_rerunfailures_under_xdist_with_a_suite_cap(compat: Compat) -> None:
    """Under xdist, pytest-rerunfailures keeps its counts in the controller;
    a sandbox does not hold the link to them (the parent's protocol runs the
    tries), yet its teardown hook, which reads the suite's rerun count
    under ``--max-suite-reruns``, finds what it needs."""
    need("pytest-rerunfailures")
    need("pytest-xdist")
    compat.write(RERUNS, plugins=["pytest-rerunfailures", "pytest-xdist"])
    spec = importlib.util.find_spec("pytest_rerunfailures")
    assert spec is not None and spec.origin is not None
    capped = "max_suite_reruns" in Path(spec.origin).read_text()  # --max-suite-reruns: not in 16.1 and before
    args = ["-n", "1", "--reruns", "2"] + (["--max-suite-reruns", "3"] if capped else [])
    plain, iso = compat.both(*args)
    # capped: the test that passes on its third try gets none (the others took the three)
    assert plain.summary.startswith("3 failed, 1 passed" if capped else "2 failed, 2 passed"), plain
    assert plain.summary.endswith("3 rerun" if capped else "6 rerun"), plain
    assert_same(plain, iso, aspects=("exit", "summary", "counts", "warnings", "files"))


# ------------------------------------------------------------------ syrupy

SNAPSHOTS = {"test_snap.py": """
    def test_dict(snapshot):
        assert {"a": 1, "b": [1, 2]} == snapshot

    def test_text(snapshot):
        assert "some text" == snapshot

    class TestGroup:
        def test_two(self, snapshot):
            assert 1 == snapshot
            assert "two" == snapshot(name="named")
"""}


def _with_committed_snapshots(compat: Compat) -> Compat:
    """The project with snapshots that plain pytest wrote and a user committed."""
    compat.write(SNAPSHOTS, plugins=["syrupy"])
    seed = compat.run("seed", *PLAIN, "--snapshot-update")
    assert seed.ret == 0, seed
    for rel in seed.files:
        if rel.startswith("__snapshots__/") and rel.endswith(".ambr"):
            compat.files[rel] = seed.file(rel)
    assert any(rel.endswith(".ambr") for rel in compat.files), seed
    return compat


def test_syrupy_checks_committed_snapshots(compat: Compat) -> None:
    need("syrupy")
    _with_committed_snapshots(compat)
    plain, iso = compat.both()
    assert plain.ret == 0 and "unused" not in plain.stdout, plain
    assert "unused" not in iso.stdout, iso
    assert iso.block("snapshot report summary") == plain.block("snapshot report summary"), iso
    assert_same(plain, iso)


def test_syrupy_snapshot_update_writes_the_same_files(compat: Compat) -> None:
    need("syrupy")
    compat.write(SNAPSHOTS, plugins=["syrupy"])
    plain, iso = compat.both("--snapshot-update")
    assert any(rel.endswith(".ambr") for rel in plain.files), plain
    assert iso.block("snapshot report summary") == plain.block("snapshot report summary"), iso
    assert_same(plain, iso)


def test_syrupy_snapshot_update_keeps_unchanged_files(compat: Compat) -> None:
    need("syrupy")
    _with_committed_snapshots(compat)
    plain, iso = compat.both("--snapshot-update")
    assert plain.ret == 0, plain
    assert iso.block("snapshot report summary") == plain.block("snapshot report summary"), iso
    assert_same(plain, iso)


def test_syrupy_reports_a_changed_snapshot(compat: Compat) -> None:
    need("syrupy")
    _with_committed_snapshots(compat)
    compat.files["test_snap.py"] = compat.files["test_snap.py"].replace('"some text"', '"other text"')
    plain, iso = compat.both()
    assert plain.ret == 1 and "1 snapshot failed" in plain.stdout, plain
    assert iso.block("snapshot report summary") == plain.block("snapshot report summary"), iso
    assert_same(plain, iso)


# ------------------------------------------------------------------ pytest-benchmark

BENCH = {"test_bench.py": """
    def test_sum(benchmark):
        assert benchmark(sum, range(100)) == 4950

    def test_sorted(benchmark):
        benchmark.pedantic(sorted, args=([3, 1, 2],), rounds=3, iterations=1)
"""}
FAST = ("--benchmark-max-time=0.001", "--benchmark-min-rounds=2", "--benchmark-warmup=off")


def _benchmark_names(run: Run, rel: str) -> list[str]:
    if rel not in run.files:
        return []
    return sorted(b["fullname"] for b in json.loads(run.file(rel))["benchmarks"])


def _saved(run: Run) -> list[str]:
    return sorted(rel for rel in run.files if re.match(r"\.benchmarks/[^/]+/\d{4}_.*\.json$", rel))


def test_benchmark_table_json_and_autosave(compat: Compat) -> None:
    need("pytest-benchmark")
    compat.write(BENCH, plugins=["pytest-benchmark"])
    plain, iso = compat.both(*FAST, "--benchmark-json=bench.json", "--benchmark-autosave")
    names = ["test_bench.py::test_sorted", "test_bench.py::test_sum"]
    assert plain.ret == 0 and "benchmark: 2 tests" in plain.stdout, plain
    assert _benchmark_names(plain, "bench.json") == names and len(_saved(plain)) == 1, plain
    assert_isolated(iso)
    assert "benchmark: 2 tests" in iso.stdout, iso
    assert _benchmark_names(iso, "bench.json") == names, iso
    assert len(_saved(iso)) == 1, sorted(iso.files)
    # timings and timestamps differ from run to run; everything else must not
    assert_same(plain, iso, aspects=("exit", "summary", "counts", "reports", "warnings", "warnings summary"))


# ------------------------------------------------------------------ hypothesis

HYPOTHESIS = {"test_prop.py": """
    from hypothesis import given, settings, strategies as st
    from hypothesis.database import DirectoryBasedExampleDatabase

    CALLS = []

    # The default database, named: with CI set, Hypothesis loads its "ci"
    # profile (no database, a derandomized search), as CI runners do.
    @settings(max_examples=300, database=DirectoryBasedExampleDatabase(".hypothesis/examples"), derandomize=False)
    @given(st.integers(min_value=0, max_value=10**9))
    def test_finds_a_counterexample(x):
        CALLS.append(x)
        assert x < 10**6, f"call #{len(CALLS)}"
"""}


def _calls(run: Run) -> int:
    [crash] = [r["crash"] for r in run.of_kind("report") if r["when"] == "call"]
    m = re.search(r"call #(\d+)", crash or "")
    assert m, run
    return int(m.group(1))


def test_hypothesis_replays_a_failure_from_its_database(compat: Compat) -> None:
    """The example database (``.hypothesis/``) is kept: the second run
    starts from the failure the first one found (a handful of calls)
    instead of searching again (dozens)."""
    need("hypothesis")
    compat.write(HYPOTHESIS, plugins=["hypothesis"])
    runs = {}
    for mode, args in (("plain", PLAIN), ("isolated", ISOLATED)):
        first = compat.run(mode, *args)
        second = compat.run(mode, *args, fresh=False)
        runs[mode] = (first, second)
    (plain1, plain2), (iso1, iso2) = runs["plain"], runs["isolated"]
    assert plain1.ret == plain2.ret == 1, plain1
    assert any(rel.startswith(".hypothesis/examples/") for rel in plain1.files), sorted(plain1.files)
    assert _calls(plain2) < _calls(plain1), (plain1, plain2)
    assert_isolated(iso1)
    # .hypothesis/constants caches the literals of every loaded module, and
    # the isolated run loads pytest-isolate's modules too; which examples
    # Hypothesis saves on its way to the failure depends on its random
    # search (two plain runs differ): the keys it saves them under do not.
    # Hypothesis >= 6.170.29 writes .hypothesis/.gitignore when its own
    # storage code makes .hypothesis (the constants cache, in pytest's
    # process here), not when the test's database object does (first in the
    # plain run): which comes first is not the test's result.
    assert_same(plain1, iso1, aspects=("exit", "summary", "counts", "reports", "files"),
                ignore_files=[".hypothesis/constants", ".hypothesis/examples", ".hypothesis/.gitignore"])
    assert _example_keys(iso1) == _example_keys(plain1), sorted(iso1.files)
    assert _calls(iso2) <= _calls(plain2) + 2, f"the isolated run searched again: {iso2}"


def _example_keys(run: Run) -> list[str]:
    """The keys Hypothesis saved examples under (a directory each)."""
    return sorted(rel for rel, digest in run.files.items()
                  if digest == "<dir>" and re.match(r"^\.hypothesis/examples/[^/]+$", rel))


# ------------------------------------------------------------------ pytest-timeout loaded by its module name

def test_pytest_timeout_loaded_by_its_module_name(compat: Compat) -> None:
    """``-p pytest_timeout`` (how it is named with autoload off on older
    pytest, or in a hermetic CI) is pytest-timeout all the same: its timer
    must not fire in the pytest process.  The TIMEOUT status word of an
    isolated test is documented (docs/integrations.rst), so the reports are
    compared without status words."""
    need("pytest-timeout")
    compat.write({"pytest.ini": "[pytest]\ntimeout = 1\n", "test_t.py": """
        import time

        def test_slow():
            time.sleep(3)

        def test_after():
            pass
    """})
    compat.plugins = ("pytest_timeout",)
    plain, iso = compat.both()
    assert plain.outcomes == {"failed": 1, "passed": 1}, plain
    assert [r[:3] for r in iso.reports] == [r[:3] for r in plain.reports], iso
    assert_same(plain, iso, aspects=("exit", "summary", "counts", "files"))


# ------------------------------------------------------------------ pytest-timeout and higher-scoped fixtures

SLOW_SCOPES = {"test_scoped.py": """
    import time
    import pytest

    @pytest.fixture(scope="module")
    def slow_setup():
        time.sleep(3)
        yield

    @pytest.fixture(scope="class")
    def slow_teardown():
        yield
        time.sleep(3)

    def test_setup_times_out(slow_setup):
        pass

    class TestTeardown:
        def test_teardown_times_out(self, slow_teardown):
            pass

    def test_after():
        pass
"""}


def test_pytest_timeout_times_higher_scoped_fixtures_set_up_in_pytests_process(compat: Compat) -> None:
    """A module fixture that outlasts --timeout errors its test, and a class
    fixture's teardown that does errors the teardown, as in plain pytest
    (pytest's process sets them up and tears them down for the sandbox)."""
    need("pytest-timeout")
    compat.write(SLOW_SCOPES)
    compat.plugins = ("pytest_timeout",)
    plain, iso = compat.both("--timeout", "1")
    assert plain.outcomes == {"passed": 2, "errors": 2}, plain
    assert [r[:3] for r in iso.reports] == [r[:3] for r in plain.reports], iso
    assert_same(plain, iso, aspects=("exit", "summary", "counts", "files"))
    assert "Failed: Timeout" in iso.stdout, iso
