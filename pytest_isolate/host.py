"""What this host supports, the policy, and plugins that conflict with ours.

The probe runs once per pytest process (at configure).  ``warn`` runs with
the layers the host has (the missing ones are best-effort in every spec)
and says once, in the header, what is missing and how to fix it;
``strict`` refuses to start with the same text.
"""
from __future__ import annotations

import importlib.metadata
import os
from typing import Any, Dict, List, Optional, Tuple

import pytest
from isolate_runtime import Capabilities

from .settings import Value

PREFIX = "isolate"


def layer_modes(caps: Capabilities) -> Dict[str, str]:
    return {name: ("required" if layer.available else "best-effort") for name, layer in caps.layers.items()}


def missing_text(caps: Capabilities) -> str:
    """Each missing layer: why, and the fix (one line each)."""
    lines = []
    for layer in caps.missing():
        line = f"  {layer.name}: {layer.reason}"
        if layer.fix:
            line += f" (fix: {layer.fix})"
        lines.append(line)
    return "\n".join(lines)


def strict_error(caps: Capabilities) -> pytest.UsageError:
    names = ", ".join(layer.name for layer in caps.missing())
    return pytest.UsageError(
        f"pytest-isolate: --isolate-policy=strict, but this host lacks isolation layers: {names}\n"
        f"{missing_text(caps)}\n"
        f"Fix the host, or run with --isolate-policy=warn to run with what is available.")


def header_lines(caps: Optional[Capabilities], disabled: Optional[str], debugger: Optional[str]) -> List[str]:
    if disabled:
        return [f"{PREFIX}: off ({disabled}): isolated tests run in-process"]
    if debugger:
        return [f"{PREFIX}: {debugger} given: isolated tests run in-process so the debugger can reach them "
                f"(drop {debugger} to isolate them)"]
    assert caps is not None
    return _layer_lines(caps) + [accelerator_line(caps)]


def _layer_lines(caps: Capabilities) -> List[str]:
    cgroups = f"; cgroups: {caps.cgroups}" if caps.cgroups else ""
    missing = caps.missing()
    if not missing:
        return [f"{PREFIX}: sandbox layers: {' '.join(caps.layers)} (all available){cgroups}"]
    if not caps.layers["user"].available:
        user = caps.layers["user"]
        fix = f" Fix: {user.fix}" if user.fix else ""
        return [f"{PREFIX}: no namespaces on this host ({user.reason}): isolated tests run in a forked "
                f"process with rlimits only; writes, processes and network are NOT isolated.{fix}"]
    have = [name for name, layer in caps.layers.items() if layer.available]
    lines = [f"{PREFIX}: sandbox layers: {' '.join(have)}; missing (policy warn, running without them):"]
    lines.extend(missing_text(caps).splitlines())
    if caps.cgroups:
        lines.append(f"{PREFIX}: cgroups: {caps.cgroups}")
    return lines


def accelerator_line(caps: Capabilities) -> str:
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


def doctor_text(caps: Capabilities) -> str:
    return (f"pytest-isolate: isolation layers on this host ({caps.platform}, euid {caps.euid})\n"
            f"{caps.table()}\n")


def doctor_report(caps: Capabilities) -> str:
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


def foreign_same_package() -> Optional[str]:
    """A pytest11 entry point into ``pytest_isolate`` that is not ours."""
    try:
        dists = importlib.metadata.distributions()
        for dist in dists:
            for ep in dist.entry_points:
                if ep.group != "pytest11" or not ep.value.split(":")[0].startswith("pytest_isolate"):
                    continue
                if (ep.name, ep.value) == ("isolate", "pytest_isolate.plugin"):
                    continue
                return GILFREE.format(dist=dist.metadata["Name"], version=dist.version, ep=ep.name)
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
