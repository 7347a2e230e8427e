"""A delegated cgroup from the user's systemd, for an ordinary user.

On a cgroup v2 desktop or CI runner an ordinary user's processes sit in
cgroups only systemd may write, so per-sandbox cgroups need a subtree
delegated to the user.  Rootless container engines (podman, via crun) get
one the way :func:`delegate_self` does: they ask the user's service manager
for a transient *scope* unit that contains the calling process and has
``Delegate=yes``; systemd creates it, moves the process into it and hands
the directory to the user (the D-Bus method ``StartTransientUnit``, the
call ``systemd-run --user --scope -p Delegate=yes`` makes).  The process
keeps running - nothing is re-executed - and what it starts afterwards
(pytest-xdist workers, sandboxes) inherits the scope.

Which controllers the scope gets is systemd's choice: those delegated to
the user's manager (``Delegate=`` of ``user@.service``: ``pids memory cpu``
since systemd 252, ``pids memory`` before); the probe then names the rest.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Mapping, Optional

from ..errors import SandboxError
from . import _dbus, _fs

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
#: How long systemd gets to move us once it accepted the job.
MOVE_TIMEOUT_SECONDS = 10.0


class DelegationError(SandboxError):
    """Asking systemd for a delegated cgroup failed: ``what`` failed, ``why``, and the ``fix``."""

    def __init__(self, what: str, why: str, fix: str) -> None:
        super().__init__(what, why, fix)
        self.what = what
        self.why = why
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what}: {self.why}. Fix: {self.fix}"


@dataclass(frozen=True)
class Delegated:
    """The scope systemd made for this process."""

    #: e.g. ``pytest-isolate-4242-1.scope``
    unit: str
    #: Its cgroup, as in ``/proc/self/cgroup`` (e.g. ``/user.slice/.../app.slice/<unit>``).
    cgroup: str
    #: The socket of the manager that made it.
    manager: str

    def describe(self) -> str:
        return f"scope {self.unit} (cgroup {self.cgroup}) from the systemd manager at {self.manager}"


def manager_socket(environ: Optional[Mapping[str, str]] = None, euid: Optional[int] = None) -> str:
    """The private socket of the caller's own service manager: the user's
    ``systemd --user`` (``$XDG_RUNTIME_DIR/systemd/private``), or for root
    the system manager (``/run/systemd/private``)."""
    env = os.environ if environ is None else environ
    uid = os.geteuid() if euid is None else euid
    if uid == 0:
        return "/run/systemd/private"
    runtime_dir = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    return os.path.join(runtime_dir, "systemd", "private")


#: A manager that is still starting can take a few seconds to answer.
PING_TIMEOUT_SECONDS = 5.0


def unreachable(socket_path: str, timeout: float = PING_TIMEOUT_SECONDS) -> Optional[str]:
    """Why the manager at ``socket_path`` cannot be asked (``None``: it answers)."""
    try:
        with _dbus.Connection(socket_path, timeout=timeout) as conn:
            conn.call(SYSTEMD, SYSTEMD_PATH, "org.freedesktop.DBus.Peer", "Ping")
    except socket.timeout:
        return f"{socket_path} did not answer within {timeout:g} s"
    except FileNotFoundError:
        return f"no systemd user instance listens at {socket_path} (the socket does not exist)"
    except PermissionError:
        return f"{socket_path} is not this user's (permission denied)"
    except OSError as e:
        return f"cannot connect to {socket_path} ({e.strerror or e})"
    except _dbus.DBusError as e:
        return f"{socket_path} did not answer as systemd does ({e})"
    return None


_counter = 0


def delegate_self(environ: Optional[Mapping[str, str]] = None, proc_root: str = "/proc",
                  socket_path: Optional[str] = None, move_timeout: float = MOVE_TIMEOUT_SECONDS) -> Delegated:
    """Ask this user's systemd for a scope with ``Delegate=yes`` holding
    this process, and wait until the kernel shows the process in it."""
    global _counter
    socket_path = socket_path or manager_socket(environ)
    who = "the system manager" if os.geteuid() == 0 else f"the systemd user instance of uid {os.geteuid()}"
    fix_unreachable = (f"start one (a login session, or `loginctl enable-linger {_user()}`) and make sure "
                       "XDG_RUNTIME_DIR points at its runtime directory; or run pytest in a cgroup delegated to "
                       "this user some other way (a CI job or service with Delegate=yes, a container with a "
                       "private cgroup namespace), or as root")
    why = unreachable(socket_path)
    if why is not None:
        raise DelegationError(f"cannot ask {who} for a delegated cgroup", why, fix_unreachable)
    _counter += 1
    unit = f"pytest-isolate-{os.getpid()}-{_counter}.scope"
    properties = [
        ("PIDs", _dbus.Variant("au", [os.getpid()])),
        ("Delegate", _dbus.Variant("b", True)),
        ("Description", _dbus.Variant("s", f"pytest-isolate: cgroups delegated to pid {os.getpid()}")),
    ]
    try:
        with _dbus.Connection(socket_path) as conn:
            (job,) = conn.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                               [unit, "fail", properties, []])
    except _dbus.DBusError as e:
        raise DelegationError(f"{who} refused a delegated scope {unit} for this process", str(e),
                              "see `journalctl --user -xe`; or run pytest in a delegated cgroup some other way, "
                              "e.g. `systemd-run --user --scope -p Delegate=yes pytest ...`") from None
    except OSError as e:
        raise DelegationError(f"asking {who} for a delegated scope failed", f"{socket_path}: {e.strerror or e}",
                              fix_unreachable) from None
    end = time.monotonic() + move_timeout
    while True:
        own = _fs.own_cgroups(proc_root).get("", "")
        if own.rstrip("/").endswith("/" + unit):
            return Delegated(unit, own, socket_path)
        if time.monotonic() >= end:
            raise DelegationError(f"{who} accepted the scope {unit} (job {job}) but did not move this process",
                                  f"after {move_timeout:g} s it is still in {own or 'an unknown cgroup'}",
                                  "see `journalctl --user -xe`; systemd needs write access to the cgroup this "
                                  "process is in, or the system manager's help (systemd >= 238)")
        time.sleep(0.01)


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
