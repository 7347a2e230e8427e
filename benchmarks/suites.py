"""Whole-process benchmark of pytest suites: plain, --isolate-all, --forked.

Generates the suites into a scratch directory, then runs every variant in
interleaved rounds (so machine load hits all variants alike) and reports the
median wall time per variant, the per-test overhead against plain pytest and
the median of the per-round ratios.

    python benchmarks/suites.py [--rounds 5] [--suite trivial,heavy,session,mixed] [--out FILE]
                                [--compare LABEL=PYTHON ...] [--variants plain,isolate-all,...]

``--compare main=/path/to/other/checkout/.venv/bin/python`` adds a variant
that runs ``--isolate-all`` with another installation (e.g. a checkout of the
previous main), interleaved with the others: the A/B pair of a change.
Besides wall time, each variant's CPU time per test is reported (user +
system of pytest and every process it reaped: the sandboxes included).

Suites:
  trivial  500 trivial tests
  heavy    100 tests under a parent holding ~100 MB of imported objects
  session  100 tests sharing a 0.2 s session-scoped fixture
  mixed    a realistic mix: fixtures of every scope, tmp_path, parametrize,
           a subprocess, some output (200 tests)
  services 500 trivial tests while the pytest process listens on two
           loopback ports (forwarded into every sandbox by the default
           network="services"; compare with the isolate-net-none variant)
  rss      5000 isolated tests; the parent's RSS, open fds and time per test
           are sampled every 500 tests
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

SUITES: Dict[str, Dict[str, str]] = {
    "trivial": {
        "test_trivial.py": """
            import pytest

            @pytest.mark.parametrize("i", range(500))
            def test_trivial(i):
                assert i >= 0
        """,
    },
    "heavy": {
        "conftest.py": """
            # ~100 MB of Python objects in the parent, like a big import graph
            BALLAST = [bytearray(1024) for _ in range(100 * 1024)]
        """,
        "test_heavy.py": """
            import pytest

            @pytest.mark.parametrize("i", range(100))
            def test_heavy(i):
                assert i >= 0
        """,
    },
    "session": {
        "conftest.py": """
            import time, pytest

            @pytest.fixture(scope="session")
            def slow_resource():
                time.sleep(0.2)
                return {"ready": True}
        """,
        "test_session.py": """
            import pytest

            @pytest.mark.parametrize("i", range(100))
            def test_session(slow_resource, i):
                assert slow_resource["ready"]
        """,
    },
    "mixed": {
        "conftest.py": """
            import pytest

            @pytest.fixture(scope="session")
            def config():
                return {"answer": 42}

            @pytest.fixture(scope="module")
            def table():
                return list(range(1000))
        """,
        "test_mixed_a.py": """
            import json, subprocess, sys, pytest

            @pytest.fixture
            def record(tmp_path):
                p = tmp_path / "r.json"
                p.write_text(json.dumps({"x": 1}))
                return p

            @pytest.mark.parametrize("i", range(60))
            def test_file(record, config, i):
                assert json.loads(record.read_text())["x"] == 1
                print("value", i)

            @pytest.mark.parametrize("i", range(40))
            def test_compute(table, i):
                assert sum(table[:i]) >= 0
        """,
        "test_mixed_b.py": """
            import subprocess, sys, pytest

            class TestGroup:
                @pytest.fixture(scope="class")
                def shared(self):
                    return object()

                @pytest.mark.parametrize("i", range(95))
                def test_method(self, shared, i):
                    assert shared is not None

            @pytest.mark.parametrize("i", range(5))
            def test_subprocess(i):
                subprocess.run([sys.executable, "-c", "pass"], check=True)
        """,
    },
    "services": {
        "conftest.py": """
            import socket, pytest

            @pytest.fixture(scope="session", autouse=True)
            def two_services():
                # two loopback listeners of the pytest process: forwarded into
                # every sandbox by network="services" (never connected to)
                socks = []
                for _ in range(2):
                    s = socket.socket()
                    s.bind(("127.0.0.1", 0))
                    s.listen()
                    socks.append(s)
                yield
                for s in socks:
                    s.close()
        """,
        "test_services.py": """
            import pytest

            @pytest.mark.parametrize("i", range(500))
            def test_services(i):
                assert i >= 0
        """,
    },
    "rss": {
        "conftest.py": """
            import os, time, psutil, pytest
            N = 0

            def pytest_runtest_logfinish(nodeid, location):
                global N
                N += 1
                if N % 500 == 0:
                    with open(os.environ["RSS_LOG"], "a") as f:
                        f.write(f"{N} {psutil.Process().memory_info().rss} {len(os.listdir('/proc/self/fd'))} "
                                f"{time.perf_counter()}\\n")
        """,
        "test_rss.py": """
            import pytest

            @pytest.mark.parametrize("i", range(5000))
            def test_rss(i):
                assert i >= 0
        """,
    },
}
COUNTS = {"trivial": 500, "heavy": 100, "session": 100, "mixed": 200, "services": 500, "rss": 5000}


def write_suite(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for fname, text in SUITES[name].items():
        (d / fname).write_text(textwrap.dedent(text))
    (d / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return d


Variant = Tuple[str, List[str]]


def run_once(suite: Path, variant: Variant, env: Dict[str, str]) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of the run and everything it reaped)."""
    python, extra = variant
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([python, "-m", "pytest", "-q", *extra], cwd=suite, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{suite.name} {extra} failed:\n{out.stdout[:3000]}\n{out.stderr[:3000]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--suite", default="trivial,heavy,session,mixed")
    ap.add_argument("--out", help="also append the report to this file")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=PYTHON",
                    help="also run --isolate-all with this interpreter (another installation)")
    ap.add_argument("--variants", help="only these variants (comma-separated labels; plain is always run); "
                                       "isolate-net-none (--isolate-network=none) only when named here")
    args = ap.parse_args()
    me = sys.executable
    variants: Dict[str, Variant] = {"plain": (me, ["-p", "no:isolate"]), "isolate-all": (me, ["--isolate-all"])}
    if args.variants and "isolate-net-none" in args.variants.split(","):
        # the network relay's A/B: sandboxes that do not look at the host's services at all
        variants["isolate-net-none"] = (me, ["--isolate-all", "--isolate-network=none"])
    if importlib.util.find_spec("pytest_forked") is not None:
        variants["forked"] = (me, ["-p", "no:isolate", "--forked"])
    for spec in args.compare:
        label, _, python = spec.partition("=")
        if not python:
            ap.error(f"--compare {spec!r}: expected LABEL=PYTHON")
        variants[label] = (python, ["--isolate-all"])
    if args.variants:
        keep = {"plain", *args.variants.split(",")}
        variants = {k: v for k, v in variants.items() if k in keep}
    lines = [f"machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
             f"Python {platform.python_version()}, euid {os.geteuid()}, load at start {os.getloadavg()[0]:.2f}",
             f"rounds: {args.rounds} (variants interleaved within each round)", ""]
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    with tempfile.TemporaryDirectory(prefix="isolate-bench-") as tmp:
        root = Path(tmp)
        for name in args.suite.split(","):
            suite = write_suite(root, name)
            n = COUNTS[name]
            if name == "rss":
                # pytest keeps every report: plain pytest's own growth is the yardstick
                for v in ("isolate-all", "plain"):
                    log = root / f"rss-{v}.log"
                    env["RSS_LOG"] = str(log)
                    run_once(suite, variants[v], env)
                    rows = [line.split() for line in log.read_text().splitlines()]
                    rss = [int(r[1]) for r in rows]
                    lines.append(f"## rss: pytest's RSS over {n} tests, {v} (every 500 tests)")
                    lines.append("tests   rss MiB   open fds   ms per test since the row before")
                    lines += [f"{r[0]:>5} {int(r[1]) / 2**20:9.1f} {r[2]:>10}   "
                              + (f"{(float(r[3]) - float(p[3])) * 1e3 / (int(r[0]) - int(p[0])):8.2f}" if p else "")
                              for p, r in zip([None] + rows[:-1], rows)]
                    lines.append(f"RSS change from 500 to {n} tests: {(rss[-1] - rss[0]) / 2**20:+.1f} MiB "
                                 f"({100 * (rss[-1] - rss[0]) / rss[0]:+.1f} %)")
                    lines.append("")
                continue
            times: Dict[str, List[float]] = {v: [] for v in variants}
            cpu: Dict[str, List[float]] = {v: [] for v in variants}
            for _ in range(args.rounds):
                for v, variant in variants.items():
                    wall, used = run_once(suite, variant, env)
                    times[v].append(wall)
                    cpu[v].append(used)
            plain = statistics.median(times["plain"])
            plain_cpu = statistics.median(cpu["plain"])
            lines.append(f"## {name}: {n} tests (load {os.getloadavg()[0]:.2f} after)")
            lines.append(f"{'variant':<13}{'median s':>10}{'per-test overhead ms':>22}{'ratio to plain (median)':>26}"
                         f"{'CPU ms per test over plain':>28}")
            for v in variants:
                med = statistics.median(times[v])
                ratios = [t / p for t, p in zip(times[v], times["plain"])]
                lines.append(f"{v:<13}{med:>10.3f}{(med - plain) / n * 1e3:>22.2f}{statistics.median(ratios):>26.2f}"
                             f"{(statistics.median(cpu[v]) - plain_cpu) / n * 1e3:>28.2f}")
            lines.append("")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
