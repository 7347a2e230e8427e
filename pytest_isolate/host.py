"""What this host supports, the policy, and plugins that conflict with ours.

The probe runs once per pytest process, when the first test needs a
sandbox: at configure under ``--isolate-all``, else at the end of the
collection when a collected test is isolated (a run that isolates nothing
never probes).  ``warn`` runs with the layers the host has (the missing
ones are best-effort in every spec) and says so in one header line
(``-v``: why, and the fix); ``strict`` refuses to run any test, with the
reasons and the fixes.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import pytest

from .settings import Value, network_text

if TYPE_CHECKING:
    from isolate_runtime import Capabilities

PREFIX = "isolate"


def layer_modes(caps: "Capabilities") -> Dict[str, str]:
    return {name: ("required" if layer.available else "best-effort") for name, layer in caps.layers.items()}


def missing_text(caps: "Capabilities") -> str:
    """Each missing layer: why, and the fix (one line each)."""
    lines = []
    for layer in caps.missing():
        line = f"  {layer.name}: {layer.reason}"
        if layer.fix:
            line += f" (fix: {layer.fix})"
        lines.append(line)
    return "\n".join(lines)


def strict_error(caps: "Capabilities") -> pytest.UsageError:
    names = ", ".join(layer.name for layer in caps.missing())
    return pytest.UsageError(
        f"pytest-isolate: --isolate-policy=strict, but this host lacks isolation layers: {names}\n"
        f"{missing_text(caps)}\n"
        f"Fix the host, or run with --isolate-policy=warn to run with what is available.")


def header_line(caps: "Optional[Capabilities]", disabled: Optional[str], debugger: Optional[str]) -> str:
    """The one line the pytest header gets when tests are isolated: what
    the sandboxes have here, in under 100 characters; ``-v`` adds
    :func:`detail_lines`, ``--isolate-doctor`` the whole story."""
    if disabled:
        return f"{PREFIX}: off ({disabled}): isolated tests run in-process"
    if debugger:
        return f"{PREFIX}: {debugger} given: isolated tests run in-process (drop it to isolate them)"
    assert caps is not None
    if not caps.layers["user"].available:
        return (f"{PREFIX}: no namespaces here: isolated tests run in a forked process only "
                "(see --isolate-doctor)")
    missing = caps.missing()
    if missing:
        return (f"{PREFIX}: sandbox layers: missing {', '.join(layer.name for layer in missing)}, "
                "running without them (see --isolate-doctor)")
    accel = "in use" if caps.accelerator.in_use and caps.layers["pid"].available else "not used"
    cgroups = cgroup_kind(caps)
    if cgroups == "none" and "--isolate-delegate" in (caps.cgroups or ""):
        cgroups = "none (fix: --isolate-delegate)"  # the fix that applies here; -v says why
    return f"{PREFIX}: sandbox layers: all {len(caps.layers)}; cgroups: {cgroups}; C accelerator: {accel}"


def cgroup_kind(caps: "Capabilities") -> str:
    """``legacy``, ``unified``, ``none``...: the first word of the probe's
    description of the cgroups."""
    m = re.match(r"[A-Za-z0-9_-]+", caps.cgroups or "")
    return m.group(0) if m else "unknown"


def detail_lines(caps: "Optional[Capabilities]", disabled: Optional[str], debugger: Optional[str]) -> List[str]:
    """What ``-v`` adds to the header: each missing layer with why and the
    fix, the cgroups, the C accelerator."""
    if disabled or debugger or caps is None:
        return []
    lines = [f"{PREFIX}: {line}" for line in missing_text(caps).splitlines()]
    if not caps.layers["user"].available:
        lines.append(f"{PREFIX}: writes, processes and network are NOT isolated")
    if caps.cgroups:
        lines.append(f"{PREFIX}: cgroups: {caps.cgroups}")
    lines.append(accelerator_line(caps))
    if caps.xino_reason:
        lines.append(f"{PREFIX}: {caps.xino_reason}")
    return lines


def network_line(caps: "Capabilities", network: Value) -> Optional[str]:
    """What a sandbox's network reaches by default (a marker may choose
    otherwise per test); nothing without a network namespace, which the
    missing-layer lines already say."""
    layer = caps.layers.get("network")
    if layer is None or not layer.available or not caps.layers["user"].available:
        return None
    value = network.value
    where = "the default" if network.source == "default" else f"from {network.source}"
    if value == "none":
        what = "each sandbox reaches only its own loopback"
    elif value == "host":
        what = "sandboxes share the host's network"
    else:
        what = ("each sandbox reaches its own loopback and, relayed, the TCP services that pytest and its "
                "subprocesses listen on at 127.0.0.1/::1 when the sandbox is made")
        if isinstance(value, tuple):
            what += ", and these host loopback ports when something listens there"
        what += "; nothing else of the host"
    return f"{PREFIX}: network: {network_text(value)} ({where}): {what}"


def accelerator_line(caps: "Capabilities") -> str:
    """Whether isolated tests get the C accelerator, and why not."""
    acc = caps.accelerator
    if acc.in_use and not caps.layers["pid"].available:
        return (f"{PREFIX}: C accelerator: built, not used: it sets up sandboxes with a PID namespace, "
                "which this host lacks")
    text = f"{PREFIX}: C accelerator: {acc.describe()}"
    return text + (f" (fix: {acc.fix})" if acc.fix else "")


def delegate(asked: Value) -> Optional[str]:
    """``--isolate-delegate``: move this process into a cgroup delegated by
    the user's systemd, before the probe; the header line saying what
    happened, or ``None`` when it was not asked for."""
    if not asked.value:
        return None
    import isolate_runtime

    option = f"--isolate-delegate (from {asked.source})"
    try:
        got = isolate_runtime.delegate_cgroups()
    except isolate_runtime.CannotDelegate as e:
        raise pytest.UsageError(f"pytest-isolate: {option} cannot help on this host: {e}") from None
    except isolate_runtime.DelegationError as e:
        raise pytest.UsageError(f"pytest-isolate: {option}: {e}") from None
    if not got.moved:
        return f"{PREFIX}: {option}: nothing to do, this process's cgroups are already writable ({got.description})"
    return f"{PREFIX}: cgroups delegated by systemd ({option}): {got.description}"


def doctor_text(caps: "Capabilities") -> str:
    return (f"pytest-isolate: isolation layers on this host ({caps.platform}, euid {caps.euid})\n"
            f"{caps.table()}\n")


def doctor_report(caps: "Capabilities") -> str:
    """The capability table and, for each missing layer, the fix
    (``pytest --isolate-doctor`` and ``python -m pytest_isolate``)."""
    text = doctor_text(caps)
    if caps.missing():
        return text + "missing layers and how to fix them:\n" + missing_text(caps) + "\n"
    return text + "every layer is available: --isolate-policy=strict will run here\n"


# ------------------------------------------------------------------ conflicts

FORKED_BOTH = ("pytest-isolate: {nodeid} would be forked twice: it is isolated ({why}) and pytest-forked "
               "forks it too ({forked}). Use one: drop {forked}, or drop the isolation (--no-isolate).")
ISOLATED_PLUGIN = ("pytest-isolate: the plugin {name!r} from pytest-isolated (dyollb) is active and also claims "
                   "@pytest.mark.isolated, so both would act on the same tests. Disable one of them: "
                   "pytest -p no:{name} (pytest-isolated) or pytest -p no:isolate (this plugin).")
GILFREE = ("pytest-isolate: the distribution {dist} {version} registers the pytest plugin {ep!r} from the import "
           "package 'pytest_isolate', the same name as this plugin's package (it is the unrelated PyPI project "
           "gilfree/pytest-isolate, with options --isolate and --isolate-mem-limit). The two overwrite each "
           "other's files; uninstall one (pip uninstall pytest-isolate) and reinstall the one you want.")


def active_pytest_isolated(config: pytest.Config) -> Optional[str]:
    """The registration name of dyollb's pytest-isolated, when it is active."""
    for name, plugin in config.pluginmanager.list_name_plugin():
        module = getattr(plugin, "__name__", "") or ""
        if module == "pytest_isolated" or module.startswith("pytest_isolated."):
            return name
    return None


def foreign_same_package(pluginmanager: pytest.PytestPluginManager) -> Optional[str]:
    """A pytest11 entry point into ``pytest_isolate`` that is not ours,
    among the plugins pytest loaded from entry points (asking pytest, not
    every installed distribution's metadata: a run pays nothing for it)."""
    try:
        for plugin, dist in pluginmanager.list_plugin_distinfo():
            module = getattr(plugin, "__name__", "") or ""
            if not module.startswith("pytest_isolate"):
                continue
            name = pluginmanager.get_name(plugin)
            if (name, module) == ("isolate", "pytest_isolate.plugin"):
                continue
            return GILFREE.format(dist=dist.metadata["Name"], version=dist.version, ep=name)
    except Exception:  # pragma: no cover - broken metadata must not break pytest
        return None
    return None


def forked_reason(config: pytest.Config, item: pytest.Item) -> Optional[str]:
    """Why pytest-forked would fork this item, if it is active."""
    if not config.pluginmanager.hasplugin("pytest_forked"):
        return None
    if config.getoption("forked", False):
        return "--forked"
    if item.get_closest_marker("forked") is not None:
        return "@pytest.mark.forked"
    return None


# ------------------------------------------------------------------ paths plugins declare writable

MISSING_DECLARED = ("pytest-isolate: the plugin {plugin!r} declares {path} writable for isolated tests "
                    "(pytest_isolate_writable), but it does not exist. Create it before the tests run, or fix "
                    "the plugin.")


def declared_writable(config: pytest.Config) -> Tuple[str, ...]:
    """The paths plugins declare writable (``pytest_isolate_writable``),
    absolute; a usage error naming the plugin for one that does not exist."""
    paths: List[str] = []
    for impl in reversed(config.hook.pytest_isolate_writable.get_hookimpls()):
        kwargs = {"config": config}
        got: Any = impl.function(*[kwargs[name] for name in impl.argnames])
        for path in got or ():
            full = os.path.join(config.rootpath, os.fspath(path))
            if not os.path.lexists(full):
                raise pytest.UsageError(MISSING_DECLARED.format(plugin=impl.plugin_name, path=full))
            paths.append(os.path.normpath(full))
    return tuple(dict.fromkeys(paths))


def _own_fds() -> List[Tuple[int, str]]:
    """This process's descriptors past 0-2, each with what it is open on
    (``/proc/self/fd``; none without procfs)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    out = []
    for name in names:
        try:
            if int(name) > 2:
                out.append((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
    return sorted(out)


def listening_fds() -> Tuple[int, ...]:
    """This process's listening sockets now (past fds 0-2)."""
    import socket

    out = []
    for fd, target in _own_fds():
        if not target.startswith("socket:"):
            continue
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    out.append(fd)
        except OSError:  # closed meanwhile, or not a socket after all
            continue
    return tuple(out)


def fds_on(path: Optional[str]) -> Tuple[int, ...]:
    """This process's descriptors open on the file ``path`` (past fds 0-2)."""
    return tuple(fd for fd, target in _own_fds() if path is not None and target == path)
