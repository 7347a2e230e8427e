"""The one description of a sandbox's setup: which process makes which
kernel call, in which order.  Pure data, built once per spec and run by
either executor (``_fastspawn.c`` or :mod:`isolate_runtime.spawn`).

::

    caller (pytest; never unshared, never limited)
     └─ A     forked; outside the sandbox's PID namespace; dead before the payload runs
         │    dies with the caller, raises its OOM score, joins the cgroup,
         │    unshares the namespaces, writes the id maps, builds the root
         │    filesystem, brings lo up,
         │    makes the forwarded services' listeners and sends them to the relay
         ├─ S  = PID 1: fresh /proc with its masks, detaches the host tree,
         │       drops every capability, installs the payload's seccomp
         │       filter; then only reaps orphans
         │  (A: for a root caller, a nested user namespace and a copy of the
         │   mount namespace in it: every mount made so far is locked)
         └─ P  = PID 2, the payload: drops its privileges, runs

The program is a flat list of :class:`~isolate_runtime.calls.Call` in four
sections, split by markers::

    A's calls  SPAWN_INIT  S's calls  INIT_END  A's calls  SPAWN_PAYLOAD  P's calls

Why the order (the payload is hostile code): the masks over ``/proc/sys`` and friends must be
made where the payload cannot undo them, and for a root caller (whose uid 0
*is* the host's uid 0, owner of /proc/sys) that means before the payload's
user namespace exists; S shares its address space with the payload (one
page-table copy per sandbox), so S keeps nothing the payload lacks; A, the
one process outside the sandbox, never runs beside the payload.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import calls as K
from . import mounts, seccomp
from .calls import Call
from .namespaces import FLAGS
from .spec import CallablePayload, SandboxSpec


@dataclass(frozen=True)
class Program:
    """A sandbox's setup, as data."""

    #: The pieces the program is made of, in order (the mount plan's pieces
    #: are shared between programs, and so is their wire form).
    pieces: Tuple[Tuple[Call, ...], ...]
    #: The mount plan it builds (None: no mount namespace).
    plan: Optional[mounts.Plan] = None
    #: The caller's end of the network relay's control socket, which A
    #: sends the listeners on (-1: nothing is forwarded).
    relay_fd: int = -1

    @property
    def calls(self) -> Tuple[Call, ...]:
        return tuple(c for piece in self.pieces for c in piece)

    def encode(self) -> bytes:
        """The wire form the C executor reads."""
        return b"".join(_encoded(piece) for piece in self.pieces)

    def call(self, index: int) -> Optional[Call]:
        calls = self.calls
        return calls[index] if 0 <= index < len(calls) else None

    def sections(self) -> List[List[Call]]:
        """[A's calls, S's, A's next, P's]."""
        return K.sections(self.calls)

    def first_index(self, section: int) -> int:
        """The index in :attr:`calls` of the first call of ``section``."""
        seen = 0
        for i, c in enumerate(self.calls):
            if seen == section:
                return i
            if c.code in K.MARKERS:
                seen += 1
        return len(self.calls)


def id_map_calls(inside_uid: int, outside_uid: int, inside_gid: int, outside_gid: int,
                 proc: str = "") -> List[Call]:
    """Single-line self maps (the only ones a process may write for itself),
    written through ``proc`` + "/self", or with ``proc`` empty through the
    process's own /proc directory opened by OPEN_SELF (A writes its maps
    after the host's /proc is gone from its view)."""
    base = f"{proc}/self/" if proc else ""
    return [Call(K.WRITE, "id maps", (base + "uid_map", f"{inside_uid} {outside_uid} 1\n")),
            Call(K.WRITE, "id maps", (base + "setgroups", "deny\n"), K.MISSING_OK),
            Call(K.WRITE, "id maps", (base + "gid_map", f"{inside_gid} {outside_gid} 1\n"))]


def build(spec: SandboxSpec, layers: Dict[str, str], plan: Optional[mounts.Plan], join: Sequence[str],
          caller: int, uid: int, gid: int, cap_last: int, listen: Sequence[Tuple[str, int]] = (),
          relay: Tuple[int, str] = (-1, "")) -> Program:
    """The program for ``spec`` with these ``layers`` applied (``{layer:
    "applied" | why not}``), mount ``plan``, cgroup files to join, caller
    pid and ids, and the kernel's highest capability number; ``listen``:
    the (address, port) of each forwarded service inside, whose listeners
    A sends on ``relay`` = (the relay's control socket, the message's
    header) (see relay.py).

    Everything but the cgroup files to join and the forwarded services is
    the same from one sandbox to the next of a session: that part is built
    once and kept."""
    key = (isinstance(spec.payload, CallablePayload), spec.root, spec.hostname, tuple(sorted(layers.items())),
           id(plan), caller, uid, gid, cap_last)
    got = _programs.get(key)
    if got is None or got[0].plan is not plan:
        got = _programs[key] = _build(spec, layers, plan, caller, uid, gid, cap_last)
        for i, piece in enumerate(got[0].pieces):
            if i != _JOIN and i != got[1]:
                _wire[id(piece)] = (piece, K.encode(piece))
    kept, at = got
    pieces = list(kept.pieces)
    pieces[_JOIN] = tuple(Call(K.WRITE, "cgroup", (path, "0")) for path in join)
    relay_fd = -1
    if at >= 0 and listen and relay[0] >= 0:
        # A, before the payload exists: the payload binding the same port
        # gets EADDRINUSE, as it would on the host, and cannot accept the
        # forwarded connections itself (it never holds the listeners: RELAY
        # closes them here, before S and P exist).
        pieces[at] = tuple([Call(K.LISTEN, "network relay", (address,), port)
                            for address, port in listen[:K.MAX_LISTEN]]
                           + [Call(K.RELAY, "network relay", (relay[1],), relay[0])])
        relay_fd = relay[0]
    return Program(tuple(pieces), plan, relay_fd)


#: The capability to set file capabilities (linux/capability.h).
CAP_SETFCAP = 31

#: The sandbox's /proc/<pid>/oom_score_adj: the kernel's highest.
OOM_SCORE_ADJ = 1000

#: Where the cgroup join calls go in a program's pieces.
_JOIN = 1
#: Kept programs, each with where its forwarded services' calls go (-1: it
#: has no network namespace of its own).
_programs: Dict[Tuple[Any, ...], Tuple[Program, int]] = {}


def _build(spec: SandboxSpec, layers: Dict[str, str], plan: Optional[mounts.Plan], caller: int, uid: int, gid: int,
           cap_last: int) -> Tuple[Program, int]:
    applied = {name for name, state in layers.items() if state == "applied"}
    user = "user" in applied
    flags = 0
    for name in applied:
        flags |= FLAGS[name]
    privileged = plan is not None and bool(plan.prefix)
    # The sandbox's uid 0 is the host's uid 0: lock every mount before the
    # payload's user namespace exists.
    host_root = user and uid == 0
    drop = K.NOT_DUMPABLE | (cap_last << 8)

    a: List[Call] = [Call(K.PDEATHSIG, "die-with-parent"), Call(K.CHECK_PPID, "die-with-parent", (), caller),
                     Call(K.CALLER_PIDFD, "die-with-parent", (), caller)]
    if user:
        a.append(Call(K.OPEN_SELF, "id maps"))
    if isinstance(spec.payload, CallablePayload):
        # Leave the caller's session and process group: otherwise
        # os.killpg(0, sig) in the payload signals the caller and its whole
        # group.  (A command keeps the terminal's job control.)
        a.append(Call(K.SETSID, "sandbox"))
    # The OOM killer's first choice, before the caller or anything else of
    # the host, whatever the sizes (inherited by S, P and all they start): a
    # test that eats the memory of a host or container without a cap of its
    # own loses itself, not the session.  Written while A still has the
    # caller's privileges: for a root caller that is also the floor the
    # payload cannot go below.
    a.append(Call(K.WRITE, "oom score", ("/proc/self/oom_score_adj", f"{OOM_SCORE_ADJ}\n"),
                  K.MISSING_OK | K.BEST_EFFORT))
    pieces: List[Tuple[Call, ...]] = [tuple(a), ()]  # (the join piece, see build())
    a = []
    if privileged:
        # Real root: the namespaces but the user one, owned by the host's
        # user namespace; one overlay for the whole root filesystem.
        a.append(Call(K.UNSHARE, "unshare", (), flags & ~FLAGS["user"]))
    elif flags:
        a.append(Call(K.UNSHARE, "unshare", (), flags))
        if user:
            inside = 0 if spec.root else uid
            a += id_map_calls(inside, uid, 0 if spec.root else gid, gid)

    def cut(calls: List[Call], *shared: Tuple[Call, ...]) -> List[Call]:
        pieces.append(tuple(calls))
        pieces.extend(shared)
        return []

    if plan is not None:
        a = cut(a, _plan_piece(plan, "root"))
    relay_at = -1
    # A fake root of a root run gets its capabilities in the nested user
    # namespace (below), which owns none of the namespaces made so far: its
    # network, UTS and IPC namespaces are made again in it, for the payload
    # alone (S stays in the first ones, which it cannot configure either),
    # and set up there, as an ordinary user's fake root can set up its own.
    late = (flags & (FLAGS["network"] | FLAGS["uts"] | FLAGS["ipc"])) if host_root and spec.root else 0

    def network_and_name(calls: List[Call]) -> Tuple[List[Call], int]:
        at = -1
        if "network" in applied:
            calls.append(Call(K.LO_UP, "loopback"))
            calls = cut(calls, ())  # (the forwarded services' piece, see build())
            at = len(pieces) - 1
        if "uts" in applied and spec.hostname:
            calls.append(Call(K.SETHOSTNAME, "hostname", (spec.hostname,)))
        return calls, at

    if not late:
        a, relay_at = network_and_name(a)
    a.append(Call(K.SPAWN_INIT, "spawn"))

    a = cut(a)
    s: List[Call] = [Call(K.PDEATHSIG, "die-with-parent"), Call(K.CHECK_CALLER, "die-with-parent")]
    if plan is not None:
        s = cut(s, _plan_piece(plan, "enter" if "pid" in applied else "enter-host-proc"))
    if privileged:
        # S itself is not left in the host's user namespace either.
        s += [Call(K.UNSHARE, "unshare", (), FLAGS["user"])] + id_map_calls(0, 0, 0, 0, "/proc")
    if user:
        s.append(Call(K.DROP_CAPS, "privileges", (), drop))
    # a root run's filter, or an ordinary user's (no cgroup namespace); a
    # sandbox without a user namespace cannot install one
    filt = seccomp.program(root=host_root) if user else None
    if filt is not None:
        # S shares its address space with the payload (the C executor): what
        # the payload may not do, S may not either, or the payload would
        # have S do it
        s.append(Call(K.SECCOMP, "privileges", (filt.hex(),), len(filt) // 8))
    s.append(Call(K.INIT_END, "spawn"))

    a2: List[Call] = []
    if host_root:
        # bubblewrap's way: a nested user namespace, and the mount namespace
        # copied into it, where every mount made so far is locked (the masks
        # over /proc/sys, /sys, ... cannot be undone, not even by a fake root).
        a2 += [Call(K.UNSHARE, "unshare", (), FLAGS["user"])] + id_map_calls(0, 0, 0, 0)
        if plan is not None:
            a2.append(Call(K.UNSHARE, "unshare", (), FLAGS["mount"]))
        if late:
            a2.append(Call(K.UNSHARE, "unshare", (), late))
            a2 = cut(s + a2)
            s = []
            a2, relay_at = network_and_name(a2)
    if plan is not None and not privileged:
        # new top-level names land in the root tmpfs itself (a privileged
        # plan's root is an overlay: they show in its upper layer)
        a2.append(Call(K.OPEN_ROOT, mounts.STEP))
    a2.append(Call(K.SPAWN_PAYLOAD, "spawn"))

    p: List[Call] = [Call(K.PDEATHSIG, "die-with-parent"), Call(K.CHECK_CALLER, "die-with-parent")]
    if user and not spec.root:
        p.append(Call(K.DROP_CAPS, "privileges", (), cap_last << 8))
    elif host_root:
        # a fake root of the host's uid 0 keeps its capabilities over the
        # sandbox's namespaces, but not CAP_SETFCAP: file capabilities it
        # sets are stored for the host's uid 0, and honoured on the host
        p.append(Call(K.DROP_CAPS, "privileges", (), (CAP_SETFCAP << 8) | K.ONE_CAP))
    if filt is not None:
        # root runs: uid 0 owns what it creates: no setuid/setgid file of
        # root's may come out of a writable path, no namespace of its own;
        # every run: no cgroup namespace of its own (seccomp.py)
        p.append(Call(K.SECCOMP, "privileges", (filt.hex(),), len(filt) // 8))
    cut(s + a2 + p)
    return Program(tuple(pieces), plan), relay_at


# The mount plan's calls and their wire form, computed once per plan (a
# plan is cached per set of pass-throughs): encoding ~150 calls costs more
# than a sandbox may spend on it.
_pieces: Dict[Tuple[int, str], Tuple[mounts.Plan, Tuple[Call, ...]]] = {}
_wire: Dict[int, Tuple[Tuple[Call, ...], bytes]] = {}


def _plan_piece(plan: mounts.Plan, kind: str) -> Tuple[Call, ...]:
    got = _pieces.get((id(plan), kind))
    if got is None or got[0] is not plan:
        if kind == "root":
            calls = mounts.root_calls(plan) + mounts.open_upper_calls(plan)
        elif kind == "enter":
            calls = mounts.proc_calls(plan) + mounts.finish_calls(plan)
        else:
            calls = mounts.host_proc_calls(plan) + mounts.finish_calls(plan)
        got = _pieces[(id(plan), kind)] = (plan, tuple(calls))
    return got[1]


def _encoded(piece: Tuple[Call, ...]) -> bytes:
    got = _wire.get(id(piece))
    if got is not None and got[0] is piece:
        return got[1]
    return K.encode(piece)


def cap_last() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40
