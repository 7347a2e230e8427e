"""The typed contract into the runtime: a frozen sandbox specification.

Every limit carries its unit in the field name.  Each isolation layer is
``"required"`` (setup fails if it cannot be applied), ``"best-effort"``
(applied when the host allows, recorded in the result either way) or
``"off"``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from .errors import SpecError
from .forward import parse_endpoint

LAYERS = ("user", "pid", "mount", "network", "ipc", "uts", "cgroup")
NETWORKS = ("none", "services", "host")
LAYER_MODES = ("required", "best-effort", "off")


@dataclass(frozen=True)
class CallablePayload:
    """Run ``fn(*args, **kwargs)`` in the sandbox; its return value is the
    result's ``value``.  The value crosses the sandbox boundary as plain
    data (JSON types: tuples arrive as lists), never pickled."""

    fn: Callable[..., Any]
    args: Tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandPayload:
    """Execute ``argv`` in the sandbox (PATH is searched)."""

    argv: Tuple[str, ...]
    env: Optional[Mapping[str, str]] = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise SpecError("argv", self.argv, "a command needs at least one word")


Payload = Union[CallablePayload, CommandPayload]


@dataclass(frozen=True)
class Limits:
    """Resource limits for the whole sandbox (every process in it together)."""

    #: Hard memory limit in bytes (swap disabled where the controller allows).
    memory_bytes: Optional[int] = None
    #: CPU bandwidth cap in CPUs (``0.5`` = half a core).
    cpus: Optional[float] = None
    #: CPU-time budget in seconds; the sandbox is killed once it is spent.
    cpu_time_seconds: Optional[float] = None
    #: Maximum number of processes/threads.
    pids: Optional[int] = None

    def __post_init__(self) -> None:
        _positive("memory_bytes", self.memory_bytes, integer=True)
        _positive("cpus", self.cpus)
        _positive("cpu_time_seconds", self.cpu_time_seconds)
        _positive("pids", self.pids, integer=True)

    def any(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))


@dataclass(frozen=True)
class SandboxSpec:
    """What to run and how to isolate it."""

    payload: Payload
    limits: Limits = field(default_factory=lambda: Limits())
    #: Wall-clock limit in seconds (``None``: no limit).
    timeout_seconds: Optional[float] = None
    #: Grace between the stack-dump signal and the kill on timeout.
    timeout_grace_seconds: float = 1.0
    #: ``False``: the payload runs with the caller's uid/gid; ``True``: as a
    #: fake root (uid 0 inside, the caller's id outside).
    root: bool = False
    #: ``"none"``: a private network namespace with only its own loopback
    #: (and the ``forward`` ports); ``"services"``: the same, plus the TCP
    #: services the caller and its descendants listen on at the host's
    #: loopback when the sandbox is made, relayed to them (see forward.py);
    #: ``"host"``: share the host's network.
    network: str = "none"
    #: Host loopback TCP ports relayed into the sandbox, at the same address
    #: and port: ``"127.0.0.1:5432"``, ``"[::1]:5432"``, ``"localhost:6379"``
    #: (both), ``"6379"`` (the same).  Only those something listens on when
    #: the sandbox is made.
    forward: Tuple[str, ...] = ()
    #: ``"private"``: a PID namespace of its own (the payload sees only its
    #: own processes); ``"host"``: share the caller's, so that processes it
    #: started are visible and can be signalled (the ``pid`` layer is then
    #: off, and so is what it guards: see docs/security-model.rst).
    pid: str = "private"
    #: Host paths bound read-write into the sandbox: writes there persist.
    writable: Tuple[str, ...] = ()
    #: Host paths below ``/tmp`` or ``/dev/shm`` whose writes are listed in
    #: ``written_paths`` like writes anywhere else (those two places are
    #: copy-on-write too, but what is written there counts as temporary
    #: files), e.g. a project checked out under /tmp.  The working directory
    #: is added by itself.
    visible: Tuple[str, ...] = ()
    #: Hostname inside the sandbox's UTS namespace; ``""`` keeps the host's
    #: (a test comparing ``gethostname()`` with a value taken at import).
    hostname: str = ""
    #: Working directory inside the sandbox (default: the caller's).
    cwd: Optional[str] = None
    #: Per-layer policy, see module docstring.
    layers: Mapping[str, str] = field(default_factory=lambda: {name: "required" for name in LAYERS})
    #: A name for messages and the sandbox's cgroup (e.g. a test's node id).
    label: str = ""
    #: The most the payload may send back, all messages and its result
    #: together, each counting at least 1 KiB (``channel.FRAME_FLOOR``);
    #: past it the sandbox is killed (outcome ``REJECTED``).
    message_limit_bytes: int = 16 << 20
    #: Descriptors of the caller the payload must not use (the caller's own
    #: output, its terminal, its link to another process): each is pointed
    #: at /dev/null in the payload's process before the payload runs.  The
    #: number stays taken, so an object the payload inherited that still
    #: names it writes nowhere, never into a file the payload opened since.
    withhold_fds: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise SpecError("network", self.network, "expected 'none', 'services' or 'host'")
        if isinstance(self.forward, str):
            raise SpecError("forward", self.forward, "expected a tuple of host loopback ports")
        for endpoint in self.forward:
            try:
                parse_endpoint(endpoint)
            except ValueError as e:
                raise SpecError("forward", endpoint, str(e)) from None
        if self.forward and self.network == "host":
            raise SpecError("forward", self.forward, "network='host' shares the host's network: there is nothing to "
                                                     "forward")
        if self.pid not in ("private", "host"):
            raise SpecError("pid", self.pid, "expected 'private' or 'host'")
        _positive("timeout_seconds", self.timeout_seconds)
        _positive("message_limit_bytes", self.message_limit_bytes, integer=True)
        for fd in self.withhold_fds:
            if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
                raise SpecError("withhold_fds", fd, "expected file descriptor numbers (whole numbers >= 0)")
        if not (isinstance(self.timeout_grace_seconds, (int, float)) and self.timeout_grace_seconds >= 0):
            raise SpecError("timeout_grace_seconds", self.timeout_grace_seconds, "expected a number >= 0")
        for name in ("writable", "visible"):
            for p in getattr(self, name):
                if not isinstance(p, str) or not os.path.isabs(p):
                    raise SpecError(name, p, "expected an absolute path")
        layers: Dict[str, str] = {name: "required" for name in LAYERS}
        for name, mode in dict(self.layers).items():
            if name not in LAYERS:
                raise SpecError("layers", name, f"unknown layer; known: {', '.join(LAYERS)}")
            if mode not in LAYER_MODES:
                raise SpecError(f"layers[{name!r}]", mode, f"expected one of {', '.join(LAYER_MODES)}")
            layers[name] = mode
        if self.network == "host":
            layers["network"] = "off"
        if self.pid == "host":
            layers["pid"] = "off"
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "forward", tuple(self.forward))
        object.__setattr__(self, "withhold_fds", tuple(self.withhold_fds))
        object.__setattr__(self, "writable", tuple(os.path.normpath(p) for p in self.writable))
        object.__setattr__(self, "visible", tuple(os.path.normpath(p) for p in self.visible))

    def replace(self, **changes: Any) -> "SandboxSpec":
        return dataclasses.replace(self, **changes)

    def wants(self, layer: str) -> bool:
        return self.layers.get(layer, "off") != "off"


def _positive(name: str, value: object, integer: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(name, value, "expected a number")
    if integer and not isinstance(value, int):
        raise SpecError(name, value, "expected a whole number")
    if not math.isfinite(value) or value <= 0:
        raise SpecError(name, value, "expected a positive, finite number")


def spec_for_callable(fn: Callable[..., Any], *args: Any, **spec_fields: Any) -> SandboxSpec:
    """Shorthand: a spec running ``fn(*args)``."""
    return SandboxSpec(payload=CallablePayload(fn, tuple(args)), **spec_fields)


def spec_for_command(argv: Sequence[str], **spec_fields: Any) -> SandboxSpec:
    """Shorthand: a spec executing ``argv``."""
    return SandboxSpec(payload=CommandPayload(tuple(argv)), **spec_fields)
