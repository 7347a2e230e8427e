"""isolate_runtime: run a payload in a throwaway Linux sandbox.

Fresh user, PID, mount, network, IPC, UTS (and cgroup) namespaces, a
copy-on-write view of the host's filesystem, per-sandbox cgroup limits, and
a frozen result with the payload's true resource usage.  This package never
imports pytest.
"""
from __future__ import annotations

from .errors import PayloadLost, PayloadRaised, SandboxError, SetupError, SpecError, UnsupportedError
from .result import FIGURES, Figure, Outcome, ResourceStats, SandboxResult
from .spec import CallablePayload, CommandPayload, Limits, SandboxSpec

__all__ = [
    "CallablePayload", "CommandPayload", "FIGURES", "Figure", "Limits", "Outcome", "PayloadLost", "PayloadRaised",
    "ResourceStats", "SandboxError", "SandboxResult", "SandboxSpec", "SetupError",
    "SpecError", "UnsupportedError",
]

from .capacity import available_cpus, available_memory  # noqa: E402
from .cgroups.systemd import DelegationError  # noqa: E402
from .channel import ProtocolViolation, in_sandbox, send_message  # noqa: E402
from .channel import budget_left as message_budget_left  # noqa: E402
from .forward import ignore_current_services, parse_endpoint, services_changed  # noqa: E402
from .forward import reuse_looks as reuse_service_looks  # noqa: E402
from .launcher import PreparedSandbox, busy, prepare, run, running_at_once, settle, wait_any  # noqa: E402
from .probe import CannotDelegate, Capabilities, Delegation, Layer, delegate_cgroups, probe  # noqa: E402
from .units import parse_size  # noqa: E402

__all__ += ["CannotDelegate", "Capabilities", "Delegation", "DelegationError", "Layer", "PreparedSandbox",
            "ProtocolViolation", "available_cpus", "available_memory", "busy", "delegate_cgroups",
            "ignore_current_services", "in_sandbox",
            "message_budget_left", "parse_endpoint", "parse_size", "prepare", "probe", "reuse_service_looks", "run",
            "running_at_once", "send_message", "services_changed", "settle", "wait_any"]
