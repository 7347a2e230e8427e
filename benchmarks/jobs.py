"""--isolate-jobs: whole pytest runs, variants interleaved in rounds.

    python benchmarks/jobs.py [--rounds 5] [--suite cpu,ports,session,parent]

Suites (each variant a fresh ``python -m pytest`` in a generated project,
every variant once per round, in turn, so that the machine's load hits all
alike; medians of the rounds):

  cpu      60 tests of 40 ms CPU each: plain pytest, --isolate-all (one job),
           --isolate-all --isolate-jobs 2.  Target: jobs 2 <= 0.70 x plain.
  ports    16 tests that each bind 127.0.0.1:8765 and create /tmp/same-name
           exclusively, and hold both for 0.3 s: --isolate-all --isolate-jobs 4
           (and, to show what isolation buys, plain pytest and pytest -n 4,
           where they collide).  Target: all pass, wall <= 2.4 s.
  session  a 1 s session fixture and 40 tests of 30 ms CPU: --isolate-all
           --isolate-jobs 2 against pytest -n 2 (no isolation).  Target: no
           slower than -n 2.
  parent   the pytest process's own CPU time per test (its getrusage, so not
           the sandboxes'), for 100 and 300 trivial tests: the difference over
           200 tests leaves out start-up and collection; for 1, 2, 4 and 8
           jobs.  Target: it does not grow with the jobs.

The load average is printed before and after each suite.  Plugins are not
loaded from entry points: each variant loads the ones it uses (``-p isolate``,
``-p xdist``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

CPU_BURN = """
import time

def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
"""

SUITES: Dict[str, Dict[str, str]] = {
    "cpu": {
        "burn.py": CPU_BURN,
        "test_cpu.py": """
            import pytest, burn

            @pytest.mark.parametrize("i", range(60))
            def test_cpu(i):
                burn.burn(0.040)
        """,
    },
    "ports": {
        "test_ports.py": """
            import os, socket, time, pytest

            @pytest.mark.parametrize("i", range(16))
            def test_same_port_and_file(i):
                s = socket.socket()
                s.bind(("127.0.0.1", 8765))
                s.listen()
                fd = os.open("/tmp/same-name", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                time.sleep(0.3)
                os.close(fd)
                s.close()
        """,
    },
    "session": {
        "burn.py": CPU_BURN,
        "conftest.py": """
            import time, pytest

            @pytest.fixture(scope="session")
            def expensive():
                time.sleep(1.0)
                return "ready"
        """,
        "test_session.py": """
            import pytest, burn

            @pytest.mark.parametrize("i", range(40))
            def test_session(expensive, i):
                burn.burn(0.030)
                assert expensive == "ready"
        """,
    },
}

PARENT_CONFTEST = """
import os, resource

def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        r = resource.getrusage(resource.RUSAGE_SELF)
        with open(os.environ["PARENT_CPU"], "w") as f:
            f.write("%f %d" % (r.ru_utime + r.ru_stime, r.ru_minflt))
"""

# Plugins are not loaded from entry points (PYTEST_DISABLE_PLUGIN_AUTOLOAD):
# each variant loads what it is about, so that the test extras installed in
# this virtualenv (hypothesis, syrupy, ...) do not weigh on every start-up.
ISO = ("-p", "isolate", "--isolate-all")
XDIST = ("-p", "xdist")
VARIANTS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "cpu": {"plain": (), "isolate-all": ISO, "jobs 2": ISO + ("--isolate-jobs", "2")},
    "ports": {"jobs 4": ISO + ("--isolate-jobs", "4"), "plain": (), "-n 4": XDIST + ("-n", "4")},
    "session": {"-n 2": XDIST + ("-n", "2"), "jobs 2": ISO + ("--isolate-jobs", "2"), "plain": ()},
}


def write(root: Path, files: Dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip("\n"))
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return root


def run(project: Path, args: Sequence[str], env: Dict[str, str]) -> Tuple[float, int, str]:
    """(wall seconds, exit status, the summary line)."""
    # The ports suite's plain and -n variants create /tmp/same-name on the
    # host (isolated tests see the host's /tmp copy-on-write): every variant
    # starts without it.
    try:
        os.unlink("/tmp/same-name")
    except FileNotFoundError:
        pass
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=project, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return wall, out.returncode, (lines[-1] if lines else out.stderr[-300:]).strip("= ")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_suite(name: str, root: Path, rounds: int, env: Dict[str, str]) -> List[str]:
    project = write(root / name, SUITES[name])
    variants = VARIANTS[name]
    walls: Dict[str, List[float]] = {v: [] for v in variants}
    summaries: Dict[str, str] = {}
    lines = [f"## {name} (load average before: {load()})"]
    for _ in range(rounds):
        for v, args in variants.items():
            wall, code, summary = run(project, args, env)
            walls[v].append(wall)
            summaries[v] = f"exit {code}: {summary}"
    base = "plain" if name == "cpu" else "-n 2" if name == "session" else None
    lines.append(f"{'variant':<14}{'median s':>10}{'min s':>8}{'max s':>8}{'ratio':>8}   last run")
    for v in variants:
        med = statistics.median(walls[v])
        ratio = ""
        if base is not None:
            ratio = f"{statistics.median(w / b for w, b in zip(walls[v], walls[base])):.2f}"
        lines.append(f"{v:<14}{med:>10.3f}{min(walls[v]):>8.3f}{max(walls[v]):>8.3f}{ratio:>8}   {summaries[v]}")
    lines.append(f"(load average after: {load()}; ratio: median of the per-round ratios to {base})"
                 if base else f"(load average after: {load()})")
    return lines


def parent_suite(root: Path, rounds: int, env: Dict[str, str], jobs: Sequence[int]) -> List[str]:
    sizes = (100, 300)
    projects = {}
    for n in sizes:
        projects[n] = write(root / f"parent{n}", {
            "conftest.py": PARENT_CONFTEST,
            "test_trivial.py": f"""
                import pytest

                @pytest.mark.parametrize("i", range({n}))
                def test_trivial(i):
                    pass
            """})
    cpu: Dict[int, List[float]] = {j: [] for j in jobs}
    faults: Dict[int, List[float]] = {j: [] for j in jobs}
    walls: Dict[int, List[float]] = {j: [] for j in jobs}
    lines = [f"## parent: the pytest process's CPU per test (load average before: {load()})"]
    out = root / "parent-cpu.txt"
    env = dict(env, PARENT_CPU=str(out))
    for _ in range(rounds):
        for j in jobs:
            got = {}
            for n in sizes:
                wall, code, summary = run(projects[n], ISO + ("--isolate-jobs", str(j)), env)
                if code != 0:
                    raise SystemExit(f"parent suite, {j} jobs, {n} tests: {summary}")
                seconds, minflt = out.read_text().split()
                got[n] = (float(seconds), int(minflt), wall)
            span = sizes[1] - sizes[0]
            cpu[j].append((got[sizes[1]][0] - got[sizes[0]][0]) / span * 1e3)
            faults[j].append((got[sizes[1]][1] - got[sizes[0]][1]) / span)
            walls[j].append((got[sizes[1]][2] - got[sizes[0]][2]) / span * 1e3)
    lines.append(f"{'jobs':>5}{'parent CPU ms/test':>20}{'minor faults/test':>19}{'wall ms/test':>14}")
    for j in jobs:
        lines.append(f"{j:>5}{statistics.median(cpu[j]):>20.2f}{statistics.median(faults[j]):>19.0f}"
                     f"{statistics.median(walls[j]):>14.2f}")
    lines.append(f"(medians of {rounds} rounds; the difference between {sizes[1]} and {sizes[0]} trivial tests; "
                 f"load average after: {load()})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--suite", default="cpu,ports,session,parent")
    ap.add_argument("--jobs", default="1,2,4,8", help="job counts of the parent suite")
    ap.add_argument("--out", help="also append the report to this file")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    lines = [f"machine: {platform.node()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
             f"kernel {platform.release()}, Python {platform.python_version()}, euid {os.geteuid()}",
             f"rounds: {args.rounds}, variants interleaved within each round", ""]
    with tempfile.TemporaryDirectory(prefix="isolate-jobs-bench-", dir="/var/tmp") as tmp:
        for name in args.suite.split(","):
            if name == "parent":
                lines += parent_suite(Path(tmp), args.rounds, env, [int(j) for j in args.jobs.split(",")])
            else:
                lines += timed_suite(name, Path(tmp), args.rounds, env)
            lines.append("")
            print("\n".join(lines[-12:]), file=sys.stderr, flush=True)
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
