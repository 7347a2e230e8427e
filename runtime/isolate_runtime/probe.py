"""What this host can isolate, and why not.

Static checks (sysctls, filesystems) read from an injectable ``/proc`` and
``/sys``, then a throwaway child tries every layer for real and reports the
first step that failed with its errno.  Computed once per process and cached.
"""
from __future__ import annotations

import errno
import importlib
import json
import os
import platform as _platform
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Tuple

from ._syscalls import fork as _syscalls_fork
from .spec import LAYERS


@dataclass(frozen=True)
class Layer:
    """One isolation layer on this host."""

    name: str
    available: bool
    reason: str = ""
    fix: str = ""

    def line(self) -> str:
        if self.available:
            return f"{self.name:<8} yes"
        text = f"{self.name:<8} no   {self.reason}"
        if self.fix:
            text += f"\n{'':13}fix: {self.fix}"
        return text


#: The launcher's switch: ``fork`` makes it set sandboxes up in Python.
SPAWN_ENV = "ISOLATE_RUNTIME_SPAWN"
#: Written by setup.py next to the extension: ``{"built": bool, "reason": str}``.
BUILD_RECORD = "_fastspawn-build.json"
FIX_REBUILD = ("install a C compiler and the Python headers (Debian/Ubuntu: apt-get install gcc python3-dev), then "
               "reinstall pytest-isolate from source (pip install --force-reinstall --no-deps --no-binary "
               "pytest-isolate pytest-isolate; in a checkout: pip install -e .)")


@dataclass(frozen=True)
class Accelerator:
    """The optional C accelerator, ``isolate_runtime._fastspawn``: it forks
    each sandbox and runs its setup without the interpreter (test payloads
    with a PID namespace); without it the same setup runs in Python, slower.
    """

    #: ``"in use"``, ``"disabled"`` (by the environment), ``"not built"``,
    #: ``"unsupported"`` (platform), ``"broken"`` (built, but will not load).
    state: str
    #: Why it is not in use ("" when it is).
    reason: str = ""
    #: What to do about ``reason``.
    fix: str = ""

    @property
    def in_use(self) -> bool:
        return self.state == "in use"

    def describe(self) -> str:
        """One line: ``in use (...)`` or ``not used: <state>: <reason>``."""
        if self.in_use:
            return "in use (isolate_runtime._fastspawn sets up each sandbox without the interpreter)"
        return f"not used: {self.state}: {self.reason}"

    def line(self) -> str:
        text = f"{'C accel':<8} {self.describe()}"
        if self.fix:
            text += f"\n{'':13}fix: {self.fix}"
        return text


def accelerator(environ: Optional[Mapping[str, str]] = None, platform: Optional[str] = None,
                machine: Optional[str] = None, module: str = "isolate_runtime._fastspawn",
                record_dir: Optional[str] = None) -> Accelerator:
    """Whether the launcher uses the C accelerator, and why not (the same
    checks as the launcher, in the same order).  The arguments are for tests."""
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    machine = machine or _platform.machine()
    if not platform.startswith("linux") or machine != "x86_64":
        return Accelerator("unsupported", f"it is built for Linux on x86-64 only (this is {platform} on {machine}); "
                                          "sandboxes are set up in Python")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            return Accelerator("broken", f"importing it failed ({e})", FIX_REBUILD)
        return Accelerator("not built", _not_built_reason(record_dir or os.path.dirname(__file__)), FIX_REBUILD)
    except ImportError as e:
        return Accelerator("broken", f"it was built but does not load ({e})", FIX_REBUILD)
    if not hasattr(mod, "sandbox"):
        return Accelerator("broken", f"{getattr(mod, '__file__', module)} is a build of an older version "
                                     "(no sandbox())", FIX_REBUILD)
    mode = env.get(SPAWN_ENV, "") or "auto"
    if mode == "fork":
        return Accelerator("disabled", f"{SPAWN_ENV}=fork is set: sandboxes are set up in Python",
                           f"unset {SPAWN_ENV}")
    if mode != "auto":
        return Accelerator("disabled", f"{SPAWN_ENV}={mode!r} is not one of: auto, fork (every sandbox fails "
                                       "to start)", f"unset {SPAWN_ENV}")
    return Accelerator("in use")


def _not_built_reason(record_dir: str) -> str:
    path = os.path.join(record_dir, BUILD_RECORD)
    try:
        with open(path) as f:
            record = json.load(f)
        reason = str(record["reason"]) if not record.get("built") else "it was built but is not installed"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        reason = ("the build left no record (installed from a wheel built without it, or a checkout "
                  "never built)")
    return f"{reason}; sandboxes are set up in Python"


@dataclass(frozen=True)
class Capabilities:
    platform: str
    layers: Mapping[str, Layer]
    cgroups: str = ""
    #: The caller may mount before entering a user namespace (real root with
    #: CAP_SYS_ADMIN): the root filesystem then needs a single overlay.
    privileged_mounts: bool = False
    euid: int = field(default_factory=lambda: os.geteuid() if hasattr(os, "geteuid") else -1)
    #: The C accelerator: in use, or why not (not an isolation layer: the
    #: isolation is the same without it, only slower to set up).
    accelerator: Accelerator = field(default_factory=lambda: accelerator())
    #: overlayfs accepts ``xino=on``: a file below a copy-on-write overlay
    #: then has its directory's ``st_dev`` (without it, the lower
    #: filesystem's: ``os.path.ismount(file)`` is True, ``find -xdev`` stops).
    overlay_xino: bool = False
    #: Why not, when the mount layer works but ``xino=on`` was refused.
    xino_reason: str = ""

    def missing(self) -> Tuple[Layer, ...]:
        return tuple(layer for layer in self.layers.values() if not layer.available)

    def table(self) -> str:
        rows = [layer.line() for layer in self.layers.values()]
        if self.cgroups:
            rows.append(f"{'cgroups':<8} {self.cgroups}")
        rows.append(self.accelerator.line())
        if self.xino_reason:
            rows.append(f"{'xino':<8} {self.xino_reason}")
        return "\n".join(rows)


MSG_USERNS_DISABLED = "user namespaces are disabled (user.max_user_namespaces = 0)"
FIX_USERNS_DISABLED = "sudo sysctl -w user.max_user_namespaces=15000"
MSG_DEBIAN_CLONE = "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
FIX_DEBIAN_CLONE = "sudo sysctl -w kernel.unprivileged_userns_clone=1"
MSG_APPARMOR = ("AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns = 1)")
FIX_APPARMOR = "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
MSG_UID_MAP = "writing /proc/self/uid_map was refused (EPERM): the user namespace has no privileges here"
FIX_UID_MAP = ("if this is Ubuntu 23.10+ run " + FIX_APPARMOR +
               "; in a container allow user namespaces (e.g. docker run --security-opt seccomp=unconfined)")
MSG_OVERLAY = "overlayfs refused a mount inside the user namespace ({err})"
FIX_OVERLAY = "use a kernel >= 5.11 (unprivileged overlayfs); writes then cannot be made copy-on-write"
MSG_XINO = ("overlayfs refused xino=on ({err}): a file below a copy-on-write overlay shows the device "
            "number of the filesystem it came from, not its directory's")
MSG_NO_OVERLAY_FS = "overlayfs is not available (no 'overlay' in /proc/filesystems)"
FIX_NO_OVERLAY_FS = "sudo modprobe overlay"
MSG_NOT_LINUX = "namespaces exist only on Linux (this is {platform})"
FIX_NOT_LINUX = "marked tests still run in a forked process with rlimits; run on Linux for full isolation"
MSG_NEEDS_USER = "needs the user namespace"

_cache: Dict[Tuple[object, ...], Capabilities] = {}


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def probe(proc_root: str = "/proc", sys_root: str = "/sys", inject: Optional[Mapping[str, int]] = None,
          refresh: bool = False, platform: Optional[str] = None) -> Capabilities:
    """Probe (once) which layers work here.  ``inject`` maps a trial step
    (``unshare``, ``uid_map``, ``overlay``, ``loopback``, ``proc``) to an
    errno that step then fails with, for tests of the messages."""
    key = (proc_root, sys_root, tuple(sorted((inject or {}).items())), platform)
    if not refresh and key in _cache:
        return _cache[key]
    caps = _probe(proc_root, sys_root, dict(inject or {}), platform or sys.platform)
    _cache[key] = caps
    return caps


def _probe(proc_root: str, sys_root: str, inject: Dict[str, int], platform: str) -> Capabilities:
    cg_desc = _cgroup_line()
    if not platform.startswith("linux"):
        msg = MSG_NOT_LINUX.format(platform=platform)
        return Capabilities(platform, {n: Layer(n, False, msg, FIX_NOT_LINUX) for n in LAYERS}, cg_desc,
                            accelerator=accelerator(platform=platform))
    root = os.geteuid() == 0
    static: Optional[Layer] = None
    if _read(f"{proc_root}/sys/user/max_user_namespaces") == "0":
        static = Layer("user", False, MSG_USERNS_DISABLED, FIX_USERNS_DISABLED)
    elif _read(f"{sys_root}/module/user_namespace/parameters/enable") == "N":
        static = Layer("user", False, "user namespaces are disabled (user_namespace.enable=N)",
                       "boot with user_namespace.enable=1")
    elif not root and _read(f"{proc_root}/sys/kernel/unprivileged_userns_clone") == "0":
        static = Layer("user", False, MSG_DEBIAN_CLONE, FIX_DEBIAN_CLONE)
    apparmor = not root and _read(f"{proc_root}/sys/kernel/apparmor_restrict_unprivileged_userns") == "1"
    layers: Dict[str, Layer] = {}
    trial: Dict[str, object] = {}
    if static is not None:
        layers["user"] = static
    else:
        trial = _trial(inject)
        failed = trial.get("failed")
        failed_step: Optional[str] = None
        err = 0
        if isinstance(failed, tuple):
            failed_step, err = str(failed[0]), int(failed[1])
        if failed_step in ("unshare", "uid_map") and apparmor:
            layers["user"] = Layer("user", False, MSG_APPARMOR, FIX_APPARMOR)
        elif failed_step == "unshare":
            layers["user"] = Layer("user", False, f"unshare(CLONE_NEWUSER) failed ({errno.errorcode.get(err, err)})",
                                   "allow user namespaces for this user (see the CI recipes in the docs)")
        elif failed_step == "uid_map":
            layers["user"] = Layer("user", False, MSG_UID_MAP, FIX_UID_MAP)
        else:
            layers["user"] = Layer("user", True)
            for name in LAYERS[1:]:
                layers[name] = Layer(name, True)
            if failed_step == "overlay":
                if "overlay" not in (_read(f"{proc_root}/filesystems") or ""):
                    layers["mount"] = Layer("mount", False, MSG_NO_OVERLAY_FS, FIX_NO_OVERLAY_FS)
                else:
                    layers["mount"] = Layer("mount", False,
                                            MSG_OVERLAY.format(err=errno.errorcode.get(err, str(err))), FIX_OVERLAY)
            elif failed_step == "loopback":
                layers["network"] = Layer("network", False, f"cannot bring up lo in a new network namespace "
                                          f"({errno.errorcode.get(err, err)})", "run with network='host'")
            elif failed_step == "proc":
                layers["pid"] = Layer("pid", False, f"cannot mount a fresh /proc for a new PID namespace "
                                      f"({errno.errorcode.get(err, err)}); the container masks /proc",
                                      "docker run --security-opt systempaths=unconfined, or podman --unmask")
            elif failed_step is not None:
                layers[failed_step] = Layer(failed_step, False, f"failed ({errno.errorcode.get(err, err)})")
    for name in LAYERS:
        if name not in layers:
            layers[name] = Layer(name, False, MSG_NEEDS_USER, layers["user"].fix)
    privileged = root and layers["mount"].available and "privileged" not in inject and _privileged_trial()
    xino, xino_reason = False, ""
    if layers["mount"].available:
        refused = trial.get("xino_refused")
        xino = not isinstance(refused, int)
        if isinstance(refused, int):
            xino_reason = MSG_XINO.format(err=errno.errorcode.get(refused, str(refused)))
    return Capabilities(platform, {n: layers[n] for n in LAYERS}, cg_desc, privileged,
                        accelerator=accelerator(platform=platform), overlay_xino=xino, xino_reason=xino_reason)


def _privileged_trial() -> bool:
    """Can this process overlay the root filesystem before any user namespace?"""
    pid = _syscalls_fork()
    if pid == 0:
        code = 1
        try:
            from . import _syscalls as sc
            from . import mounts

            sc.unshare(sc.CLONE_NEWNS)
            mounts.stage_root()
            for d in ("u", "w", "m"):
                os.mkdir(f"{mounts.UPPER}/{d}")
            sc.mount("isolate-probe", f"{mounts.UPPER}/m", "overlay", 0,
                     f"lowerdir={mounts.OLDROOT},upperdir={mounts.UPPER}/u,workdir={mounts.UPPER}/w")
            code = 0
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _cgroup_line() -> str:
    try:
        from .cgroups import probe_cgroups

        return probe_cgroups().describe()
    except Exception as e:  # pragma: no cover - defensive
        return f"unavailable ({e})"


def _trial(inject: Dict[str, int]) -> Dict[str, object]:
    """Fork a child that tries every layer; it reports ``{"failed": (step, errno)}``."""
    r, w = os.pipe()
    pid = _syscalls_fork()
    if pid == 0:
        os.close(r)
        result: Dict[str, object] = {}
        try:
            result = _trial_child(inject)
        except BaseException as e:  # pragma: no cover - defensive
            result = {"failed": ("unshare", getattr(e, "errno", 0) or 0)}
        finally:
            try:
                os.write(w, json.dumps(result).encode())
            finally:
                os._exit(0)
    os.close(w)
    data = b""
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    try:
        got = json.loads(data)
        failed = got.get("failed")
        if failed is not None:
            got["failed"] = (str(failed[0]), int(failed[1]))
        return dict(got)
    except Exception:
        return {"failed": ("unshare", 0)}


def _trial_child(inject: Dict[str, int]) -> Dict[str, object]:
    from . import _syscalls as sc
    from .namespaces import write_id_maps

    uid, gid = os.geteuid(), os.getegid()

    def attempt(step: str, fn: Callable[..., object], *args: object) -> None:
        if step in inject:
            raise OSError(inject[step], os.strerror(inject[step]))
        fn(*args)

    flags = (sc.CLONE_NEWUSER | sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWNET | sc.CLONE_NEWIPC
             | sc.CLONE_NEWUTS | sc.CLONE_NEWCGROUP)
    for step, fn, args in (
        ("unshare", sc.unshare, (flags,)),
        ("uid_map", write_id_maps, (uid, uid, gid, gid)),
    ):
        try:
            attempt(step, fn, *args)
        except OSError as e:
            return {"failed": (step, e.errno or 0)}
    out: Dict[str, object] = {}
    try:
        attempt("overlay", _stage_overlay)
        try:
            attempt("xino", _try_overlay, "xino", ",xino=on")
        except OSError as e:
            # a kernel that refuses the option: overlays without it still work
            out["xino_refused"] = e.errno or 0
            attempt("overlay", _try_overlay, "plain", "")
    except OSError as e:
        return {"failed": ("overlay", e.errno or 0)}
    try:
        from .network import loopback_up

        attempt("loopback", loopback_up)
    except OSError as e:
        return {"failed": ("loopback", e.errno or 0)}
    try:
        attempt("proc", _try_proc)
    except OSError as e:
        return {"failed": ("proc", e.errno or 0)}
    return out


def _stage_overlay() -> None:
    """Two tmpfs of the trial's own: the upper layers' (on /tmp) and a
    lower one (a filesystem of its own, as the sandbox's lower layers are)."""
    from . import _syscalls as sc

    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("isolate-probe", "/tmp", "tmpfs", 0, "mode=0755")
    os.mkdir("/tmp/lower")
    sc.mount("isolate-probe", "/tmp/lower", "tmpfs", 0, "mode=0755")


def _try_overlay(name: str, options: str) -> None:
    from . import _syscalls as sc

    for d in ("upper", "work", "merged"):
        os.mkdir(f"/tmp/{d}-{name}")
    sc.mount("isolate-probe", f"/tmp/merged-{name}", "overlay", 0,
             f"lowerdir=/tmp/lower,upperdir=/tmp/upper-{name},workdir=/tmp/work-{name},userxattr{options}")


def _try_proc() -> None:
    pid = _syscalls_fork()
    if pid == 0:
        code = 1
        try:
            from . import _syscalls as sc

            os.mkdir("/tmp/proc")
            sc.mount("proc", "/tmp/proc", "proc", 0)
            code = 0
        except OSError as e:
            code = 100 + (e.errno or 0) % 100
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    if code:
        raise OSError(code - 100 if code >= 100 else errno.EPERM, "mount proc")


@dataclass(frozen=True)
class Delegation:
    """What :func:`delegate_cgroups` did."""

    #: This process moved into a cgroup systemd delegated to it.
    moved: bool
    #: Where it now is (the scope systemd made), or, when it did not move,
    #: the cgroup kind it already had writable.
    description: str


class CannotDelegate(Exception):
    """:func:`delegate_cgroups` cannot help on this host: ``reason``, ``fix``."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason, fix)
        self.reason = reason
        self.fix = fix

    def __str__(self) -> str:
        return self.reason + (f". Fix: {self.fix}" if self.fix else "")


def delegate_cgroups() -> Delegation:
    """Move this process into a cgroup the user's systemd delegates to it,
    when that is what stands between it and per-sandbox cgroups (cgroup v2
    whose directory this user may not write).  Call it before any sandbox
    exists.  Raises :class:`CannotDelegate` where a delegated cgroup would
    not help, and ``DelegationError`` when systemd refused or did not
    answer."""
    from .cgroups import forget, probe_cgroups
    from .cgroups.systemd import delegate_self

    found = probe_cgroups()
    if not found.needs_delegation:
        if found.available:
            return Delegation(False, found.kind)
        raise CannotDelegate(found.reason, found.fix)
    got = delegate_self()
    forget()
    _cache.clear()  # the answers describe the cgroup this process left
    return Delegation(True, got.describe())
