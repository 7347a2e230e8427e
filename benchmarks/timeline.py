"""Where one isolated test's time goes inside a pytest run.

Generates N trivial tests, runs them with ``--isolate-all`` and a conftest
that timestamps (CLOCK_MONOTONIC, shared by every PID namespace) the
parent's hooks and the sandbox's own, then prints the median time of each
event after the test's ``pytest_runtest_logstart`` (the first 20 tests are
warm-up) and the per-test wall time of the whole run.

    python benchmarks/timeline.py [N]
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CONFTEST = '''
import os, time, pytest
OUT = os.environ["TIMELINE_OUT"]
P = []

def _c(item, ev):
    import resource
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with open(os.path.join(OUT, "child-" + item.name.replace("/", "_")), "a") as f:
        f.write(f"{time.perf_counter()} {ev} ({faults} page faults so far)\\n")


def pytest_configure(config):
    import pytest_isolate.child as child
    run_item = child.run_item

    def timed(side, item, *args, **kwargs):
        _c(item, "sandbox: payload starts")
        return run_item(side, item, *args, **kwargs)

    child.run_item = timed

def pytest_runtest_logstart(nodeid, location): P.append(("parent: logstart", time.perf_counter()))
def pytest_isolate_modify_spec(item, spec): P.append(("parent: spec built, sandbox launched", time.perf_counter()))
def pytest_isolate_result(item, result): P.append(("parent: run() returned", time.perf_counter()))
def pytest_runtest_logreport(report): P.append((f"parent: {report.when} report logged", time.perf_counter()))
def pytest_runtest_logfinish(nodeid, location): P.append(("parent: logfinish", time.perf_counter()))

@pytest.hookimpl(tryfirst=True)
def pytest_isolate_child_setup(item): _c(item, "sandbox: pytest's setup phase starts")

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _c(item, "sandbox: test function starts"); yield; _c(item, "sandbox: test function returned")

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    _c(item, "sandbox: teardown phase starts"); yield; _c(item, "sandbox: teardown phase done")

def pytest_sessionfinish(session):
    import glob, statistics, collections
    child = {}
    for fn in glob.glob(os.path.join(OUT, "child-*")):
        with open(fn) as f:
            child[fn.split("child-", 1)[1]] = [(l.split(" ", 1)[1].strip(), float(l.split(" ", 1)[0])) for l in f]
    faults = collections.defaultdict(list)
    for c in child.values():
        for i, (ev, t) in enumerate(c):
            ev, _, n = ev.partition(" (")
            faults[ev].append(int(n.split()[0]))
            c[i] = (ev, t)
    tests, cur = [], None
    for ev, t in P:
        if ev == "parent: logstart":
            cur = [(ev, t)]
            tests.append(cur)
        elif cur is not None:
            cur.append((ev, t))
    names = sorted(child)
    by_event = collections.defaultdict(list)
    starts = []
    for tv in tests[20:]:
        t0, end = tv[0][1], tv[-1][1]
        starts.append(t0)
        evs = list(tv)
        for n in names:
            c = child[n]
            if c and t0 <= c[0][1] <= end:
                evs += c
        for ev, t in evs:
            by_event[ev].append((t - t0) * 1e3)
    rows = sorted((statistics.median(v), k) for k, v in by_event.items())
    gaps = [(b - a) * 1e3 for a, b in zip(starts, starts[1:])]
    with open(os.path.join(OUT, "timeline.txt"), "w") as f:
        for m, k in rows:
            extra = f"  [{statistics.median(faults[k]):.0f} page faults]" if k in faults else ""
            f.write(f"{m:8.2f}  {k}{extra}\\n")
        f.write(f"{statistics.median(gaps):8.2f}  parent: next test's logstart\\n")
'''


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="isolate-timeline-") as d:
        root = Path(d)
        out = root / "out"
        out.mkdir()
        (root / "conftest.py").write_text(CONFTEST)
        (root / "test_t.py").write_text(textwrap.dedent(f"""
            import pytest

            @pytest.mark.parametrize("i", range({n}))
            def test_t(i):
                assert i >= 0
        """))
        (root / "pytest.ini").write_text(f"[pytest]\nisolate_writable = {out}\n")
        env = dict(os.environ, TIMELINE_OUT=str(out), PYTEST_ADDOPTS="")
        load = os.getloadavg()[0]
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--isolate-all"],
                       cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        print(f"# {platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, load {load:.2f}; "
              f"{n} trivial isolated tests in {wall:.2f} s")
        print("median ms after logstart  event")
        print((out / "timeline.txt").read_text(), end="")


if __name__ == "__main__":
    main()
