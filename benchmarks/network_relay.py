"""The network relay through the real runtime, against its speed targets.

  rtt / bulk   a client inside a sandbox (``isolate_runtime.run``,
               network="services") talks to a server of the caller on
               127.0.0.1, through the relay; the same client in a plain
               forked child talks to it directly.  Interleaved rounds: the
               median round trip of one byte, and 100 MB down and up.
  cost         what making a sandbox costs per services forwarded:
               ``run()`` of a payload that does nothing, interleaved, with
               network="none" (no look at all), "services" with nothing of
               the caller's listening, and "services" with two listeners of
               the caller (forwarded, never connected to).  Then, as the
               plugin runs it (the look at the caller's listeners made once
               and reused until a fixture's scope changes): network="none"
               against two services forwarded, interleaved.

    python benchmarks/network_relay.py [--rounds 5] [--runs 300] [--server process|thread]

The whole-suite A/B is ``benchmarks/suites.py --suite trivial,services
--variants isolate-all,isolate-net-none``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List

from isolate_runtime import (
    CallablePayload,
    SandboxSpec,
    probe,
    reuse_service_looks,
    run,
    send_message,
    services_changed,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay_candidates import MB, client, start_server  # noqa: E402


def _inside(port: int, n: int, bulk: int) -> Dict[str, float]:
    return client(port, n, bulk)


def _direct(port: int, n: int, bulk: int) -> Dict[str, float]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, json.dumps(client(port, n, bulk)).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out: Dict[str, float] = json.loads(data)
    return out


def bench_transfer(port: int, rounds: int, n: int, bulk: int) -> Dict[str, List[Dict[str, float]]]:
    out: Dict[str, List[Dict[str, float]]] = {"direct": [], "relayed": []}
    spec = SandboxSpec(CallablePayload(_inside, (port, n, bulk)), network="services")
    for _ in range(rounds):
        out["direct"].append(_direct(port, n, bulk))
        r = run(spec)
        assert r.outcome.value == "ok", (r, r.traceback)
        assert r.forwarded == (f"127.0.0.1:{port}",), r.forwarded
        out["relayed"].append(r.value)
    return out


def _noop() -> None:
    send_message(time.perf_counter())


def bench_cost(runs: int) -> Dict[str, Dict[str, List[float]]]:
    """Interleaved run() of a no-op payload: total, and until the payload starts."""
    specs = {"none": SandboxSpec(CallablePayload(_noop), network="none"),
             "services, 0 forwarded": SandboxSpec(CallablePayload(_noop), network="services")}
    listeners: List[socket.socket] = []
    labels = list(specs) + ["services, 2 forwarded"]
    out: Dict[str, Dict[str, List[float]]] = {k: {"start": [], "total": []} for k in labels}
    for i in range(runs + 5):
        for label in out:
            if label == "services, 2 forwarded":
                if not listeners:
                    for _ in range(2):
                        s = socket.socket()
                        s.bind(("127.0.0.1", 0))
                        s.listen()
                        listeners.append(s)
                spec = specs["services, 0 forwarded"]
            else:
                for s in listeners:
                    s.close()
                listeners.clear()
                spec = specs[label]
            got: List[float] = []
            t0 = time.perf_counter()
            r = run(spec, on_message=got.append)
            t1 = time.perf_counter()
            assert r.outcome.value == "ok", r
            assert len(r.forwarded) == (2 if label.startswith("services, 2") else 0), (label, r.forwarded)
            if i >= 5:
                out[label]["start"].append(got[0] - t0)
                out[label]["total"].append(t1 - t0)
    for s in listeners:
        s.close()
    return out


def bench_cost_reused(runs: int) -> Dict[str, Dict[str, List[float]]]:
    """As :func:`bench_cost`, with the look at the listeners reused as the
    plugin reuses it between scope changes: what each test pays."""
    listeners: List[socket.socket] = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        listeners.append(s)
    reuse_service_looks(True)
    services_changed()
    specs = {"none (look reused)": SandboxSpec(CallablePayload(_noop), network="none"),
             "services, 2 forwarded (look reused)": SandboxSpec(CallablePayload(_noop), network="services")}
    out: Dict[str, Dict[str, List[float]]] = {k: {"start": [], "total": []} for k in specs}
    try:
        for i in range(runs + 5):
            for label, spec in specs.items():
                got: List[float] = []
                t0 = time.perf_counter()
                r = run(spec, on_message=got.append)
                t1 = time.perf_counter()
                assert r.outcome.value == "ok", r
                assert len(r.forwarded) == (2 if "2 forwarded" in label else 0), (label, r.forwarded)
                if i >= 5:
                    out[label]["start"].append(got[0] - t0)
                    out[label]["total"].append(t1 - t0)
    finally:
        reuse_service_looks(False)
        for s in listeners:
            s.close()
    return out


def _p(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5, help="transfer rounds (direct and relayed interleaved)")
    ap.add_argument("--rtt", type=int, default=2000, help="round trips per round")
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=300, help="sandboxes per variant for the cost")
    ap.add_argument("--server", choices=("process", "thread"), default="process")
    ap.add_argument("--only", choices=("transfer", "cost"))
    args = ap.parse_args()
    caps = probe()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"layers missing: {[x.name for x in caps.missing()] or 'none'}; accelerator: {caps.accelerator.state}")
    if args.only != "cost":
        port, server = start_server(args.server)
        try:
            res = bench_transfer(port, args.rounds, args.rtt, args.mb * MB)
        finally:
            if isinstance(server, subprocess.Popen):
                server.kill()
                server.wait()
            else:
                server.close()
        d, r = res["direct"], res["relayed"]
        rtt_d = statistics.median(x["rtt_us"] for x in d)
        rtt_r = statistics.median(x["rtt_us"] for x in r)
        extra = statistics.median(b["rtt_us"] - a["rtt_us"] for a, b in zip(d, r))
        print(f"server: {args.server}; {args.rounds} rounds of {args.rtt} round trips and {args.mb} MB each way "
              f"(load {os.getloadavg()[0]:.2f} after)")
        print(f"  round trip: direct {rtt_d:.1f} us, relayed {rtt_r:.1f} us, relay adds {extra:.1f} us "
              "(median of the per-round differences)")
        for key, what in (("down_MBps", "download"), ("up_MBps", "upload")):
            print(f"  {args.mb} MB {what}: direct {statistics.median(x[key] for x in d):.0f} MB/s, "
                  f"relayed {statistics.median(x[key] for x in r):.0f} MB/s "
                  f"(slowest round {min(x[key] for x in r):.0f} MB/s)")
    if args.only != "transfer":
        cost = bench_cost(args.runs)
        base = cost["none"]
        print(f"cost of making a sandbox, {args.runs} each, interleaved (load {os.getloadavg()[0]:.2f} after)")
        print(f"  {'network':<24}{'start ms':>10}{'total ms':>10}{'p95 total':>11}{'total - none':>14}")
        for label, xs in cost.items():
            med = statistics.median(xs["total"])
            print(f"  {label:<24}{statistics.median(xs['start']) * 1e3:>10.3f}{med * 1e3:>10.3f}"
                  f"{_p(xs['total'], 0.95) * 1e3:>11.3f}{(med - statistics.median(base['total'])) * 1e3:>+14.3f}")
        cost = bench_cost_reused(args.runs)
        base = cost["none (look reused)"]
        print(f"as the plugin makes them (the look reused), {args.runs} each, interleaved "
              f"(load {os.getloadavg()[0]:.2f} after)")
        for label, xs in cost.items():
            med = statistics.median(xs["total"])
            print(f"  {label:<36}{statistics.median(xs['start']) * 1e3:>10.3f}{med * 1e3:>10.3f}"
                  f"{_p(xs['total'], 0.95) * 1e3:>11.3f}{(med - statistics.median(base['total'])) * 1e3:>+14.3f}")



if __name__ == "__main__":
    main()
