"""Run one inner project with plain pytest and with ``--isolate-all``, and
say every way the two runs differ.

An inner project is a dict of files.  :meth:`Compat.both` copies it twice,
runs ``python -m pytest`` in each copy in a subprocess - once with the
plugin switched off (``-p no:isolate``), once with ``--isolate-all`` - and
returns two :class:`Run` objects.  Each holds what a user or a CI system sees
of a run: the exit status, the terminal's summary line and outcome counts,
every report (node id, phase, outcome, the status word ``-v`` prints), every
warning, the "warnings summary" text, and the files of the project copy
afterwards.  :func:`differences` compares all of it; :func:`assert_same`
fails with one readable list of what differs.

Both copies have the same relative layout and node ids; absolute paths in
text are replaced by ``<project>`` and ``<basetemp>`` before comparing.

The inner runs load no plugin through entry points
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``): each project names the plugins it is
about, both runs load exactly those, and a run starts in a third of the
time it takes with every installed plugin.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

INNER = Path(__file__).with_name("inner")

#: Files and directories (with everything below them) that may differ
#: between the two copies, and why that is intended.
IGNORED_FILES: Dict[str, str] = {
    # docs/stats.rst: every isolated run stores its tests' figures as the
    # baseline of the next --isolate-fail-on-increase; a plain run has none.
    ".pytest_cache/v/pytest-isolate": "pytest-isolate's resource-figure baseline",
}

_TIME = re.compile(r"\b\d+(?:\.\d+)?s\b(?: \(\d+:\d\d:\d\d\))?")
_SUMMARY = re.compile(r"^=*\s*(?P<body>.*?)\s+in\s+\d+(?:\.\d+)?s(?: \(\d+:\d\d:\d\d\))?\s*=*$")
_SECTION = re.compile(r"^=+ (?P<title>.+?) =+$")


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _p_takes_entry_point_names() -> bool:
    """Does ``-p NAME`` load an entry point by its name with autoload off
    (newer pytest)?  Then the inner runs name plugins as autoload would
    register them: some plugins look each other up by that name."""
    from _pytest.config import PytestPluginManager

    return "consider_entry_points" in inspect.signature(PytestPluginManager.import_plugin).parameters


BY_ENTRY_POINT = _p_takes_entry_point_names()


def plugin_modules(distribution: str) -> List[str]:
    """What to ``-p`` for the pytest plugins of a distribution: their entry
    point names where pytest accepts those, else their modules; empty when
    it is not installed."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return []
    return [ep.name if BY_ENTRY_POINT else ep.value.split(":")[0]
            for ep in dist.entry_points if ep.group == "pytest11"]


#: Arguments of the plain run: pytest-isolate not loaded at all.
PLAIN: Tuple[str, ...] = ()
#: Arguments of the isolated run.
ISOLATED: Tuple[str, ...] = ("-p", "isolate" if BY_ENTRY_POINT else "pytest_isolate.plugin", "--isolate-all")
#: Loads pytest-isolate with isolation off (for projects using its marker).
NO_ISOLATE: Tuple[str, ...] = (ISOLATED[0], ISOLATED[1], "--no-isolate")


@dataclass(repr=False)
class Run:
    """One finished inner pytest run (its ``repr`` is its terminal output,
    for assertion messages)."""

    #: ``"plain"`` or ``"isolated"`` (or a name given to :meth:`Compat.run`).
    mode: str
    args: Tuple[str, ...]
    ret: int
    stdout: str
    stderr: str
    seconds: float
    #: CPU time (user + system) of the run and its child processes: less
    #: sensitive than ``seconds`` to other jobs on the machine.
    cpu_seconds: float
    #: The recorder's JSON lines (``inner/compat_reportlog.py``).
    records: List[Dict[str, Any]]
    #: relative path -> sha256 of the content ("<dir>" for directories).
    files: Dict[str, str]
    project: Path
    basetemp: Path

    def normalize(self, text: str) -> str:
        text = text.replace(str(self.basetemp), "<basetemp>").replace(str(self.project), "<project>")
        return _TIME.sub("T", text)

    @property
    def summary(self) -> str:
        """pytest's last line without its duration: ``1 failed, 2 rerun``."""
        for line in reversed(self.stdout.splitlines()):
            m = _SUMMARY.match(line.strip())
            if m:
                return m.group("body")
        return "<no summary line>"

    @property
    def outcomes(self) -> Dict[str, int]:
        """The summary line as ``{"failed": 1, "rerun": 2}``."""
        out: Dict[str, int] = {}
        for part in self.summary.split(", "):
            m = re.match(r"^(\d+) (.+)$", part)
            if m:
                out[m.group(2)] = int(m.group(1))
        return out

    def of_kind(self, kind: str) -> List[Dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    @property
    def reports(self) -> List[Tuple[Any, ...]]:
        """(nodeid, when, outcome, status word, subtest) of every report, in order."""
        return [(r["nodeid"], r["when"], r["outcome"], r["status"][2], json.dumps(r["subtest"]))
                for r in self.of_kind("report")]

    @property
    def report_details(self) -> List[Tuple[Any, ...]]:
        """Per report, what its failure says and which output sections it carries."""
        return [(r["nodeid"], r["when"], r["wasxfail"], self.normalize(r["crash"] or ""),
                 tuple(r["sections"]), json.dumps(r["user_properties"]))
                for r in self.of_kind("report")]

    @property
    def counts(self) -> Dict[str, int]:
        got = self.of_kind("counts")
        return dict(got[-1]["counts"]) if got else {}

    @property
    def warnings(self) -> List[Tuple[Any, ...]]:
        return sorted((w["category"], self.normalize(w["message"]), w["nodeid"], w["when"], tuple(w["where"]))
                      for w in self.of_kind("warning"))

    @property
    def exitstatus(self) -> Optional[int]:
        got = self.of_kind("exit")
        return int(got[-1]["exitstatus"]) if got else None

    def section(self, title: str) -> str:
        """The text of one ``=== title ===`` section of the terminal output."""
        lines = self.stdout.splitlines()
        out: List[str] = []
        inside = False
        for line in lines:
            m = _SECTION.match(line)
            if m:
                if inside:
                    break
                inside = m.group("title").strip() == title
                continue
            if inside:
                out.append(line)
        return self.normalize("\n".join(out))

    def block(self, title: str) -> str:
        """The lines after a ``--- title ---`` line (a plugin's report, such
        as syrupy's), up to the next separator line."""
        out: List[str] = []
        inside = False
        for line in self.stdout.splitlines():
            if re.match(r"^[-=]{3,} .* [-=]{3,}$", line):
                if inside:
                    break
                inside = title in line
                continue
            if inside:
                out.append(line)
        return self.normalize("\n".join(out))

    def file(self, rel: str) -> str:
        return (self.project / rel).read_text()

    def __repr__(self) -> str:
        return (f"\n--- {self.mode} run: pytest {' '.join(self.args)} (exit {self.ret}, {self.seconds:.1f}s)\n"
                f"{self.stdout[-6000:]}\n{self.stderr[-3000:]}")


def snapshot(root: Path, skip: Sequence[str] = ()) -> Dict[str, str]:
    """Every file and directory below ``root`` but ``skip`` and what is
    below those: relative path -> content hash."""
    out: Dict[str, str] = {}

    def skipped(rel: str) -> bool:
        return any(rel == s or rel.startswith(s + "/") for s in skip)

    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in list(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if skipped(rel):
                dirnames.remove(name)
                continue
            out[rel] = "<dir>"
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if skipped(rel):
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()[:16]
            except OSError as e:
                out[rel] = f"<unreadable: {e.strerror}>"
    return out


@dataclass
class Compat:
    """One feature's inner project and its runs, below ``base``."""

    base: Path
    files: Dict[str, str] = field(default_factory=dict)
    plugins: Tuple[str, ...] = ()
    runs: List[Run] = field(default_factory=list)

    def write(self, files: Mapping[str, str], ini: str = "[pytest]\n", plugins: Sequence[str] = ()) -> None:
        """The inner project (dedented) and the plugin distributions both
        runs load; a ``pytest.ini`` pins its rootdir unless ``files`` bring
        their own configuration."""
        modules: List[str] = []
        for dist in plugins:
            found = plugin_modules(dist)
            assert found, f"{dist} is not installed"
            modules += found
        self.plugins = tuple(modules)
        self.files = {name: dedent(text) for name, text in files.items()}
        if not any(n in self.files for n in ("pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml")):
            self.files["pytest.ini"] = dedent(ini)

    def project(self, mode: str, fresh: bool = True) -> Path:
        path = self.base / mode
        if fresh and path.exists():
            shutil.rmtree(path)
        if not path.exists():
            for name, text in self.files.items():
                target = path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        return path

    def run(self, mode: str, *args: str, env: Optional[Mapping[str, str]] = None, fresh: bool = True,
            timeout: float = 120) -> Run:
        """``python -m pytest ARGS`` in the project copy named ``mode``
        (a new copy unless ``fresh=False``)."""
        project = self.project(mode, fresh=fresh)
        basetemp = self.base / f"{mode}-basetemp"
        log = self.base / f"{mode}-reportlog.jsonl"
        if log.exists():
            log.unlink()
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PYTEST_", "COV_CORE_")) or k == "PYTEST_ISOLATE_MUST_WORK"}
        environ.update(PYTHONPATH=os.pathsep.join([str(INNER), str(project)]), COMPAT_REPORTLOG=str(log),
                       PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
                       COLUMNS="120", PY_COLORS="0", NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
        environ.update(env or {})
        plugins = [a for m in self.plugins for a in ("-p", m)]
        argv = (*plugins, *args, "-p", "compat_reportlog", f"--basetemp={basetemp}")
        start, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=project, env=environ,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_seconds = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        run = Run(mode=mode, args=tuple(args), ret=proc.returncode, stdout=proc.stdout, stderr=proc.stderr,
                  seconds=seconds, cpu_seconds=cpu_seconds, records=records,
                  files=snapshot(project, skip=tuple(IGNORED_FILES)), project=project, basetemp=basetemp)
        self.runs.append(run)
        return run

    def both(self, *args: str, plain: Sequence[str] = PLAIN, isolated: Sequence[str] = ISOLATED,
             env: Optional[Mapping[str, str]] = None, timeout: float = 120) -> Tuple[Run, Run]:
        """The same arguments, plain and isolated, each in a fresh copy."""
        a = self.run("plain", *plain, *args, env=env, timeout=timeout)
        b = self.run("isolated", *isolated, *args, env=env, timeout=timeout)
        return a, b


def _lines(value: object) -> List[str]:
    """One line per list item or dict entry, so that a diff names items."""
    if isinstance(value, dict):
        return [f"{k}: {json.dumps(v, default=str)}" for k, v in sorted(value.items())]
    if isinstance(value, list):
        return [json.dumps(v, default=str) for v in value]
    return str(value).splitlines()


def _diff(a: object, b: object) -> str:
    return "\n".join(difflib.unified_diff(_lines(a), _lines(b), "plain", "isolated", lineterm="", n=1))


#: What :func:`differences` compares; pass a subset to ``aspects``.
ASPECTS = ("exit", "summary", "counts", "reports", "report details", "warnings", "warnings summary", "files")


def _without(files: Mapping[str, str], ignore: Sequence[str]) -> Dict[str, str]:
    return {k: v for k, v in files.items() if not any(k == i or k.startswith(i + "/") for i in ignore)}


def differences(plain: Run, iso: Run, aspects: Sequence[str] = ASPECTS,
                ignore_files: Sequence[str] = ()) -> Dict[str, str]:
    """Aspect -> unified diff (plain -> isolated), for every aspect that
    differs; ``ignore_files``: more paths (and what is below them) left out
    of the file comparison, each with a reason at the caller."""
    values: Dict[str, Tuple[object, object]] = {
        "exit": (plain.ret, iso.ret),
        "summary": (plain.summary, iso.summary),
        "counts": (plain.counts, iso.counts),
        "reports": ([list(r) for r in plain.reports], [list(r) for r in iso.reports]),
        "report details": ([list(r) for r in plain.report_details], [list(r) for r in iso.report_details]),
        "warnings": ([list(w) for w in plain.warnings], [list(w) for w in iso.warnings]),
        "warnings summary": (plain.section("warnings summary"), iso.section("warnings summary")),
        "files": (_without(plain.files, ignore_files), _without(iso.files, ignore_files)),
    }
    return {name: _diff(*values[name]) for name in aspects if values[name][0] != values[name][1]}


def assert_same(plain: Run, iso: Run, aspects: Sequence[str] = ASPECTS, ignore_files: Sequence[str] = ()) -> None:
    """Fail with every aspect in which the isolated run differs from the plain one."""
    diffs = differences(plain, iso, aspects, ignore_files)
    if diffs:
        text = "\n\n".join(f"[{name}]\n{diff}" for name, diff in diffs.items())
        raise AssertionError(f"--isolate-all differs from plain pytest in: {', '.join(diffs)}\n\n{text}\n\n"
                             f"{plain!r}\n\n{iso!r}")


def assert_isolated(iso: Run) -> None:
    """The comparison is only worth something if the run really was isolated."""
    assert "isolate: sandbox layers" in iso.stdout or "isolate: no namespaces" in iso.stdout, repr(iso)
