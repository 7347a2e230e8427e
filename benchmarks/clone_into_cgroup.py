"""What joining a cgroup costs a new process, and what ``CLONE_INTO_CGROUP``
(clone3, cgroup v2, Linux >= 5.7) would save: N rounds of each, median and
p95, in a scratch cgroup made next to this process's own (v2 only; needs
write access there, e.g. root or a delegated cgroup).

    python benchmarks/clone_into_cgroup.py [N]

variants: ``fork`` (a child that exits at once), ``fork + join`` (the child
writes itself into cgroup.procs, as the sandboxes do today), ``clone3`` (the
raw system call: no Python fork handlers, so compare it with the next one
only), ``clone3 into`` (the kernel places the child in the cgroup as it
creates it).  On a hybrid host this uses the cgroup2 mount without
controllers: the migration's cost without any controller's share.
"""
from __future__ import annotations

import ctypes
import os
import statistics
import struct
import sys
import time

CLONE_INTO_CGROUP = 0x200000000
SYS_CLONE3 = 435  # x86-64 and aarch64 share it
SIGCHLD = 17


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    own = next(line.split("::", 1)[1].strip() for line in open("/proc/self/cgroup") if line.startswith("0::"))
    mount = next(line.split()[1] for line in open("/proc/self/mounts") if line.split()[2] == "cgroup2")
    parent = mount + (own if own != "/" else "")
    if own != "/":  # a process may not sit in an inner cgroup: use a sibling of ours
        parent = os.path.dirname(parent)
    target = os.path.join(parent, f"clone-bench-{os.getpid()}")
    os.mkdir(target)
    libc = ctypes.PyDLL(None)  # keeps the GIL across the call: the child only exits
    libc.syscall.restype = ctypes.c_long
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    procs = os.path.join(target, "cgroup.procs")
    times: dict = {"fork": [], "fork + join": [], "clone3": [], "clone3 into": []}
    try:
        for _ in range(n):
            for name in times:
                t = time.perf_counter()
                if name.startswith("clone3"):
                    flags = CLONE_INTO_CGROUP if name == "clone3 into" else 0
                    args = struct.pack("11Q", flags, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, fd)
                    buf = ctypes.create_string_buffer(args, len(args))
                    pid = libc.syscall(ctypes.c_long(SYS_CLONE3), buf, ctypes.c_size_t(len(args)))
                    if pid < 0:
                        raise SystemExit(f"clone3 failed: errno {ctypes.get_errno()}")
                else:
                    pid = os.fork()
                if pid == 0:
                    if name == "fork + join":
                        w = os.open(procs, os.O_WRONLY)
                        os.write(w, b"0")
                    os._exit(0)
                os.waitpid(pid, 0)
                times[name].append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.rmdir(target)
    print(f"# {n} rounds, cgroup {target}, kernel {os.uname().release}")
    print("variant        median us   p95 us")
    for name, v in times.items():
        v.sort()
        print(f"{name:<14}{statistics.median(v) * 1e6:10.0f}{v[int(len(v) * 0.95)] * 1e6:9.0f}")


if __name__ == "__main__":
    main()
