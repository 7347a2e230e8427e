"""``python -m isolate_runtime probe`` and ``python -m isolate_runtime run -- CMD``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .spec import CommandPayload, Limits, SandboxSpec


def _size(text: str) -> int:
    from .units import parse_size

    return parse_size(text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m isolate_runtime",
                                     description="Probe this host's isolation layers, or run a command in the "
                                                 "same sandbox a test would get.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe", help="print which layers work here, why not, and how to fix it")
    run = sub.add_parser("run", help="run CMD in a sandbox (an interactive shell too)")
    run.add_argument("--root", action="store_true", help="run as a fake root (uid 0 inside)")
    run.add_argument("--network", choices=("none", "services", "host"), default="none",
                     help="none: own loopback only (default); services: plus the TCP services this command's "
                          "caller listens on at loopback; host: the host's network")
    run.add_argument("--forward", action="append", default=[], metavar="HOST:PORT",
                     help="relay this host loopback port into the sandbox (127.0.0.1:5432, [::1]:5432, "
                          "localhost:6379); repeatable")
    run.add_argument("--pid", choices=("private", "host"), default="private",
                     help="host: share this process's PID namespace (the command sees every process)")
    run.add_argument("--writable", action="append", default=[], metavar="PATH",
                     help="bind PATH read-write (writes there persist); repeatable")
    run.add_argument("--memory", type=_size, help="hard memory limit, e.g. 512M")
    run.add_argument("--cpus", type=float, help="CPU bandwidth cap, e.g. 0.5")
    run.add_argument("--cpu-time", type=float, help="CPU-time budget in seconds")
    run.add_argument("--pids", type=int, help="maximum number of processes")
    run.add_argument("--timeout", type=float, help="wall-clock limit in seconds")
    run.add_argument("--show", action="store_true", help="print the result and resource usage to stderr")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "probe":
        from .probe import probe

        caps = probe()
        print(f"isolate_runtime probe ({caps.platform}, euid {caps.euid})")
        print(caps.table())
        return 0 if not caps.missing() else 1
    cmd = list(args.command)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        parser.error("run: give a command after --, e.g. run -- bash")
    from .errors import SandboxError
    from .launcher import run as run_sandbox
    from .result import Outcome

    try:
        spec = SandboxSpec(
            payload=CommandPayload(tuple(cmd)),
            limits=Limits(memory_bytes=args.memory, cpus=args.cpus, cpu_time_seconds=args.cpu_time, pids=args.pids),
            timeout_seconds=args.timeout, root=args.root, network=args.network, forward=tuple(args.forward),
            pid=args.pid,
            writable=tuple(os.path.abspath(p) for p in args.writable), label="cli",
        )
    except SandboxError as e:
        parser.error(str(e))
    result = run_sandbox(spec)
    if args.show or result.outcome not in (Outcome.OK, Outcome.EXITED):
        print(f"isolate_runtime: {result.describe()}", file=sys.stderr)
    if args.show:
        for k, v in result.stats.as_dict().items():
            print(f"  {k}: {v}", file=sys.stderr)
        for service in result.forwarded:
            print(f"  forwarded: {service}", file=sys.stderr)
        for note in result.network_notes:
            print(f"  network: {note}", file=sys.stderr)
        for p in result.written_paths:
            print(f"  wrote (discarded): {p}", file=sys.stderr)
    if result.exit_code is not None:
        return result.exit_code
    if result.signal is not None:
        return 128 + result.signal
    return 125


if __name__ == "__main__":
    sys.exit(main())
