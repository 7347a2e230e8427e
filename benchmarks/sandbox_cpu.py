"""CPU of one sandbox, without pytest: a no-op payload through
``isolate_runtime.run``, N in a row, against a bare ``os.fork()`` with a
pipe and ``waitpid``.

For each: the caller's CPU, the CPU of everything it reaped, and the whole
machine's busy time from ``/proc/stat`` (which also counts the kernel
workers that tear namespaces down, charged to no process; run it on a quiet
machine), per sandbox, and the wall time.  Two rounds of each variant.

    python benchmarks/sandbox_cpu.py [N]
"""
from __future__ import annotations

import os
import resource
import sys
import time
from typing import Callable, Dict

from isolate_runtime import CallablePayload, SandboxSpec, run
from isolate_runtime.spec import LAYERS


def _noop() -> None:
    return None


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _measure(step: Callable[[], None], n: int) -> Dict[str, float]:
    s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    m0, t0 = _machine_busy(), time.perf_counter()
    for _ in range(n):
        step()
    t1 = time.perf_counter()
    time.sleep(0.5)  # the last teardowns
    m1 = _machine_busy()
    s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)

    def cpu(a: "resource.struct_rusage", b: "resource.struct_rusage") -> float:
        return b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime

    return {"caller": cpu(s0, s1) / n * 1e3, "reaped": cpu(c0, c1) / n * 1e3,
            "machine": (m1 - m0) / n * 1e3, "wall": (t1 - t0) / n * 1e3}


def _bare() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"x")
        os._exit(0)
    os.read(r, 1)
    os.waitpid(pid, 0)
    os.close(r)
    os.close(w)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    every = SandboxSpec(CallablePayload(_noop), layers={name: "required" for name in LAYERS}, network="none")
    no_net = SandboxSpec(CallablePayload(_noop), layers=dict({name: "required" for name in LAYERS}, network="off"),
                         network="host")
    def run_every() -> None:
        run(every)

    def run_no_net() -> None:
        run(no_net)

    variants = [("every layer", run_every), ("no network namespace", run_no_net), ("bare fork", _bare)]
    for step in (run_every, run_no_net):
        for _ in range(10):  # warm up: caches, the keeper, the first cgroups
            step()
    print(f"load average {os.getloadavg()[0]:.2f}; ms per sandbox")
    for _round in range(2):
        for name, step in variants:
            got = _measure(step, n)
            print(f"{name:22s} caller {got['caller']:5.2f}  reaped {got['reaped']:5.2f}  "
                  f"machine {got['machine']:5.2f}  wall {got['wall']:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
