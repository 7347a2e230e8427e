"""Hostile tests change hostname, mounts, network, sysctls, IPC, keys and cgroups; the host's stay."""
from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import textwrap
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

from .harness import Hostile, Snapshot, mountinfo, read_file, run_cmd

libc = ctypes.CDLL(None, use_errno=True)

UTS = """
    import socket
    import hostile as h

    def test_change_hostname_and_domainname():
        name = "evil-" + h.TAG
        h.attempt("sethostname", socket.sethostname, name)
        h.attempt("setdomainname", lambda: h.check(h.libc.setdomainname(name.encode(), len(name))))
        h.attempt("proc-hostname", lambda: open("/proc/sys/kernel/hostname", "w").write(name + "2"))
        # (inside, the test has no capabilities: EPERM is as good an answer
        # as a change of its own UTS namespace; the host is what is checked)
"""

UTS_STATE = {"hostname": socket.gethostname, "domainname": read_file("/proc/sys/kernel/domainname"),
             "proc-hostname": read_file("/proc/sys/kernel/hostname")}


#: How a case's hostile test is marked: with no capabilities (the default),
#: and root=True (every capability over the namespaces the sandbox owns:
#: there the changes are made, in the sandbox's own namespaces).
ROOT = pytest.mark.parametrize("root", [False, True], ids=["no-capabilities", "root-true"])


def _marked(source: str, root: bool, network: str = "") -> str:
    kwargs = ", ".join(([f"network={network!r}"] if network else []) + (["root=True"] if root else []))
    return f"import pytest\npytestmark = pytest.mark.isolated({kwargs})\n" + textwrap.dedent(source)


@ROOT
def test_hostname_and_domainname_stay(hostile: Hostile, host_global: None, root: bool) -> None:
    before = Snapshot.take(UTS_STATE)
    hostile.on_cleanup(lambda: _restore_uts(before))
    hostile.write(_marked(UTS, root))
    inner = hostile.run()
    assert not before.changed(UTS_STATE), f"host UTS names changed: {before.changed(UTS_STATE)}"
    inner.assert_healthy({"test_change_hostname_and_domainname": "passed",
                          "test_zz_canary_after_the_hostile_test": "passed"})
    if root:  # the change was made, in the sandbox's own UTS namespace
        assert hostile.evidence("sethostname") == "ok" and hostile.evidence("setdomainname") == "ok", (
            hostile.all_evidence())


def _restore_uts(before: Snapshot) -> None:
    for key, path in (("proc-hostname", "/proc/sys/kernel/hostname"), ("domainname", "/proc/sys/kernel/domainname")):
        if read_file(path)() != before.values[key]:
            Path(path).write_text(before.values[key])


MOUNTS = """
    import os
    import hostile as h

    MS_BIND, MS_REC, MS_REMOUNT, MS_RDONLY, MS_SHARED = 4096, 16384, 32, 1, 1 << 20

    def test_change_mounts():
        d = h.env("DIR")
        h.attempt("make-shared", h.mount, "none", "/", None, MS_SHARED | MS_REC)
        h.attempt("tmpfs-over-project", h.mount, "tmpfs", d, "tmpfs")
        h.attempt("write-into-tmpfs", lambda: open(os.path.join(d, "on-tmpfs"), "w").write("x"))
        h.attempt("tmpfs-over-etc", h.mount, "tmpfs", "/etc", "tmpfs")
        h.attempt("bind-root-over-mnt", h.mount, "/", "/mnt", None, MS_BIND | MS_REC)
        h.attempt("remount-root-ro", h.mount, "none", "/", None, MS_REMOUNT | MS_RDONLY)
        h.attempt("remount-sys-rw", h.mount, "none", "/sys", None, MS_REMOUNT | MS_BIND)
        h.attempt("umount-proc", h.umount, "/proc", 2)
        h.attempt("proc-again", h.mount, "proc", "/mnt", "proc")
"""


@ROOT
def test_mounts_stay(hostile: Hostile, host_global: None, root: bool) -> None:
    target = hostile.project / "mnt-target"
    target.mkdir()
    before = mountinfo()
    hostile.write(_marked(MOUNTS, root))
    inner = hostile.run(env={"CONTAINMENT_DIR": str(target)})
    assert mountinfo() == before, "the host's mount table changed"
    assert not (target / "on-tmpfs").exists()
    inner.assert_healthy({"test_change_mounts": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    if root:  # mounted, in the sandbox's own mount namespace
        assert hostile.evidence("tmpfs-over-project") == "ok" and hostile.evidence("write-into-tmpfs") == "ok", (
            hostile.all_evidence())


NETWORK = """
    import subprocess
    import hostile as h

    def ip(*args):
        got = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
        return "ok" if got.returncode == 0 else got.stderr.strip()[-200:]

    def test_change_network_configuration():
        link = "ct" + h.TAG[-8:]
        h.record("link-add", ip("link", "add", link, "type", "bridge"))
        h.record("addr-add", ip("addr", "add", "10.213.17.1/24", "dev", "lo"))
        h.record("route-add", ip("route", "add", "10.213.18.0/24", "dev", "lo"))
        h.record("lo-mtu", ip("link", "set", "lo", "mtu", "1280"))
        h.record("lo-down", ip("link", "set", "lo", "down"))
        h.attempt("ip-forward", lambda: open("/proc/sys/net/ipv4/ip_forward", "w").write("1"))
        h.attempt("somaxconn", lambda: open("/proc/sys/net/core/somaxconn", "w").write("17"))
"""


def _net_state() -> Dict[str, Callable[[], str]]:
    return {"links": run_cmd("ip", "-o", "link", "show"), "addrs": run_cmd("ip", "-o", "addr", "show"),
            "routes": run_cmd("ip", "route", "show", "table", "all"),
            "sys-class-net": lambda: " ".join(sorted(os.listdir("/sys/class/net"))),
            "ip-forward": read_file("/proc/sys/net/ipv4/ip_forward"),
            "somaxconn": read_file("/proc/sys/net/core/somaxconn")}


def _strip_counters(text: str) -> str:
    # "qlen", "valid_lft ..." can move on their own; link names, flags and addresses are what we own
    import re

    return re.sub(r"(valid_lft|preferred_lft) \S+", "", text)


# network="host" as root once changed the host's net.* sysctls (the sandbox's
# uid 0 passed /proc/sys's uid check): the sandbox's /proc/sys is read-only now.
@pytest.mark.parametrize("network,root", [("none", False), ("host", False), ("none", True), ("host", True)],
                         ids=["none", "host", "none-root-true", "host-root-true"])
def test_network_configuration_stays(hostile: Hostile, host_global: None, network: str, root: bool) -> None:
    state = _net_state()
    before = Snapshot.take(state)
    link = "ct" + hostile.tag[-8:]
    hostile.on_cleanup(lambda: _undo_network(link, before))
    hostile.write(_marked(NETWORK, root, network))
    inner = hostile.run()
    changed = {k: v for k, v in before.changed(state).items() if _strip_counters(v.split(" -> ")[0]) !=
               _strip_counters(v.split(" -> ")[1])}
    assert not changed, f"host network configuration changed: {changed}; evidence {hostile.all_evidence()}"
    inner.assert_healthy({"test_change_network_configuration": "passed",
                          "test_zz_canary_after_the_hostile_test": "passed"})
    # (without capabilities a refusal is as good an answer as a change of its
    # own network namespace; with root=True the change is made there, and
    # the host's network stays out of reach)
    if root and network == "none":
        assert hostile.evidence("link-add") == "ok" and hostile.evidence("addr-add") == "ok", hostile.all_evidence()
    if network == "host":
        assert hostile.evidence("link-add") != "ok", hostile.all_evidence()


def _undo_network(link: str, before: Snapshot) -> None:
    subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)
    subprocess.run(["ip", "addr", "del", "10.213.17.1/24", "dev", "lo"], capture_output=True, timeout=10)
    subprocess.run(["ip", "route", "del", "10.213.18.0/24", "dev", "lo"], capture_output=True, timeout=10)
    subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, timeout=10)
    for key, path in (("ip-forward", "/proc/sys/net/ipv4/ip_forward"), ("somaxconn", "/proc/sys/net/core/somaxconn")):
        if read_file(path)() != before.values[key]:
            Path(path).write_text(before.values[key])


#: Namespaced and global sysctls; each is nudged by one (harmless if it ever escaped, and restored).
SYSCTLS = ["kernel/pid_max", "fs/file-max", "vm/swappiness", "kernel/shmmax", "kernel/msgmax", "kernel/shmmni",
           "net/core/somaxconn", "net/ipv4/ip_local_port_range", "kernel/perf_event_paranoid",
           "kernel/printk_ratelimit", "vm/overcommit_ratio", "kernel/threads-max"]

SYSCTL = """
    import hostile as h

    def nudge(text):
        words = text.split()
        return " ".join([str(int(words[0]) - 1)] + words[1:])

    def test_change_sysctls():
        for name in h.env("SYSCTLS").split(","):
            path = "/proc/sys/" + name
            def write():
                with open(path) as f:
                    old = f.read()
                with open(path, "w") as f:
                    f.write(nudge(old))
            h.attempt(name.replace("/", "."), write)
"""


# Found by this test: with pytest as root, /proc/sys (which checks the file's
# uid, not a capability) let an isolated test change global sysctls; the
# sandbox's /proc/sys, sysrq-trigger, irq, bus and fs are read-only binds now.
def test_sysctls_stay_including_namespaced_ones(hostile: Hostile, host_global: None) -> None:
    present = [s for s in SYSCTLS if os.path.exists(f"/proc/sys/{s}")]
    state = {s: read_file(f"/proc/sys/{s}") for s in present}
    before = Snapshot.take(state)

    def restore() -> None:
        for s in present:
            if state[s]() != before.values[s]:
                Path(f"/proc/sys/{s}").write_text(before.values[s])

    hostile.on_cleanup(restore)
    hostile.write(SYSCTL)
    inner = hostile.run(env={"CONTAINMENT_SYSCTLS": ",".join(present)})
    assert not before.changed(state), f"host sysctls changed: {before.changed(state)}; {hostile.all_evidence()}"
    inner.assert_healthy({"test_change_sysctls": "passed", "test_zz_canary_after_the_hostile_test": "passed"})


# ----------------------------------------------------------------------- IPC

IPC_CREAT, IPC_RMID = 0o1000, 0


def _ipc_key(tag: str, kind: str) -> int:
    return zlib.crc32(f"{kind}-{tag}".encode()) & 0x7FFFFFFF


IPC = """
    import ctypes, os, zlib
    import hostile as h

    IPC_CREAT = 0o1000

    def key(kind):
        return zlib.crc32(f"{kind}-{h.TAG}".encode()) & 0x7FFFFFFF

    def test_create_ipc_objects():
        h.libc.shmat.restype = ctypes.c_void_p
        h.attempt("shm", lambda: h.check(h.libc.shmget(key("shm"), 4096, IPC_CREAT | 0o600)))
        h.attempt("msg", lambda: h.check(h.libc.msgget(key("msg"), IPC_CREAT | 0o600)))
        h.attempt("sem", lambda: h.check(h.libc.semget(key("sem"), 1, IPC_CREAT | 0o600)))
        # The host's existing segment: find it by key and scribble on it.
        def scribble():
            shmid = h.check(h.libc.shmget(int(h.env("HOST_SHM_KEY")), 0, 0))
            addr = h.libc.shmat(shmid, None, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "shmat")
            ctypes.memmove(addr, b"tampered", 8)
        h.attempt("host-shm", scribble)
        h.attempt("posix-shm", lambda: open("/dev/shm/" + h.TAG, "w").write("escaped"))
        h.attempt("host-posix-shm", lambda: open(h.env("HOST_POSIX_SHM"), "w").write("tampered"))
        h.attempt("mq", lambda: h.check(h.libc.mq_open(("/" + h.TAG).encode(), os.O_CREAT | os.O_RDWR, 0o600, None)))
"""


@pytest.fixture
def host_shm(hostile: Hostile) -> Iterator[Tuple[int, Callable[[], bytes]]]:
    """A SysV shared memory segment of the host holding b"original": its key and a reader."""
    libc.shmat.restype = ctypes.c_void_p
    libc.shmdt.argtypes = [ctypes.c_void_p]
    key = _ipc_key(hostile.tag, "host")
    shmid = libc.shmget(key, 4096, IPC_CREAT | 0o600)
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    addr = libc.shmat(shmid, None, 0)
    ctypes.memmove(addr, b"original", 8)
    try:
        yield key, lambda: ctypes.string_at(addr, 8)
    finally:
        libc.shmdt(ctypes.c_void_p(addr))
        libc.shmctl(shmid, IPC_RMID, None)


def test_sysv_and_posix_ipc_stay_private(hostile: Hostile, host_shm: Tuple[int, Callable[[], bytes]]) -> None:
    key, contents = host_shm
    posix = hostile.host_path(Path("/dev/shm"), content="original")
    stray = Path("/dev/shm") / hostile.tag
    hostile.on_cleanup(lambda: stray.unlink() if stray.exists() else None)
    hostile.on_cleanup(lambda: _remove_sysv(hostile.tag))
    hostile.on_cleanup(lambda: libc.mq_unlink(f"/{hostile.tag}".encode()))
    hostile.write(IPC)
    inner = hostile.run(env={"CONTAINMENT_HOST_SHM_KEY": str(key), "CONTAINMENT_HOST_POSIX_SHM": str(posix)})
    assert contents() == b"original", "the host's shared memory segment was written"
    # Only this test's objects (their keys derive from its tag): other pytest runs on the host,
    # such as a second tox environment running this very test, make segments of their own.
    appeared = _sysv_present(hostile.tag)
    assert not appeared, f"SysV IPC objects appeared on the host: {appeared} {hostile.all_evidence()}"
    assert not stray.exists() and posix.read_text() == "original", "POSIX shm reached the host's /dev/shm"
    mq_fd = libc.mq_open(f"/{hostile.tag}".encode(), os.O_RDONLY)
    if mq_fd >= 0:
        os.close(mq_fd)
    assert mq_fd < 0, "a POSIX message queue appeared on the host"
    inner.assert_healthy({"test_create_ipc_objects": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    assert hostile.evidence("shm") == "ok" and hostile.evidence("host-shm") != "ok", hostile.all_evidence()


def _sysv_present(tag: str) -> List[str]:
    """The kinds of SysV object the sandbox created that exist on the host."""
    found = [("shm", libc.shmget(_ipc_key(tag, "shm"), 0, 0)), ("msg", libc.msgget(_ipc_key(tag, "msg"), 0)),
             ("sem", libc.semget(_ipc_key(tag, "sem"), 0, 0))]
    return [kind for kind, ident in found if ident >= 0]


def _remove_sysv(tag: str) -> None:
    shm = libc.shmget(_ipc_key(tag, "shm"), 0, 0)
    if shm >= 0:
        libc.shmctl(shm, IPC_RMID, None)
    msg = libc.msgget(_ipc_key(tag, "msg"), 0)
    if msg >= 0:
        libc.msgctl(msg, IPC_RMID, None)
    sem = libc.semget(_ipc_key(tag, "sem"), 0, 0)
    if sem >= 0:
        libc.semctl(sem, 0, IPC_RMID)


# ------------------------------------------------------------------- keyrings

KEYS = """
    import ctypes
    import hostile as h

    SYS_add_key = 248
    KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING = -3, -4, -5

    def test_add_keys():
        payload = b"escaped"
        for name, ring in (("session", KEY_SPEC_SESSION_KEYRING), ("user", KEY_SPEC_USER_KEYRING),
                           ("user-session", KEY_SPEC_USER_SESSION_KEYRING)):
            desc = f"{name}-{h.TAG}".encode()
            h.attempt("key-" + name, lambda: h.check(h.libc.syscall(SYS_add_key, b"user", desc, payload,
                                                                     len(payload), ring)))
"""


def _keys_with(tag: str) -> List[str]:
    return [line for line in Path("/proc/keys").read_text().splitlines() if tag in line]


def _invalidate_keys(tag: str) -> None:
    for line in _keys_with(tag):
        libc.syscall(250, 21, int(line.split()[0], 16))  # keyctl(KEYCTL_INVALIDATE, id)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the add_key syscall number is x86-64's")
def test_keys_added_inside_do_not_reach_host_keyrings(hostile: Hostile) -> None:
    hostile.on_cleanup(lambda: _invalidate_keys(hostile.tag))
    hostile.write(KEYS)
    inner = hostile.run()
    # The sandbox's keyrings go with its user namespace, which the kernel
    # frees asynchronously after the last process exits, and key garbage
    # collection runs later still: wait for it, bounded.
    end = time.monotonic() + 10
    while _keys_with(hostile.tag) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _keys_with(hostile.tag), (f"keys added in the sandbox are on the host: {_keys_with(hostile.tag)}; "
                                         f"evidence {hostile.all_evidence()}")
    inner.assert_healthy({"test_add_keys": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
