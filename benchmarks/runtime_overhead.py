"""The runtime's own overhead for one fully isolated payload.

For N runs: t0 in the parent just before ``isolate_runtime.run``; the payload
records when it starts (CLOCK_MONOTONIC is shared across PID namespaces);
``result`` is when the result frame reached the parent (``on_message``), and
``total`` when ``run()`` returned (reaped, stats read, cgroup removed).
A bare ``os.fork()`` + pipe round trip is measured the same way as the floor.

    python benchmarks/runtime_overhead.py [N] [--parent-mb MB]
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from typing import Dict, List

from isolate_runtime import CallablePayload, SandboxSpec, probe, run, send_message


def _payload() -> None:
    send_message(time.perf_counter())


def _pct(xs: List[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_sandbox(n: int) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {"start": [], "result": [], "total": []}
    spec = SandboxSpec(CallablePayload(_payload))
    for i in range(n + 5):
        got: List[float] = []
        t_result: List[float] = []

        def on_msg(m: float, got: List[float] = got, t_result: List[float] = t_result) -> None:
            got.append(m)
            t_result.append(time.perf_counter())

        t0 = time.perf_counter()
        r = run(spec, on_message=on_msg)
        t1 = time.perf_counter()
        assert r.outcome.value == "ok", r
        if i >= 5:
            out["start"].append(got[0] - t0)
            out["result"].append(t_result[0] - t0)
            out["total"].append(t1 - t0)
    return out


def bench_fork(n: int) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {"start": [], "result": [], "total": []}
    for i in range(n + 5):
        r, w = os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.write(w, repr(time.perf_counter()).encode())
            os._exit(0)
        os.close(w)
        data = os.read(r, 64)
        t_res = time.perf_counter()
        os.waitpid(pid, 0)
        t1 = time.perf_counter()
        os.close(r)
        if i >= 5:
            out["start"].append(float(data) - t0)
            out["result"].append(t_res - t0)
            out["total"].append(t1 - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=200)
    ap.add_argument("--parent-mb", type=int, default=0, help="hold this many MB of Python objects in the parent")
    args = ap.parse_args()
    ballast = [bytearray(1024) for _ in range(args.parent_mb * 1024)]
    gc.collect()
    caps = probe()
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, kernel {platform.release()}, "
          f"Python {platform.python_version()}, euid {os.geteuid()}, load {os.getloadavg()[0]:.2f}, "
          f"parent holds {args.parent_mb} MB")
    print(f"# layers: {', '.join(n for n, layer in caps.layers.items() if layer.available)}; cgroups: {caps.cgroups}")
    print(f"{'variant':<28}{'metric':<8}{'median ms':>10}{'p95 ms':>10}")
    for name, fn in (("bare fork + pipe", bench_fork), ("isolate_runtime.run (full)", bench_sandbox)):
        res = fn(args.n)
        for metric, xs in res.items():
            print(f"{name:<28}{metric:<8}{statistics.median(xs) * 1e3:>10.2f}{_pct(xs, 95) * 1e3:>10.2f}")
    del ballast


if __name__ == "__main__":
    sys.exit(main())
