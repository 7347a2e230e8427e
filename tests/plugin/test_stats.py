"""Resource figures: user_properties, --isolate-json, the report table, -v
lines, warn thresholds, --isolate-fail-on-increase, junitxml."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import isolate_runtime
import pytest

import pytest_isolate.figures
import pytest_isolate.stats

from ..conftest import skip_unless
from ..runtime.cgroup_helpers import not_block_backed

SCHEMA = Path(pytest_isolate.stats.__file__).with_name("stats-schema.json")
XSD = Path(__file__).with_name("data") / "junit-10.xsd"
MiB = 1 << 20

PROPS_CONFTEST = """
import json

def pytest_runtest_logreport(report):
    if report.when == "teardown":
        with open("props.jsonl", "a") as f:
            f.write(json.dumps([report.nodeid, report.user_properties]) + "\\n")
"""


def _need(module: str) -> Any:
    """A test extra: a skip (a failure under PYTEST_ISOLATE_MUST_WORK=1) without it."""
    try:
        return __import__(module)
    except ImportError:
        skip_unless(False, f"{module} is not installed (pip install -e '.[test]')")


def _validate(document: Dict[str, Any]) -> None:
    jsonschema = _need("jsonschema")
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))


def _records(path: Path) -> Dict[str, Dict[str, Any]]:
    document = json.loads(path.read_text())
    _validate(document)
    return {r["nodeid"]: r for r in document["tests"]}


def _props(pytester: pytest.Pytester) -> Dict[str, Dict[str, Any]]:
    out = {}
    for line in (pytester.path / "props.jsonl").read_text().splitlines():
        nodeid, props = json.loads(line)
        out[nodeid] = {k: v for k, v in props}
    return out


def test_100_mib_in_a_subprocess_is_reported_as_100_mib(pytester: pytest.Pytester, full_sandbox: None) -> None:
    # The cgroup peak includes the subprocess's interpreter and the test
    # process's own dirtied pages; test_base measures exactly those, the
    # same way, so the difference is the 100 MiB the subprocess allocated.
    pytester.makeconftest(PROPS_CONFTEST)
    pytester.makepyfile("""
        import subprocess, sys, pytest

        @pytest.mark.isolated(memory="400M")
        def test_base():
            subprocess.run([sys.executable, "-c", "b = b'x' * 1"], check=True)

        @pytest.mark.isolated(memory="400M")
        def test_alloc():
            subprocess.run([sys.executable, "-c", "b = b'x' * (100 << 20)"], check=True)
    """)
    result = pytester.runpytest_subprocess("--isolate-json", "stats.json", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2)
    records = _records(pytester.path / "stats.json")
    props = _props(pytester)
    base = records["test_100_mib_in_a_subprocess_is_reported_as_100_mib.py::test_base"]
    alloc = records["test_100_mib_in_a_subprocess_is_reported_as_100_mib.py::test_alloc"]
    peak, baseline = alloc["stats"]["peak_memory_bytes"], base["stats"]["peak_memory_bytes"]
    source = alloc["stats"]["peak_memory_bytes_source"]
    assert source != "unavailable" and not source.startswith("rusage"), source
    assert abs(peak - baseline - 100 * MiB) <= 10 * MiB, (peak, baseline, source)
    assert 100 * MiB <= peak <= 110 * MiB + baseline, (peak, baseline)
    assert alloc["limits"]["memory_bytes"] == 400 * MiB
    assert alloc["layers"]["cgroup"] == "applied"
    # The same figures, JSON primitives, on the teardown report.
    p = props[alloc["nodeid"]]
    assert p["isolate.peak_memory_bytes"] == peak
    assert p["isolate.peak_memory_bytes_source"] == source
    assert p["isolate.limit.memory_bytes"] == 400 * MiB
    assert p["isolate.schema_version"] == 1
    for name in isolate_runtime.FIGURES:
        assert f"isolate.{name}" in p and f"isolate.{name}_source" in p
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in p.values())
    result.stdout.fnmatch_lines([f"pytest-isolate: wrote JSON stats of 2 isolated tests to {pytester.path}/stats.json"])


def test_io_write_bytes_is_what_the_test_wrote_to_disk(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """Buffered writes reach the disk after the test; the figure counts them
    anyway. Writes the sandbox discards (its copy-on-write layer is a tmpfs)
    are memory, not I/O."""
    why = not_block_backed(str(pytester.path))
    if why is not None:
        pytest.skip(f"no disk-backed place to write: {why}")
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.isolated
        def test_to_tmp_path(tmp_path):
            (tmp_path / "kept").write_bytes(os.urandom(10 << 20))

        @pytest.mark.isolated
        def test_discarded():
            with open("discarded", "wb") as f:  # the project directory: copy-on-write
                f.write(os.urandom(10 << 20))
    """)
    result = pytester.runpytest_subprocess("--isolate-json", "s.json", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2)
    records = _records(pytester.path / "s.json")
    kept = records["test_io_write_bytes_is_what_the_test_wrote_to_disk.py::test_to_tmp_path"]["stats"]
    discarded = records["test_io_write_bytes_is_what_the_test_wrote_to_disk.py::test_discarded"]["stats"]
    assert 10 * MiB <= kept["io_write_bytes"] <= 11 * MiB, kept
    assert "dirty" in kept["io_write_bytes_source"], kept
    assert discarded["io_write_bytes"] < MiB and discarded["peak_memory_bytes"] >= 10 * MiB, discarded
    assert not (pytester.path / "discarded").exists()


def test_every_isolated_test_gets_a_record_also_when_it_dies(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.isolated
        def test_pass():
            pass

        @pytest.mark.isolated
        def test_fail():
            assert False

        @pytest.mark.isolated
        def test_exit():
            os._exit(3)

        @pytest.mark.isolated(timeout=1)
        def test_hang():
            while True:
                pass

        @pytest.mark.isolated(memory="60M")
        def test_oom():
            hog = b"x" * (200 << 20)

        @pytest.fixture
        def broken():
            raise RuntimeError("setup broke")

        @pytest.mark.isolated
        def test_setup_error(broken):
            pass

        def test_not_isolated():
            pass
    """)
    result = pytester.runpytest_subprocess("--isolate-json", "out/stats.json", "-p", "no:cacheprovider",
                                           "-p", "no:faulthandler", timeout=120)
    result.assert_outcomes(passed=2, failed=4, errors=1)
    records = _records(pytester.path / "out" / "stats.json")
    mod = "test_every_isolated_test_gets_a_record_also_when_it_dies.py::"
    assert sorted(records) == sorted(mod + n for n in ("test_pass", "test_fail", "test_exit", "test_hang",
                                                       "test_oom", "test_setup_error"))
    expect = {"test_pass": ("passed", None, "ok"), "test_fail": ("failed", None, "ok"),
              "test_exit": ("failed", "crashed", "exited"), "test_hang": ("failed", "timeout", "timeout"),
              "test_oom": ("failed", "oom", "oom"), "test_setup_error": ("error", None, "ok")}
    for name, (outcome, status, sandbox) in expect.items():
        r = records[mod + name]
        assert (r["outcome"], r["status"], r["sandbox_outcome"]) == (outcome, status, sandbox), name
    assert records[mod + "test_oom"]["stats"]["oom_kills"] >= 1
    assert records[mod + "test_oom"]["stats"]["peak_memory_bytes"] >= 50 * MiB


def test_schema_rejects_what_it_should(tmp_path: Path) -> None:
    jsonschema = _need("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema": "pytest-isolate-stats", "version": 2, "tests": []}, schema)


def test_verbose_line_and_report_table(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolated(memory="200M")
        def test_big():
            hog = b"x" * (30 << 20)
            sum(range(200000))

        @pytest.mark.isolated
        def test_small():
            pass

        @pytest.mark.isolated
        def test_medium():
            hog = b"x" * (10 << 20)
    """)
    result = pytester.runpytest_subprocess("-v", "--isolate-report=2", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*::test_big PASSED*",
        "    isolate: peak * MiB (*), cpu *s user + *s sys, wall *s, pids *",
        "*::test_small PASSED*",
        "    isolate: peak *",
    ])
    result.stdout.fnmatch_lines([
        "*= pytest-isolate: 2 heaviest tests by peak memory =*",
        "* MiB  *::test_big  (limit 200.0 MiB)",
        "* MiB  *::test_medium",
        "*= pytest-isolate: 2 heaviest tests by CPU time (user+system) =*",
        "*s  *::test_big",
    ])
    assert "::test_small" not in result.stdout.str().split("heaviest tests by peak memory")[1].split("CPU")[0]
    quiet = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert "isolate: peak" not in quiet.stdout.str() and "heaviest" not in quiet.stdout.str()
    everything = pytester.runpytest_subprocess("--isolate-report=0", "-p", "no:cacheprovider", timeout=120)
    everything.stdout.fnmatch_lines(["*= pytest-isolate: all heaviest tests by peak memory =*"])
    assert everything.stdout.str().count("::test_") == 6


def test_warn_thresholds_flag_without_failing(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(PROPS_CONFTEST)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolated(memory_warn="20M")
        def test_heavy():
            hog = b"x" * (40 << 20)

        @pytest.mark.isolated(memory_warn="200M")
        def test_light():
            pass

        @pytest.mark.isolated
        def test_slow():
            import time
            time.sleep(0.3)
    """)
    result = pytester.runpytest_subprocess("--isolate-timeout-warn", "0.2", "--isolate-json", "s.json",
                                           "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3, warnings=2)
    mod = "test_warn_thresholds_flag_without_failing.py"
    result.stdout.fnmatch_lines([
        f"*pytest-isolate: {mod}::test_heavy: peak memory * MiB is over memory_warn 20.0 MiB "
        f"(from marker on {mod}::test_heavy)",
    ])
    result.stdout.fnmatch_lines([
        f"*pytest-isolate: {mod}::test_slow: wall time *s is over timeout_warn 0.20s (from --isolate-timeout-warn)",
    ])
    assert "test_light: " not in result.stdout.str()
    records = _records(pytester.path / "s.json")
    assert records[f"{mod}::test_heavy"]["warnings"][0].startswith(f"pytest-isolate: {mod}::test_heavy: peak")
    assert records[f"{mod}::test_light"]["warnings"] == []
    assert "isolate.warn.memory_warn" in _props(pytester)[f"{mod}::test_heavy"]


ALLOC = """
import os, pytest

@pytest.mark.isolated
def test_grows():
    hog = b"x" * (int(os.environ["ALLOC_MIB"]) << 20)

@pytest.mark.isolated
def test_steady():
    hog = b"x" * (20 << 20)
"""


def _increase_lines(result: pytest.RunResult) -> List[str]:
    return [line for line in result.stdout.lines if "grew" in line]


@pytest.mark.parametrize("via", ["compare-file", "cache"])
def test_fail_on_increase(pytester: pytest.Pytester, full_sandbox: None, monkeypatch: pytest.MonkeyPatch,
                          via: str) -> None:
    pytester.makepyfile(test_it=ALLOC)
    monkeypatch.setenv("ALLOC_MIB", "40")
    first = pytester.runpytest_subprocess("--isolate-json", "base.json", "--isolate-fail-on-increase", "20",
                                          timeout=120)
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["pytest-isolate: no baseline yet for --isolate-fail-on-increase: this run's "
                                "figures become the baseline of the next one"])
    old = _records(pytester.path / "base.json")["test_it.py::test_grows"]["stats"]["peak_memory_bytes"]

    monkeypatch.setenv("ALLOC_MIB", "64")  # the peak (allocation + interpreter) grows by more than 50 %
    args = ["--isolate-compare", "base.json"] if via == "compare-file" else []
    second = pytester.runpytest_subprocess(*args, "--isolate-fail-on-increase", "20", "--isolate-json", "new.json",
                                           "-p", "no:randomly", timeout=120)
    second.assert_outcomes(passed=2, errors=1)
    new_records = _records(pytester.path / "new.json")
    new = new_records["test_it.py::test_grows"]["stats"]["peak_memory_bytes"]
    assert new >= old * 1.5
    h = pytest_isolate.figures.human_bytes
    second.stdout.fnmatch_lines([
        "*ERROR at teardown of test_grows*",
        f"pytest-isolate: peak memory grew *% (more than --isolate-fail-on-increase 20%): "
        f"{h(old)} ({old} bytes) before, {h(new)} ({new} bytes) now",
    ])
    grows = new_records["test_it.py::test_grows"]
    assert grows["status"] == "increase" and grows["outcome"] == "error"
    assert grows["baseline"]["peak_memory_bytes"] == old
    assert grows["baseline"]["source"] == ("base.json" if via == "compare-file" else
                                           "the previous run (pytest cache)")
    assert new_records["test_it.py::test_steady"]["outcome"] == "passed"
    if via == "cache":
        # A failed regression keeps the old baseline: it fails again until fixed.
        again = pytester.runpytest_subprocess("--isolate-fail-on-increase", "20", timeout=120)
        again.assert_outcomes(passed=2, errors=1)
    # Within the allowance nothing fails (and a passing run becomes the new baseline).
    third = pytester.runpytest_subprocess(*args, "--isolate-fail-on-increase", "80", timeout=120)
    third.assert_outcomes(passed=2)


@pytest.mark.parametrize("cached", ['"not a mapping"', '{"test_it.py::test_steady": 5}',
                                    '{"test_it.py::test_steady": {"peak_memory_bytes": "lots", "cpu_seconds": -1}}'],
                         ids=["not-a-mapping", "entry-not-a-mapping", "figures-not-numbers"])
def test_a_damaged_baseline_in_the_cache_is_no_baseline(pytester: pytest.Pytester, full_sandbox: None,
                                                         monkeypatch: pytest.MonkeyPatch, cached: str) -> None:
    """The cache is a directory anyone with the project may edit: what is
    not figures there is left out, never a crash at the session's start or
    end."""
    pytester.makepyfile(test_it=ALLOC)
    monkeypatch.setenv("ALLOC_MIB", "1")
    entry = pytester.path / ".pytest_cache" / "v" / "pytest-isolate" / "stats-v1"
    entry.parent.mkdir(parents=True)
    entry.write_text(cached)
    result = pytester.runpytest_subprocess("--isolate-fail-on-increase", "20", "--isolate-jobs", "2", timeout=120)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str(), result.stdout.str()
    result.assert_outcomes(passed=2)
    again = json.loads(entry.read_text())
    assert set(again) == {"test_it.py::test_grows", "test_it.py::test_steady"}, again
    assert all(isinstance(v["peak_memory_bytes"], int) for v in again.values()), again


def test_compare_deltas_in_the_report(pytester: pytest.Pytester, full_sandbox: None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_it=ALLOC)
    monkeypatch.setenv("ALLOC_MIB", "30")
    pytester.runpytest_subprocess(timeout=120).assert_outcomes(passed=2)
    monkeypatch.setenv("ALLOC_MIB", "60")
    result = pytester.runpytest_subprocess("--isolate-report", timeout=120)
    result.stdout.fnmatch_lines(["*= pytest-isolate: 2 heaviest tests by peak memory =*",
                                 "* MiB  test_it.py::test_grows  (+* MiB = +*% vs baseline)",
                                 "* MiB  test_it.py::test_steady",
                                 "(1 changed by less than 1.0 MiB since the baseline: within measurement noise, "
                                 "not shown)"])
    # Figures of a few MiB and a few ms move by tens of percent between runs
    # of the same code: below the floor no change is shown.
    result.stdout.fnmatch_lines(["*= pytest-isolate: 2 heaviest tests by CPU time (user+system) =*",
                                 "*s  test_it.py::*",
                                 "*s  test_it.py::*",
                                 "(2 changed by less than 0.10s since the baseline: within measurement noise, "
                                 "not shown)"])
    assert result.stdout.str().count("vs baseline") == 1


BAD_OPTIONS: List[Tuple[List[str], str]] = [
    (["--isolate-report=-1"], "ERROR: pytest-isolate: invalid report '-1' from --isolate-report: "
                              "expected a number of tests (0 for all)"),
    (["--isolate-fail-on-increase", "lots"], "ERROR: pytest-isolate: invalid fail-on-increase 'lots' from "
                                             "--isolate-fail-on-increase: expected a percentage like 20 or 12.5%"),
    (["--isolate-compare", "missing.json"], "ERROR: pytest-isolate: invalid compare '*missing.json' from "
                                            "--isolate-compare: cannot read it (No such file or directory)"),
    (["--isolate-compare", "notjson.json"], "ERROR: pytest-isolate: invalid compare '*notjson.json' from "
                                            "--isolate-compare: not JSON (*)"),
    (["--isolate-compare", "other.json"], "ERROR: pytest-isolate: invalid compare '*other.json' from "
                                          "--isolate-compare: not a pytest-isolate-stats file (written by "
                                          "--isolate-json)"),
    (["--isolate-compare", "future.json"], "ERROR: pytest-isolate: invalid compare '*future.json' from "
                                           "--isolate-compare: schema version 99; this pytest-isolate reads "
                                           "version 1"),
    (["--isolate-memory-warn", "lots"], "ERROR: pytest-isolate: invalid memory-warn 'lots' from "
                                        "--isolate-memory-warn: expected a size like 512M or 2G"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: List[str], message: str) -> None:
    pytester.makefile(".json", notjson="{", other='{"tests": []}',
                      future='{"schema": "pytest-isolate-stats", "version": 99, "tests": []}')
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(*args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_values_from_env_ini_and_marker_name_their_source(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolated(cpu_time_warn="soon")
        def test_x():
            pass
    """)
    result = pytester.runpytest_subprocess(timeout=60)
    result.stderr.fnmatch_lines(["ERROR: pytest-isolate: invalid cpu-time-warn 'soon' from marker on "
                                 "test_bad_values_from_env_ini_and_marker_name_their_source.py::test_x: "
                                 "expected a number of seconds like 10, 1.5s or 2m"])
    monkeypatch.setenv("PYTEST_ISOLATE_FAIL_ON_INCREASE", "-5")
    result = pytester.runpytest_subprocess("-k", "nothing", timeout=60)
    result.stderr.fnmatch_lines(["ERROR: pytest-isolate: invalid fail-on-increase '-5' from environment "
                                 "PYTEST_ISOLATE_FAIL_ON_INCREASE: expected a percentage like 20 or 12.5%"])
    monkeypatch.delenv("PYTEST_ISOLATE_FAIL_ON_INCREASE")
    pytester.makeini("[pytest]\nisolate_report = many\n")
    result = pytester.runpytest_subprocess("-k", "nothing", timeout=60)
    result.stderr.fnmatch_lines(["ERROR: pytest-isolate: invalid report 'many' from ini isolate_report (tox.ini): "
                                 "expected a number of tests (0 for all)"])


def test_stats_hooks(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest("""
        def pytest_isolate_stats(item, result, report):
            print(f"\\nSTATS {item.name} {report.when} {result.outcome.value} "
                  f"{result.stats.peak_memory_bytes.value > 0}")
            report.user_properties.append(("mine", 1))

        def pytest_isolate_result(item, result):
            print(f"\\nRESULT {item.name} {result.stats.as_dict()['peak_memory_bytes_source']}")

        def pytest_runtest_logreport(report):
            if report.when == "teardown":
                names = [k for k, _ in report.user_properties]
                print(f"\\nPROPS {names.index('mine') < names.index('isolate.peak_memory_bytes')}")
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolated
        def test_a():
            pass
    """)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["STATS test_a teardown ok True", "PROPS True", "RESULT test_a *:*"])


def test_figures_survive_xdist(pytester: pytest.Pytester, full_sandbox: None) -> None:
    _need("xdist")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolated
        @pytest.mark.parametrize("i", range(4))
        def test_p(i):
            hog = b"x" * ((10 + i) << 20)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "-v", "--isolate-json", "x.json", "--isolate-html", "x.html",
                                           "--junitxml", "x.xml", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=4)
    records = _records(pytester.path / "x.json")
    assert len(records) == 4
    for nodeid, r in records.items():
        i = int(nodeid[-2])
        assert r["stats"]["peak_memory_bytes"] >= (10 + i) * MiB
    assert "isolate.peak_memory" not in (pytester.path / "x.xml").read_text()
    assert result.stdout.str().count("isolate: peak ") == 4


# -- junitxml ------------------------------------------------------------------

JUNIT_SUITE = """
import pytest

@pytest.mark.isolated
def test_isolated():
    pass

@pytest.mark.isolated(timeout=1)
def test_hangs():
    while True:
        pass

def test_plain(record_testsuite_property):
    record_testsuite_property("suite_level", "fine in xunit2")
"""


def _xunit2_errors(path: Path) -> List[str]:
    xmlschema = _need("xmlschema")
    schema = xmlschema.XMLSchema(str(XSD))
    return [str(e.reason) for e in schema.iter_errors(str(path))]


def test_junitxml_stays_valid_xunit2_by_default(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile(JUNIT_SUITE)
    result = pytester.runpytest_subprocess("--junitxml=out.xml", "--isolate-json", "s.json", "-p", "no:cacheprovider",
                                           "-p", "no:faulthandler", timeout=120)
    result.assert_outcomes(passed=2, failed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert _xunit2_errors(pytester.path / "out.xml") == []
    assert '<property name="isolate.' not in xml and '<property name="suite_level"' in xml
    assert len(_records(pytester.path / "s.json")) == 2  # the figures were there; junitxml just did not get them


def test_junit_properties_opt_in(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile(JUNIT_SUITE)
    result = pytester.runpytest_subprocess("--junitxml=out.xml", "--isolate-junit-properties", "-o",
                                           "junit_family=xunit1", "-p", "no:cacheprovider", "-p", "no:faulthandler",
                                           timeout=120)
    result.assert_outcomes(passed=2, failed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert xml.count('<property name="isolate.peak_memory_bytes" value="') == 2
    assert '<property name="isolate.sandbox_outcome" value="timeout"' in xml
    assert "pytest-isolate: --isolate-junit-properties" not in result.stdout.str()
    # Under xunit2 (pytest's default family) the user is told what will break.
    result = pytester.runpytest_subprocess("--junitxml=out2.xml", "--isolate-junit-properties", "-p",
                                           "no:cacheprovider", "-p", "no:faulthandler", timeout=120)
    result.stdout.fnmatch_lines([
        "*PytestConfigWarning: pytest-isolate: --isolate-junit-properties writes <property> elements inside "
        "<testcase>, which the junit_family=xunit2 schema (pytest's default) does not allow; Jenkins' xUnit plugin "
        "rejects such files. Use it with -o junit_family=xunit1 (or legacy).",
    ])
    assert _xunit2_errors(pytester.path / "out2.xml") != []


def test_the_schema_lists_every_figure() -> None:
    """The JSON schema follows isolate_runtime.FIGURES, the one list."""
    from isolate_runtime import FIGURES

    stats = json.loads(SCHEMA.read_text())["$defs"]["test"]["properties"]["stats"]["properties"]
    assert set(stats) == {"wall_seconds"} | set(FIGURES) | {f + "_source" for f in FIGURES}
