"""Per-sandbox cost of the cgroup backend: create, join_self (timed in the
child), read_stats, close; median and p95 over N sandboxes with all four
limits set.  A pair of 20 ms polls is included in ``poll`` (one read each).

    python benchmarks/cgroup_overhead.py [N] [--mode auto|unified|legacy|none]
"""
from __future__ import annotations

import argparse
import os
import statistics
import struct
import time
from typing import Dict, List

from isolate_runtime.cgroups import probe_cgroups, select_backend
from isolate_runtime.spec import Limits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=200)
    ap.add_argument("--mode", default="auto")
    args = ap.parse_args()
    backend = select_backend(force=args.mode)
    print(probe_cgroups(force=args.mode).describe())
    limits = Limits(memory_bytes=256 << 20, cpus=1.0, cpu_time_seconds=60.0, pids=64)
    steps: Dict[str, List[float]] = {k: [] for k in ("create", "join_self", "poll", "read_stats", "close", "total")}
    backend.create("warm-up", limits).close()
    for _ in range(args.n):
        r, w = os.pipe()
        t0 = time.perf_counter()
        cg = backend.create("bench", limits)
        t1 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                a = time.perf_counter()
                cg.join_self()
                os.write(w, struct.pack("d", time.perf_counter() - a))
                code = 0
            finally:
                os._exit(code)
        cg.set_root_pid(pid)
        os.close(w)
        joined = struct.unpack("d", os.read(r, 8))[0]
        os.close(r)
        os.waitpid(pid, 0)
        t2 = time.perf_counter()
        cg.poll()
        t3 = time.perf_counter()
        cg.read_stats()
        t4 = time.perf_counter()
        cg.close()
        t5 = time.perf_counter()
        for k, v in (("create", t1 - t0), ("join_self", joined), ("poll", t3 - t2), ("read_stats", t4 - t3),
                     ("close", t5 - t4), ("total", (t1 - t0) + joined + (t5 - t3))):
            steps[k].append(v)
    backend.shutdown()
    print(f"{'step':<11} {'median':>9} {'p95':>9}   (n={args.n}, backend {backend.name})")
    for k, xs in steps.items():
        xs.sort()
        print(f"{k:<11} {statistics.median(xs) * 1e6:>7.0f}us {xs[int(len(xs) * 0.95)] * 1e6:>7.0f}us")


if __name__ == "__main__":
    main()
