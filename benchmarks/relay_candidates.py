"""Where should the network relay live?  The candidates, measured.

A "sandbox" here is a forked child in a fresh network namespace (with its
own user namespace when pasta needs one) whose listener on 127.0.0.1:PORT
is carried to a server on the host's 127.0.0.1:PORT by:

  direct        no sandbox: the client on the host (the floor)
  process       the relay process (isolate_runtime/relayd.py), separate from the caller
  caller        the same loop run by the caller itself while it waits (the
                pytest process's main thread)
  pasta         pasta from the passt project, attached to the namespace (-T PORT)

Servers: a process of its own (``--server process``, default) or a thread
of the caller (``--server thread``, as a session fixture's
ThreadingHTTPServer would be).  Measured from inside: the round trip of one
byte (median of N), the time to download and to upload 100 MB, and for
each candidate what it costs to make one sandbox's forward.

    python benchmarks/relay_candidates.py [--rounds 5] [--server process|thread] [--candidates ...]

Needs root (namespaces for the children; pasta runs as uid 65534 in a user
namespace of its own, the way an unprivileged pytest would run it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME = os.path.join(os.path.dirname(HERE), "runtime")
sys.path.insert(0, RUNTIME)

from isolate_runtime import _syscalls as sc  # noqa: E402
from isolate_runtime import relayd  # noqa: E402
from isolate_runtime.network import loopback_up  # noqa: E402

NOBODY = 65534
MB = 1 << 20

SERVER = r"""
import socket, struct, sys, threading
def serve(conn):
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            op = conn.recv(1)
            if not op:
                return
            if op == b"p":
                conn.sendall(b"p")
            elif op in (b"d", b"u"):
                size = struct.unpack("!Q", conn.recv(8, socket.MSG_WAITALL))[0]
                if op == b"d":
                    chunk = bytes(1 << 18)
                    while size > 0:
                        size -= conn.send(chunk[:min(size, len(chunk))])
                else:
                    while size > 0:
                        n = conn.recv_into(view[:min(size, len(buf))])
                        if not n:
                            return
                        size -= n
                    conn.sendall(b"k")
def main(srv):
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def start_server(kind: str) -> Tuple[int, Any]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    if kind == "thread":
        ns: Dict[str, Any] = {}
        exec(SERVER, ns)  # noqa: S102 - our own server, in this process's thread as a fixture would run it
        threading.Thread(target=ns["main"], args=(srv,), daemon=True).start()
        return port, srv
    proc = subprocess.Popen([sys.executable, "-c", SERVER + "\nmain(socket.socket(fileno=int(sys.argv[1])))",
                             str(srv.fileno())], pass_fds=(srv.fileno(),))
    srv.close()
    return port, proc


def client(port: int, rtt_n: int, bulk: int, ready_after: float = 0.0) -> Dict[str, float]:
    """Runs where the test would: connects to 127.0.0.1:port."""
    t0 = time.perf_counter()
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"p")  # a forward that accepts but cannot reach the server fails here
            if c.recv(1) != b"p":
                raise OSError("no answer")
            break
        except OSError:
            if time.perf_counter() - t0 > 10:
                raise
            time.sleep(0.0005)
    first = time.perf_counter() - (ready_after or t0)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(rtt_n):
        t = time.perf_counter()
        c.sendall(b"p")
        c.recv(1)
        rtts.append(time.perf_counter() - t)
    out = {"first_s": first, "rtt_us": statistics.median(rtts) * 1e6}
    buf = bytearray(1 << 18)
    t = time.perf_counter()
    c.sendall(b"d" + bulk.to_bytes(8, "big"))
    left = bulk
    while left:
        n = c.recv_into(buf, min(left, len(buf)))
        if not n:
            raise OSError("short download")
        left -= n
    out["down_MBps"] = bulk / MB / (time.perf_counter() - t)
    chunk = bytes(1 << 18)
    t = time.perf_counter()
    c.sendall(b"u" + bulk.to_bytes(8, "big"))
    left = bulk
    while left:
        left -= c.send(chunk[:min(left, len(chunk))])
    assert c.recv(1) == b"k"
    out["up_MBps"] = bulk / MB / (time.perf_counter() - t)
    c.close()
    return out


def sandboxed(port: int, rtt_n: int, bulk: int, listen: bool, userns: bool) -> Tuple[int, Optional[socket.socket], int]:
    """Fork a child in a new network namespace; returns (pid, listener the
    child made in it or None, read end of its result pipe).  The child
    runs the client once it reads a byte from its stdin pipe."""
    fds, fds_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fds.close()
            os.close(r)
            if userns:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                sc.libc().prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: a uid change cleared it; pasta opens /proc/PID/ns
                sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNET)
            else:
                sc.unshare(sc.CLONE_NEWNET)
            loopback_up()
            sent = []
            if listen:
                lsock = socket.socket()
                lsock.bind(("127.0.0.1", port))
                lsock.listen(4096)
                sent = [lsock.fileno()]
            fds_child.sendmsg([b"r"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(
                __import__("array").array("i", sent))))] if sent else [])
            if listen:
                lsock.close()
            go = fds_child.recv(64)
            res = client(port, rtt_n, bulk, ready_after=float(go) if go else 0.0)
            os.write(w, json.dumps(res).encode())
            os._exit(0)
        except BaseException as e:  # noqa: B036 - a forked child must never return
            try:
                os.write(w, json.dumps({"error": repr(e)}).encode())
            finally:
                os._exit(1)
    fds_child.close()
    os.close(w)
    _, anc, _, _ = fds.recvmsg(16, socket.CMSG_SPACE(4))
    lsock = None
    for level, kind, blob in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            lsock = socket.socket(fileno=int.from_bytes(blob[:4], sys.byteorder, signed=True))
    sandboxed.go[pid] = fds  # type: ignore[attr-defined]
    return pid, lsock, r


sandboxed.go = {}  # type: ignore[attr-defined]


def go(pid: int, t0: float = 0.0) -> None:
    sandboxed.go.pop(pid).send(repr(t0).encode())  # type: ignore[attr-defined]


def collect(pid: int, r: int) -> Dict[str, float]:
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    res: Dict[str, Any] = json.loads(data)
    if "error" in res:
        raise RuntimeError(res["error"])
    return res


def run_direct(port: int, n: int, bulk: int) -> Dict[str, float]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, json.dumps(client(port, n, bulk)).encode())
        os._exit(0)
    os.close(w)
    res = collect(pid, r)
    res["setup_us"] = 0.0
    return res


class ProcessRelay:
    def __init__(self) -> None:
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        t = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", relayd.__file__, str(theirs.fileno()), "-1",
                                      str(os.getpid())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.started = time.perf_counter() - t
        self.n = 0

    def add(self, lsock: socket.socket, port: int) -> int:
        self.n += 1
        msg = json.dumps({"op": "add", "id": self.n, "targets": [["127.0.0.1", port]], "cap": 256}).encode()
        msg += b"\0" + bytes(4)  # the listener's errno: 0, its fd attached
        self.ctl.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(
            __import__("array").array("i", [lsock.fileno()]))))])
        lsock.close()
        return self.n

    def end(self, box: int) -> None:
        self.ctl.send(json.dumps({"op": "end", "id": box}).encode())

    def close(self) -> None:
        self.ctl.close()
        self.proc.wait(5)


def run_process(relay: ProcessRelay, port: int, n: int, bulk: int) -> Dict[str, float]:
    pid, lsock, r = sandboxed(port, n, bulk, listen=True, userns=False)
    assert lsock is not None
    t = time.perf_counter()
    box = relay.add(lsock, port)
    setup = time.perf_counter() - t
    go(pid)
    res = collect(pid, r)
    t = time.perf_counter()
    relay.end(box)
    res["setup_us"] = (setup + time.perf_counter() - t) * 1e6
    return res


def run_caller(port: int, n: int, bulk: int) -> Dict[str, float]:
    """The caller serves the relay loop itself while it waits for the sandbox."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid, lsock, r = sandboxed(port, n, bulk, listen=True, userns=False)
    assert lsock is not None
    t = time.perf_counter()
    loop = relayd.Relay(ours)
    fd = lsock.detach()
    loop.add(1, [("127.0.0.1", port)], [0], 256, [fd])
    setup = time.perf_counter() - t
    # the sandbox's end (its result pipe closing) ends the wait, as the
    # watch over a sandbox would: a stand-in that closes the control socket
    waiter = threading.Thread(target=lambda: (os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT), theirs.close()))
    waiter.start()
    go(pid)
    loop.run()
    waiter.join()
    res = collect(pid, r)
    res["setup_us"] = setup * 1e6
    loop.ep.close()
    for sock in [s for _, s, _, _ in loop.listeners.values()]:
        sock.close()
    ours.close()
    return res


def run_pasta(port: int, n: int, bulk: int) -> Dict[str, float]:
    pid, _, r = sandboxed(port, n, bulk, listen=False, userns=True)
    t0 = time.perf_counter()
    quiet = None if os.environ.get("PASTA_DEBUG") else subprocess.DEVNULL
    pasta = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                              "pasta", "-f", "-q", "-t", "none", "-u", "none", "-U", "none", "-T", str(port),
                              "--no-dhcp", "--no-ndp", "--no-dhcpv6", "--no-ra", "--no-icmp", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=quiet)
    try:
        go(pid, t0)
        res = collect(pid, r)
    finally:
        pasta.terminate()
        pasta.wait(5)
    res["setup_us"] = res.pop("first_s") * 1e6  # exec of pasta until the first byte came back inside
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rtt", type=int, default=2000, help="round trips per measurement")
    ap.add_argument("--mb", type=int, default=100, help="MB per bulk transfer")
    ap.add_argument("--server", choices=("process", "thread"), default="process")
    ap.add_argument("--candidates", default="direct,process,caller,pasta")
    args = ap.parse_args()
    cands = args.candidates.split(",")
    if "pasta" in cands and shutil.which("pasta") is None:
        print("pasta is not installed (Debian: apt-get install passt); skipping it")
        cands.remove("pasta")
    port, server = start_server(args.server)
    try:
        run_rounds(args, cands, port)
    finally:
        if isinstance(server, subprocess.Popen):
            server.kill()
            server.wait()


def run_rounds(args: argparse.Namespace, cands: List[str], port: int) -> None:
    bulk = args.mb * MB
    relay = ProcessRelay() if "process" in cands else None
    results: Dict[str, List[Dict[str, float]]] = {c: [] for c in cands}
    failures: Dict[str, List[str]] = {c: [] for c in cands}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for c in cands:
            try:
                if c == "direct":
                    res = run_direct(port, args.rtt, bulk)
                elif c == "process":
                    assert relay is not None
                    res = run_process(relay, port, args.rtt, bulk)
                elif c == "caller":
                    res = run_caller(port, args.rtt, bulk)
                else:
                    res = run_pasta(port, args.rtt, bulk)
            except RuntimeError as e:  # a stalled transfer: counted, not averaged
                failures[c].append(str(e))
                continue
            results[c].append(res)
    print(f"server: {args.server}; rounds {args.rounds}; load average {load:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"Python {sys.version.split()[0]}")
    if relay is not None:
        print(f"relay process start (once, not waited for): {relay.started * 1e3:.1f} ms")
        relay.close()
    base = statistics.median(r["rtt_us"] for r in results.get("direct", [])) if "direct" in results else None
    print(f"{'candidate':<10} {'rtt us':>8} {'+rtt us':>8} {'down MB/s':>10} {'up MB/s':>10} {'setup us':>10}")
    for c, rs in results.items():
        if failures[c]:
            print(f"{c}: {len(failures[c])} of {args.rounds} rounds failed: {'; '.join(failures[c])}")
        if not rs:
            continue
        rtt = statistics.median(r["rtt_us"] for r in rs)
        extra = f"{rtt - base:8.1f}" if base is not None else f"{'':8}"
        down, up, setup = (statistics.median(r[k] for r in rs) for k in ("down_MBps", "up_MBps", "setup_us"))
        print(f"{c:<10} {rtt:8.1f} {extra} {down:10.0f} {up:10.0f} {setup:10.0f}")


if __name__ == "__main__":
    main()
