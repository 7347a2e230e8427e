"""Per-test resource figures: attach, collect, export, compare, gate.

One source of truth: the process that ran the sandbox (pytest itself, or an
xdist worker) turns the :class:`isolate_runtime.SandboxResult` into
JSON-primitive ``isolate.*`` entries of the test's **teardown** report's
``user_properties`` (hook ``pytest_isolate_stats``), before that report is
logged.  Everything else - the ``--isolate-json`` file, the pytest-cache
baseline, the terminal table, the HTML page - is rebuilt from logged
teardown reports, so it works unchanged in the xdist controller, which only
ever sees reports, and in reportlog files.

junitxml writes every ``user_properties`` entry as ``<property>`` inside
``<testcase>``, which the xunit2 schema (pytest's default family) rejects;
unless ``--isolate-junit-properties`` is given, the ``isolate.*`` entries are
hidden from junitxml only (see :meth:`StatsPlugin._hide_from_junitxml`).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

import pytest

from . import compat
from .figures import (
    CPU_NOISE_SECONDS,
    MEMORY_NOISE_BYTES,
    NOISE,
    change,
    cpu_seconds,
    human_bytes,
    human_seconds,
)
from .html import render
from .settings import Option, SessionSettings, Value, bad_value, no_nul, parse_bool, settings_key

if TYPE_CHECKING:
    from isolate_runtime import SandboxResult

#: Prefix of every ``user_properties`` name this module writes.
PREFIX = "isolate."
#: ``--isolate-json`` identification; bump VERSION on any incompatible change.
SCHEMA_NAME = "pytest-isolate-stats"
SCHEMA_VERSION = 1
#: pytest-cache key of the last run's figures (the default baseline).
CACHE_KEY = "pytest-isolate/stats-v1"


def _path(text: object) -> str:
    if not isinstance(text, (str, os.PathLike)) or not os.fspath(text).strip():
        raise ValueError("expected a file path")
    return os.path.abspath(no_nul(os.fspath(text)))


def _out_path(text: object) -> str:
    """A file this run will write: its directory must exist and be writable
    now, not only once every test has run."""
    path = _path(text)
    if os.path.isdir(path):
        raise ValueError("is a directory; expected a file path")
    # missing directories are created when the file is written: check the
    # nearest one that exists
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"the directory {parent} is not writable")
    return path


#: More than this many rows is a typo, not a report.
MAX_REPORT_ROWS = 1_000_000


def _top(text: object) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a number of tests (0 for all)") from None
    if value < 0:
        raise ValueError("expected a number of tests (0 for all)")
    if value > MAX_REPORT_ROWS:
        raise ValueError(f"expected at most {MAX_REPORT_ROWS} tests (0 for all)")
    return value


def _percent(text: object) -> float:
    try:
        value = float(str(text).strip().rstrip("%"))
    except ValueError:
        raise ValueError("expected a percentage like 20 or 12.5%") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a percentage like 20 or 12.5%")
    return value


#: Session-wide reporting settings (CLI > environment > ini > default).
STATS_OPTIONS: Tuple[Option, ...] = (
    Option("json", _out_path, "write every isolated test's resource figures to this JSON file (schema: "
           "pytest_isolate/stats-schema.json)", marker=False, metavar="PATH"),
    Option("report", _top, "print the N heaviest isolated tests by peak memory and by CPU time (0: all; "
           "default 10)", marker=False, metavar="N"),
    Option("compare", _path, "baseline for --isolate-fail-on-increase and the report's deltas: a previous "
           "--isolate-json file (default: the last run, from the pytest cache)", marker=False, metavar="PATH"),
    Option("fail_on_increase", _percent, "fail a test whose peak memory or CPU time grew more than PCT "
           "percent over the baseline", marker=False, metavar="PCT"),
    Option("html", _out_path, "write a self-contained HTML page with per-test peak memory and CPU bars",
           marker=False, metavar="PATH"),
    Option("junit_properties", parse_bool, "also write the isolate.* figures as <property> elements into "
           "--junitxml (valid for junit_family=xunit1/legacy only)", default=False, marker=False),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolate")
    for opt in STATS_OPTIONS:
        where = f"ini {opt.ini}, env {opt.env}"
        if opt.name == "report":
            group.addoption(opt.flag, dest=opt.dest, default=None, nargs="?", const="10", metavar=opt.metavar,
                            help=f"{opt.help} ({where})")
        elif opt.parse is parse_bool:
            group.addoption(opt.flag, dest=opt.dest, action="store_true", default=None,
                            help=f"{opt.help} ({where})")
        else:
            group.addoption(opt.flag, dest=opt.dest, default=None, metavar=opt.metavar,
                            help=f"{opt.help} ({where})")
        parser.addini(opt.ini, help=f"pytest-isolate: {opt.help}", default=None)


def one_line(record: Mapping[str, Any]) -> str:
    """The ``-v`` line of one test."""
    st = record["stats"]
    parts = [f"peak {human_bytes(st.get('peak_memory_bytes'))} ({st.get('peak_memory_bytes_source')})",
             f"cpu {human_seconds(st.get('cpu_user_seconds'))} user + {human_seconds(st.get('cpu_system_seconds'))}"
             f" sys", f"wall {human_seconds(st.get('wall_seconds'))}"]
    if st.get("pids_peak") is not None:
        parts.append(f"pids {st['pids_peak']}")
    if st.get("throttled_seconds"):
        parts.append(f"throttled {human_seconds(st['throttled_seconds'])}")
    if st.get("oom_kills"):
        parts.append(f"oom_kills {st['oom_kills']}")
    if record.get("forwarded"):
        parts.append(f"forwarded {' '.join(record['forwarded'])}")
    return "isolate: " + ", ".join(parts)


# -- result -> user_properties -> record ------------------------------------

def properties_for(result: "SandboxResult") -> List[Tuple[str, object]]:
    """The JSON-primitive ``user_properties`` entries of one sandbox.

    Every report is kept until the session ends (by pytest, and by xdist's
    controller): keys and repeated string values (sources, layer states) are
    shared between tests, and entries that are the same for every test are
    the same tuple objects, so a test costs only its own figures."""
    props: List[Tuple[str, object]] = [_SCHEMA_PROP, _shared(_k("sandbox_outcome"), result.outcome.value)]
    for key, value in result.stats.as_dict().items():
        props.append(_shared(_k(key), value) if value is None or isinstance(value, str) else (_k(key), value))
    props.extend(_shared(_k("limit." + key), _primitive(value)) for key, value in sorted(result.limits.items()))
    props.extend(_shared(_k("layer." + key), str(value)) for key, value in sorted(result.layers.items()))
    props.append(_shared(_k("forwarded"), " ".join(result.forwarded)))
    return props


_KEYS: Dict[str, str] = {}
_SHARED: Dict[Tuple[str, object], Tuple[str, object]] = {}


def _k(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = _KEYS[name] = sys.intern(PREFIX + name)
    return key


def _shared(key: str, value: object) -> Tuple[str, object]:
    """One tuple per distinct (key, value) of a hashable value; bounded."""
    entry = (key, value)
    try:
        got = _SHARED.get(entry)
    except TypeError:
        return entry
    if got is None:
        if len(_SHARED) >= 4096:
            return entry
        got = _SHARED[entry] = entry
    return got


_SCHEMA_PROP: Tuple[str, object] = (PREFIX + "schema_version", SCHEMA_VERSION)
_OUTCOME_KEY = PREFIX + "sandbox_outcome"


def _primitive(value: object) -> object:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def record_from_properties(nodeid: str, props: List[Tuple[str, object]]) -> Optional[Dict[str, Any]]:
    """Rebuild one test's record from its teardown ``user_properties``;
    ``None`` for a test that did not run in a sandbox."""
    mine = {str(k)[len(PREFIX):]: v for k, v in props if str(k).startswith(PREFIX)}
    if "sandbox_outcome" not in mine:
        return None
    # (the runtime is imported when a test needs it, not with the plugin)
    from isolate_runtime import FIGURES

    stats: Dict[str, Any] = {"wall_seconds": mine.get("wall_seconds")}
    for name in FIGURES:
        stats[name] = mine.get(name)
        stats[name + "_source"] = mine.get(name + "_source", "unavailable")
    record: Dict[str, Any] = {
        "nodeid": nodeid,
        "outcome": None, "status": None, "duration": None,  # filled in by the collector
        "sandbox_outcome": mine["sandbox_outcome"],
        "stats": stats,
        "limits": {k[6:]: v for k, v in mine.items() if k.startswith("limit.")},
        "layers": {k[6:]: v for k, v in mine.items() if k.startswith("layer.")},
        "warnings": [v for k, v in sorted(mine.items()) if k.startswith("warn.")],
        "baseline": None,
        "forwarded": str(mine.get("forwarded") or "").split(),
    }
    if "baseline.source" in mine:
        record["baseline"] = {"source": mine["baseline.source"],
                              "peak_memory_bytes": mine.get("baseline.peak_memory_bytes"),
                              "cpu_seconds": mine.get("baseline.cpu_seconds")}
    if "increase" in mine:
        record["increase"] = mine["increase"]
    return record


def _record(nodeid: str, props: List[Tuple[str, object]], outcome: str, status: Optional[str],
            duration: float) -> Optional[Dict[str, Any]]:
    record = record_from_properties(nodeid, list(props))
    if record is not None:
        record["outcome"], record["status"], record["duration"] = outcome, status, duration
    return record


# -- baseline ----------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    """Figures of an earlier run, by nodeid, and where they came from."""

    source: str
    figures: Mapping[str, Mapping[str, Any]]


def load_json_file(path: str, source: str) -> Dict[str, Any]:
    """Read and check an ``--isolate-json`` file; UsageError naming it otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise bad_value("compare", path, source, f"cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise bad_value("compare", path, source, f"not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME or not isinstance(data.get("tests"), list):
        raise bad_value("compare", path, source, f"not a {SCHEMA_NAME} file (written by --isolate-json)")
    if data.get("version") != SCHEMA_VERSION:
        raise bad_value("compare", path, source, f"schema version {data.get('version')!r}; this pytest-isolate "
                                            f"reads version {SCHEMA_VERSION}")
    return data


def baseline_from_file(path: str, source: str) -> Baseline:
    data = load_json_file(path, source)
    figures = {}
    for rec in data["tests"]:
        stats = rec.get("stats") or {}
        figures[rec["nodeid"]] = {"peak_memory_bytes": stats.get("peak_memory_bytes"),
                                  "cpu_seconds": cpu_seconds(stats)}
    return Baseline(os.path.relpath(path), figures)


def _figure(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return value


def cached_figures(config: pytest.Config) -> Dict[str, Dict[str, Optional[float]]]:
    """The figures of the last run in pytest's cache (nodeid -> peak memory
    and CPU seconds), the well-formed entries only: the cache directory is a
    file anyone with access to the project may have edited."""
    cache = getattr(config, "cache", None)
    data = cache.get(CACHE_KEY, None) if cache is not None else None
    if not isinstance(data, dict):
        return {}
    return {nodeid: {"peak_memory_bytes": _figure(figures.get("peak_memory_bytes")),
                     "cpu_seconds": _figure(figures.get("cpu_seconds"))}
            for nodeid, figures in data.items() if isinstance(nodeid, str) and isinstance(figures, dict)}


def regressions(pct: float, old: Mapping[str, Any], new: Mapping[str, Any]) -> List[Tuple[str, str, float]]:
    """``(what, "old → new", growth %)`` for each figure that grew more than ``pct``."""
    out = []
    for key, what, floor, fmt in (
            ("peak_memory_bytes", "peak memory", MEMORY_NOISE_BYTES, _bytes_exact),
            ("cpu_seconds", "CPU time (user+system)", CPU_NOISE_SECONDS, human_seconds)):
        before, after = old.get(key), new.get(key)
        if before is None or after is None or before <= 0:
            continue
        growth = (after - before) / before * 100
        if growth > pct and after - before >= floor:
            out.append((what, f"{fmt(before)} before, {fmt(after)} now", growth))
    return out


def _bytes_exact(n: Optional[float]) -> str:
    return "n/a" if n is None else f"{human_bytes(n)} ({int(n)} bytes)"


class IsolateBudgetWarning(pytest.PytestWarning):
    """A test went over a ``*_warn`` threshold (flagged, not killed)."""


# -- the plugin ----------------------------------------------------------------

class StatsPlugin:
    """Registered by ``plugin.pytest_configure``; see the module docstring."""

    def __init__(self, config: pytest.Config, environ: Optional[Mapping[str, str]] = None) -> None:
        self.config = config
        env = os.environ if environ is None else environ
        self.values: Dict[str, Value] = {opt.name: SessionSettings._resolve(config, env, opt)
                                         for opt in STATS_OPTIONS}
        self.is_worker = hasattr(config, "workerinput")
        # (nodeid, the teardown report's user_properties, outcome, status,
        # duration): the properties list is the report's own (kept anyway),
        # and a record is built only when the session's end asks for it.
        self._kept: List[Tuple[str, List[Tuple[str, object]], str, Optional[str], float]] = []
        self._final: Optional[List[Dict[str, Any]]] = None  # built once, at the session's end
        self._pending: Dict[str, Dict[str, Any]] = {}
        #: Can reports of sandboxed tests reach this process?  Set when a
        #: test is isolated here (``plugin.IsolateSession.ensure_probed``)
        #: and in xdist's controller; until then reports are not looked at.
        self.tracking = not self.is_worker and getattr(config.option, "dist", "no") != "no"
        self._unhook: Optional[Callable[[], None]] = None
        self.written: List[Tuple[str, str]] = []
        self.baseline = self._load_baseline()

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    @property
    def records(self) -> List[Dict[str, Any]]:
        """One record per isolated test, in the order they finished."""
        if self._final is not None:
            return self._final
        out = []
        for nodeid, props, outcome, status, duration in self._kept:
            record = _record(nodeid, props, outcome, status, duration)
            if record is not None:
                out.append(record)
        return out

    def _load_baseline(self) -> Optional[Baseline]:
        compare = self.values["compare"]
        if compare.value is not None:
            return baseline_from_file(compare.value, compare.source)
        data = cached_figures(self.config)
        if not data:
            return None
        return Baseline("the previous run (pytest cache)", data)

    # -- in the process that ran the sandbox --------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_isolate_stats(self, item: pytest.Item, result: "SandboxResult", report: pytest.TestReport) -> None:
        props = properties_for(result)
        stats = result.stats.as_dict()
        props.extend(self._flag_warn_thresholds(item, stats))
        pct = self["fail_on_increase"]
        if self.baseline is not None:
            old = self.baseline.figures.get(item.nodeid)
            if old is not None:
                props.extend([(PREFIX + "baseline.source", self.baseline.source),
                              (PREFIX + "baseline.peak_memory_bytes", old.get("peak_memory_bytes")),
                              (PREFIX + "baseline.cpu_seconds", old.get("cpu_seconds"))])
                if pct is not None:
                    new = {"peak_memory_bytes": stats.get("peak_memory_bytes"), "cpu_seconds": cpu_seconds(stats)}
                    grew = regressions(pct, old, new)
                    if grew:
                        message = self._fail_increase(report, grew, pct)
                        props.append((PREFIX + "increase", message))
        report.user_properties.extend(props)

    def _flag_warn_thresholds(self, item: pytest.Item, stats: Mapping[str, Any]) -> List[Tuple[str, object]]:
        s = item.stash.get(settings_key, None)
        if s is None:
            return []
        out: List[Tuple[str, object]] = []
        checks = (("memory_warn", "peak memory", stats.get("peak_memory_bytes"), human_bytes),
                  ("cpu_time_warn", "CPU time (user+system)", cpu_seconds(stats), human_seconds),
                  ("timeout_warn", "wall time", stats.get("wall_seconds"), human_seconds))
        for name, what, figure, fmt in checks:
            threshold: Value = getattr(s, name)
            if threshold.value is None or figure is None or figure <= threshold.value:
                continue
            text = (f"pytest-isolate: {item.nodeid}: {what} {fmt(figure)} is over {name} {fmt(threshold.value)} "
                    f"(from {threshold.source})")
            out.append((f"{PREFIX}warn.{name}", text))
            message = warnings.WarningMessage(IsolateBudgetWarning(text), IsolateBudgetWarning,
                                              str(item.path) if hasattr(item, "path") else "",
                                              (item.location[1] or 0) + 1)
            item.ihook.pytest_warning_recorded.call_historic(
                kwargs=dict(warning_message=message, nodeid=item.nodeid, when="runtest", location=None))
        return out

    @staticmethod
    def _fail_increase(report: pytest.TestReport, grew: List[Tuple[str, str, float]], pct: float) -> str:
        lines = [f"{what} grew {growth:.1f}% (more than --isolate-fail-on-increase {pct:g}%): {figures}"
                 for what, figures, growth in grew]
        message = "pytest-isolate: " + "; ".join(lines)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = message
        else:
            report.sections.append(("pytest-isolate: resource increase", message))
        return message

    # -- wherever reports are logged (pytest, or the xdist controller) -------

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.tracking:
            return
        pending = self._pending.setdefault(report.nodeid, {"outcome": None, "status": None, "duration": 0.0})
        pending["duration"] += report.duration or 0.0
        status = getattr(report, "isolate_status", None)
        if status and report.failed:
            pending["status"] = status
        if report.when == "setup" and not report.passed:
            pending["outcome"] = "error" if report.failed else "skipped"
        elif report.when == "call":
            if hasattr(report, "wasxfail"):
                pending["outcome"] = "xfailed" if report.skipped else "xpassed"
            else:
                pending["outcome"] = report.outcome
        elif report.when == "teardown":
            self._pending.pop(report.nodeid, None)
            if report.failed:
                if pending["outcome"] in (None, "passed"):
                    pending["outcome"] = "error"
                if pending["status"] is None and any(str(k) == PREFIX + "increase" for k, _ in
                                                     report.user_properties):
                    pending["status"] = "increase"
            props = report.user_properties
            if not any(str(entry[0]) == _OUTCOME_KEY for entry in props):
                return  # not isolated
            kept = (report.nodeid, props, pending["outcome"] or "passed", pending["status"],
                    round(pending["duration"], 6))
            self._kept.append(kept)
            if (self.config.getoption("verbose", 0) or 0) >= 1:
                record = _record(*kept)
                if record is not None:
                    self._verbose_line(record)

    def _verbose_line(self, record: Mapping[str, Any]) -> None:
        tr = self.config.pluginmanager.getplugin("terminalreporter")
        if tr is not None:
            # Left open like pytest's own verbose line: the next test's line
            # (or the summary) starts with the newline, so no blank line.
            tr.ensure_newline()
            tr.write("    " + one_line(record))
            tr.currentfspath = -2

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._hide_from_junitxml()

    def _hide_from_junitxml(self) -> None:
        """junitxml turns every teardown ``user_properties`` entry into a
        ``<property>`` inside ``<testcase>``, in every junit_family; the
        xunit2 XSD has no such element and Jenkins' xUnit plugin rejects
        the file (pytest-dev/pytest#5202).  Unless asked for, the
        ``isolate.*`` entries are left out of junitxml's view only - every
        other consumer (reportlog, xdist, hooks) still sees them."""
        xml = compat.junitxml(self.config)
        if xml is None:
            return
        if self["junit_properties"]:
            if getattr(xml, "family", "xunit2") not in ("xunit1", "legacy"):
                self.config.issue_config_time_warning(pytest.PytestConfigWarning(JUNIT_XUNIT2_WARNING), stacklevel=2)
            return
        original = xml.finalize

        def finalize(report: pytest.TestReport) -> None:
            props = report.user_properties
            kept = [p for p in props if not str(p[0]).startswith(PREFIX)]
            if len(kept) == len(props):
                original(report)
                return
            report.user_properties = kept
            try:
                original(report)
            finally:
                report.user_properties = props

        xml.finalize = finalize  # this instance only; undone by close()

        def unhook() -> None:
            if xml.__dict__.get("finalize") is finalize:
                del xml.finalize

        self._unhook = unhook

    def close(self) -> None:
        """Undo :meth:`_hide_from_junitxml` (called at unconfigure)."""
        if self._unhook is not None:
            self._unhook()
            self._unhook = None

    # -- end of the session --------------------------------------------------

    def document(self) -> Dict[str, Any]:
        return {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "pytest_isolate_version": _version(),
                "pytest_version": pytest.__version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "baseline": None if self.baseline is None else self.baseline.source,
                "tests": self.records}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        self._final = self.records
        path = self["json"]
        if path is not None:
            _write(path, json.dumps(self.document(), indent=1, sort_keys=False) + "\n")
            self.written.append(("JSON", path))
        path = self["html"]
        if path is not None:
            _write(path, render(self.document()))
            self.written.append(("HTML", path))
        self._store_baseline()

    def _store_baseline(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or not self.records:
            return
        data = cached_figures(self.config)
        for rec in self.records:
            if rec.get("status") == "increase":
                continue  # keep the old figure: the regression fails again until it is fixed
            data[rec["nodeid"]] = {"peak_memory_bytes": rec["stats"].get("peak_memory_bytes"),
                                   "cpu_seconds": cpu_seconds(rec["stats"])}
        cache.set(CACHE_KEY, data)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        tr = terminalreporter
        top = self["report"]
        if top is not None and self.records:
            self._table(tr, top, "peak memory", lambda r: r["stats"].get("peak_memory_bytes"), human_bytes,
                        "memory_bytes", "peak_memory_bytes")
            self._table(tr, top, "CPU time (user+system)", lambda r: cpu_seconds(r["stats"]), human_seconds,
                        "cpu_time_seconds", "cpu_seconds")
        if self["fail_on_increase"] is not None and self.baseline is None:
            tr.write_line("pytest-isolate: no baseline yet for --isolate-fail-on-increase: this run's figures "
                          "become the baseline of the next one")
        for kind, path in self.written:
            tr.write_line(f"pytest-isolate: wrote {kind} stats of {len(self.records)} isolated tests to {path}")

    def _table(self, tr: Any, top: int, what: str, key: Callable[[Dict[str, Any]], Optional[float]],
               fmt: Callable[[Optional[float]], str], limit: str, base_key: str) -> None:
        rows = sorted((r for r in self.records if key(r) is not None), key=lambda r: -(key(r) or 0.0))
        shown = rows if top == 0 else rows[:top]
        title = f"pytest-isolate: {'all' if top == 0 else len(shown)} heaviest tests by {what}"
        tr.write_sep("=", title)
        within_noise = 0
        for r in shown:
            extra = []
            if r.get("baseline"):
                moved = change(base_key, key(r), r["baseline"].get(base_key))
                if moved.kind == "noise":
                    within_noise += 1
                elif moved.kind != "na":
                    extra.append(f"{moved.text} vs baseline")
            if r["limits"].get(limit) is not None:
                extra.append(f"limit {fmt(r['limits'][limit])}")
            tail = f"  ({', '.join(extra)})" if extra else ""
            tr.write_line(f"{fmt(key(r)):>12}  {r['nodeid']}{tail}")
        unmeasured = len(self.records) - len(rows)
        if unmeasured:
            tr.write_line(f"({unmeasured} isolated tests without a {what} figure on this host)")
        if within_noise:
            floor = human_bytes(NOISE[base_key]) if base_key == "peak_memory_bytes" else \
                human_seconds(NOISE[base_key])
            tr.write_line(f"({within_noise} changed by less than {floor} since the baseline: within measurement "
                          "noise, not shown)")


JUNIT_XUNIT2_WARNING = (
    "pytest-isolate: --isolate-junit-properties writes <property> elements inside <testcase>, which the "
    "junit_family=xunit2 schema (pytest's default) does not allow; Jenkins' xUnit plugin rejects such files. "
    "Use it with -o junit_family=xunit1 (or legacy).")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pytest-isolate")
    except Exception:  # not installed (a source checkout on sys.path)
        return "unknown"


def _write(path: str, text: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


__all__ = ["StatsPlugin", "add_options", "IsolateBudgetWarning", "SCHEMA_VERSION", "cached_figures"]
