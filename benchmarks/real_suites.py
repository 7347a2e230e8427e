"""Real projects' test suites, plain pytest vs --isolate-all (vs pytest-forked).

Fidelity and cost on code nobody wrote for this plugin: each
project's test suite, taken from its PyPI sdist at a pinned version, runs in
a virtualenv of its own (the project, its test dependencies, pytest,
pytest-isolate from this checkout, pytest-forked), once per mode and round:

  plain     pytest -p no:isolate
  isolated  pytest --isolate-all
  forked    pytest -p no:isolate --forked   (a bare fork per test: the cost
            yardstick; opt-in with --modes, see --pytest)
  jobs2     pytest --isolate-all --isolate-jobs 2   (opt-in with --modes)
  xdist2    pytest -p no:isolate -n 2               (opt-in with --modes)

Every run starts from a fresh copy of the unpacked sdist.  The same recorder
as tests/compat (one JSON line per report) gives per-test outcomes; the
script prints a table of wall times and outcome counts, lists every test
whose outcome differs from the plain run's, and writes everything as JSON.

    python benchmarks/real_suites.py                        # all projects, 1 round
    python benchmarks/real_suites.py --project six --rounds 3
    python benchmarks/real_suites.py --modes plain,isolated,forked --pytest 'pytest<9.2'
    python benchmarks/real_suites.py --json out.json

Downloads, unpacked sources and virtualenvs are cached under
benchmarks/.cache/ (git-ignored; delete it to start over), the runs' copies
of the sources go to /var/tmp/pytest-isolate-real-suites (--runs).  Needs
pip's index (PyPI) for the first run of a project; the tests need no
network.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache"
RECORDER = REPO / "tests" / "compat" / "inner"


@dataclass(frozen=True)
class Project:
    """One pinned test suite."""

    name: str
    version: str
    #: "unittest" (TestCase classes) or "pytest" (functions, fixtures, parametrize).
    style: str
    #: pytest arguments: what to collect, and what the project's own config needs.
    args: Tuple[str, ...]
    #: Test dependencies (pinned), installed beside the project.
    deps: Tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


PROJECTS: Tuple[Project, ...] = (
    Project("six", "1.16.0", "pytest", ("test_six.py",)),
    Project("cachetools", "5.5.0", "unittest", ("tests",)),
    Project("more-itertools", "10.5.0", "unittest", ("tests",)),
    Project("toolz", "1.0.0", "pytest", ("toolz/tests",)),
    Project("attrs", "24.2.0", "pytest", ("tests",), ("hypothesis==6.112.0", "cloudpickle==3.1.0", "pympler==1.1")),
    # 26,921 tests in all; the two largest modules (23,346 parametrized
    # version and requirement strings) would take 20 minutes isolated
    Project("packaging", "24.2", "pytest",
            ("tests", "--ignore=tests/test_version.py", "--ignore=tests/test_requirements.py"), ("pretend==1.0.9",)),
    # its filterwarnings = error makes pytest 9's deprecation of generators
    # in parametrize a collection error: reset to pytest's default
    Project("python-dateutil", "2.9.0.post0", "pytest", ("tests", "-o", "filterwarnings="),
            # pytest-cov registers the no_cover mark its conftest applies
            ("freezegun==1.5.1", "hypothesis==6.112.0", "pytest-cov==6.0.0")),
)
BY_NAME = {p.name: p for p in PROJECTS}

MODES: Dict[str, Tuple[str, ...]] = {
    "plain": ("-p", "no:isolate"),
    "isolated": ("--isolate-all",),
    "forked": ("-p", "no:isolate", "--forked"),
    "jobs2": ("--isolate-all", "--isolate-jobs", "2"),
    "xdist2": ("-p", "no:isolate", "-n", "2"),
}
#: Every mode: quiet, no cache (each run starts clean anyway), our recorder.
COMMON = ("-q", "-p", "no:cacheprovider", "-p", "compat_reportlog")
#: Where the runs' copies of the sources go: outside this checkout, or a
#: project without pytest configuration of its own would find ours
#: (pyproject.toml, with filterwarnings = error) as its rootdir's.
RUNS = Path("/var/tmp/pytest-isolate-real-suites")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, text=True, capture_output=True, **kw)


# ------------------------------------------------------------------ sources and virtualenvs

def sdist(project: Project) -> Path:
    """The project's sdist from PyPI (downloaded once)."""
    folder = CACHE / "sdists"
    folder.mkdir(parents=True, exist_ok=True)
    stem = project.name.replace("-", "_").lower()
    for path in folder.iterdir():
        low = path.name.lower().replace("-", "_")
        if low.startswith(f"{stem}_{project.version}.") or low.startswith(f"{stem}_{project.version}.tar"):
            return path
    log(f"{project.name}: downloading the sdist")
    # --no-binary for the project only: ":all:" would also build its build
    # backend (hatchling, ...) from source to prepare the metadata
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", project.name, "--no-deps",
         project.requirement, "-d", str(folder)])
    return sdist(project)


def source(project: Project) -> Path:
    """The unpacked sdist (unpacked once; runs work on copies)."""
    target = CACHE / "src" / f"{project.name}-{project.version}"
    if not target.exists():
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(sdist(project)) as tar:
            if sys.version_info >= (3, 12):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)  # noqa: S202 - a pinned sdist from PyPI
        [top] = list(tmp.iterdir())
        top.rename(target)
        tmp.rmdir()
    return target


def python_tag(python: str) -> str:
    out = run([python, "-c", "import sys; print('py%d.%d' % sys.version_info[:2])"]).stdout
    return out.strip()


def venv(project: Project, python: str, pytest_spec: str = "") -> Path:
    """A virtualenv with the project, its test dependencies, pytest
    (``pytest_spec``, default the newest), pytest-forked, pytest-xdist and pytest-isolate
    from this checkout (made once per project, Python and pytest spec)."""
    slug = "".join(c if c.isalnum() or c in ".-" else "_" for c in pytest_spec)
    target = CACHE / "venvs" / f"{project.name}-{project.version}-{python_tag(python)}{'-' + slug if slug else ''}"
    py = target / "bin" / "python"
    if (target / ".complete").exists():
        return py
    log(f"{project.name}: creating {target.relative_to(REPO)}")
    shutil.rmtree(target, ignore_errors=True)
    run([python, "-m", "venv", str(target)])
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(pip + ["pytest-forked", "pytest-xdist", "-e", str(REPO), *([pytest_spec] if pytest_spec else [])])
    run(pip + [str(sdist(project)), *project.deps])
    (target / ".complete").write_text("")
    return py


def versions(py: Path, project: Project) -> Dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            f"names = ['pytest', 'pytest-isolate', 'pytest-forked', {project.name!r}]; "
            "print(json.dumps(dict(python=sys.version.split()[0], "
            "**{n: m.version(n) for n in names})))")
    data: Dict[str, str] = json.loads(run([str(py), "-c", code]).stdout)
    return data


# ------------------------------------------------------------------ one run

@dataclass
class Result:
    project: str
    mode: str
    round: int
    exit_code: int
    wall_seconds: float
    #: Outcome category -> count, as the terminal counts them.
    counts: Dict[str, int]
    #: nodeid -> its outcome ("passed", "failed", "error", "skipped", "passed+error", ...).
    outcomes: Dict[str, str]
    #: nodeid -> the first line of its failure, for tests that did not pass.
    messages: Dict[str, str] = field(default_factory=dict)
    tail: str = ""


def outcome_per_test(records: List[Dict[str, Any]]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Fold each test's phase reports into one word: the terminal's category
    of each phase that has one, joined with '+' (``passed+error`` is a test
    whose teardown failed)."""
    words: Dict[str, List[str]] = {}
    messages: Dict[str, str] = {}
    for r in records:
        if r.get("kind") != "report":
            continue
        category = r["status"][0] or ""
        nodeid = r["nodeid"]
        words.setdefault(nodeid, [])
        if r.get("subtest") is not None and category and not category.startswith("subtests"):
            category = f"subtests {category}"
        if category and category not in words[nodeid]:
            words[nodeid].append(category)
        if r["outcome"] == "failed" and r.get("crash") and nodeid not in messages:
            messages[nodeid] = f"{r['when']}: {r['crash']}"[:300]
    return {k: "+".join(v) or "(none)" for k, v in words.items()}, messages


def run_suite(project: Project, py: Path, mode: str, rnd: int, timeout: float, runs: Path = RUNS) -> Result:
    work = runs / project.name / f"{mode}-{rnd}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source(project), work, symlinks=True)
    reportlog = work.with_name(work.name + ".jsonl")
    if reportlog.exists():
        reportlog.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(RECORDER), COMPAT_REPORTLOG=str(reportlog), PY_COLORS="0", COLUMNS="120")
    cmd = [str(py), "-m", "pytest", *MODES[mode], *COMMON, f"--basetemp={work}.basetemp", *project.args]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, text=True, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        code, tail = proc.returncode, (proc.stdout[-3000:] + proc.stderr[-2000:])
    except subprocess.TimeoutExpired as e:
        code, tail = -1, f"timed out after {timeout:.0f}s\n{(e.stdout or b'')[-2000:]!r}"
    wall = time.monotonic() - start
    records = [json.loads(line) for line in reportlog.read_text().splitlines()] if reportlog.exists() else []
    counts: Dict[str, int] = {}
    for r in records:
        if r.get("kind") == "counts":
            counts = {k: v for k, v in r["counts"].items() if k != "(empty)"}
    outcomes, messages = outcome_per_test(records)
    shutil.rmtree(f"{work}.basetemp", ignore_errors=True)
    return Result(project.name, mode, rnd, code, wall, counts, outcomes,
                  {k: v for k, v in messages.items()}, tail)


# ------------------------------------------------------------------ report

def differences(plain: Result, other: Result) -> List[Tuple[str, str, str, str]]:
    """(nodeid, plain outcome, other outcome, other's message) per differing test."""
    out = []
    for nodeid in sorted(set(plain.outcomes) | set(other.outcomes)):
        a = plain.outcomes.get(nodeid, "(not run)")
        b = other.outcomes.get(nodeid, "(not run)")
        if a != b:
            out.append((nodeid, a, b, other.messages.get(nodeid, "")))
    return out


def table(results: List[Result], modes: Sequence[str]) -> str:
    lines = [f"{'project':<16} {'mode':<9} {'tests':>6} {'wall s':>8} {'ms/test':>8} {'vs plain':>9}  outcomes",
             "-" * 100]
    for name in dict.fromkeys(r.project for r in results):
        base: Optional[float] = None
        for mode in modes:
            rs = [r for r in results if r.project == name and r.mode == mode]
            if not rs:
                continue
            wall = statistics.median(r.wall_seconds for r in rs)
            n = len(rs[0].outcomes)
            if mode == "plain":
                base = wall
            extra = f"{(wall - base) / n * 1000:+8.2f}ms" if base is not None and n and mode != "plain" else ""
            counts = ", ".join(f"{v} {k}" for k, v in sorted(rs[0].counts.items()))
            exit_codes = sorted({r.exit_code for r in rs})
            lines.append(f"{name:<16} {mode:<9} {n:>6} {wall:>8.2f} {wall / max(n, 1) * 1000:>8.2f} {extra:>9}  "
                         f"{counts} (exit {','.join(map(str, exit_codes))})")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", action="append", choices=sorted(BY_NAME),
                        help="run only this project (repeatable; default: all)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per mode, interleaved (default 1)")
    parser.add_argument("--modes", default="plain,isolated", help="comma-separated subset of "
                        + ",".join(MODES) + " (default plain,isolated; pytest-forked 1.7.5 fails every test "
                        "on pytest 9.2: add --pytest 'pytest<9.2' for the forked yardstick)")
    parser.add_argument("--pytest", default="", metavar="SPEC",
                        help="pytest requirement for the virtualenvs, e.g. 'pytest<9.2' (default: newest)")
    parser.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable),
                        help="interpreter for the virtualenvs (default: the one running this script)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run")
    parser.add_argument("--runs", type=Path, default=RUNS,
                        help=f"where each run's copy of the sources goes (default {RUNS}; not inside this checkout)")
    parser.add_argument("--json", type=Path, help="write the results here (default: benchmarks/.cache/results/)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if "plain" not in modes:
        modes.insert(0, "plain")  # the reference every other mode is compared with
    projects = [BY_NAME[n] for n in args.project] if args.project else list(PROJECTS)

    out = args.json or CACHE / "results" / f"real_suites-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: List[Result] = []
    meta: Dict[str, Any] = {"host": platform.platform(), "cpus": os.cpu_count(),
                            "load_average_at_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "projects": {}}
    for project in projects:
        py = venv(project, args.python, args.pytest)
        meta["projects"][project.name] = {"style": project.style, "args": project.args,
                                          "deps": project.deps, "versions": versions(py, project)}
        for rnd in range(args.rounds):
            for mode in modes:  # interleaved: machine load hits every mode alike
                log(f"{project.name}: {mode}, round {rnd + 1}/{args.rounds}")
                res = run_suite(project, py, mode, rnd, args.timeout, args.runs)
                log(f"  {res.wall_seconds:.1f}s, exit {res.exit_code}, {res.counts}")
                results.append(res)
                # after every run: an interrupted session keeps what it measured
                out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1) + "\n")

    print(table(results, modes))
    diffs: Dict[str, Dict[str, List[Tuple[str, str, str, str]]]] = {}
    for project in projects:
        plain = [r for r in results if r.project == project.name and r.mode == "plain"]
        for mode in modes:
            if mode == "plain":
                continue
            for other in (r for r in results if r.project == project.name and r.mode == mode):
                for ref in plain:  # against every plain round: a flaky test shows in some only
                    for d in differences(ref, other):
                        diffs.setdefault(project.name, {}).setdefault(mode, [])
                        if d not in diffs[project.name][mode]:
                            diffs[project.name][mode].append(d)
    print()
    if not diffs:
        print("no per-test differences from the plain runs")
    for name, by_mode in diffs.items():
        for mode, rows in by_mode.items():
            print(f"{name}: {len(rows)} tests differ between plain and {mode}")
            for nodeid, a, b, msg in rows:
                print(f"  {nodeid}: {a} -> {b}" + (f"  [{msg}]" if msg else ""))
    out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results],
                               "differences": diffs}, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
