"""Settings: marker > CLI > environment > ini > default, with provenance.

Every value remembers where it came from, so a bad one fails with
``invalid memory '12x' from marker on tests/t.py::test_b: ...``.  Session
values (CLI, environment, ini) are resolved and validated once at
``pytest_configure``; marker values are merged per item at
``pytest_collection_modifyitems``, before any test runs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import pytest

MARKER = "isolated"
ENV_PREFIX = "PYTEST_ISOLATE_"


@dataclass(frozen=True)
class Value:
    """One resolved setting and where it came from (``"default"``,
    ``"--isolate-memory"``, ``"environment PYTEST_ISOLATE_MEMORY"``,
    ``"ini isolate_memory"`` or ``"marker on <nodeid>"``)."""

    value: Any
    source: str

    def __repr__(self) -> str:
        return f"{self.value!r} (from {self.source})"


#: Upper bounds: beyond these a value is a typo, and the kernel would refuse
#: it (ERANGE) in the middle of the run.
MAX_SECONDS = 30 * 24 * 3600
MAX_CPUS = 1024
MAX_PIDS = 4194304  # the kernel's PID_MAX_LIMIT
MAX_BYTES = 1 << 50  # 1 PiB


def _duration(text: object) -> float:
    """``"10"``, ``"1.5s"``, ``"2m"``, ``"1h"`` → seconds (> 0)."""
    if isinstance(text, bool):
        raise ValueError("expected a number of seconds like 10, 1.5s or 2m")
    if isinstance(text, (int, float)):
        try:
            value = float(text)
        except OverflowError:
            raise ValueError(f"expected at most {MAX_SECONDS} seconds (30 days)") from None
    else:
        m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$", str(text))
        if not m:
            raise ValueError("expected a number of seconds like 10, 1.5s or 2m")
        value = float(m.group(1)) * {None: 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    if value > MAX_SECONDS:
        raise ValueError(f"expected at most {MAX_SECONDS} seconds (30 days)")
    return value


def _cpus(text: object) -> float:
    if isinstance(text, bool):
        raise ValueError("expected a positive number of CPUs like 0.5 or 2")
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError("expected a positive number of CPUs like 0.5 or 2") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of CPUs like 0.5 or 2")
    if value > MAX_CPUS:
        raise ValueError(f"expected at most {MAX_CPUS} CPUs")
    return value


def _count(text: object) -> int:
    if isinstance(text, bool):
        raise ValueError("expected a positive whole number")
    try:
        value = int(str(text).strip()) if not isinstance(text, int) else text
    except ValueError:
        raise ValueError("expected a positive whole number") from None
    if value <= 0:
        raise ValueError("expected a positive whole number")
    return value


def _pids(text: object) -> int:
    value = _count(text)
    if value > MAX_PIDS:
        raise ValueError(f"expected at most {MAX_PIDS} processes")
    return value


def _size(text: object) -> int:
    # (the runtime is imported when a test needs it, not with the plugin)
    from isolate_runtime import parse_size

    try:
        value = parse_size(text)
    except OverflowError:
        value = MAX_BYTES + 1
    if value > MAX_BYTES:
        raise ValueError("expected at most 1P (1 PiB)")
    return value


def _jobs(text: object) -> object:
    """``auto`` or a whole number of sandboxes >= 1."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        value = _count(text)
    except ValueError:
        raise ValueError("expected a number of sandboxes like 4, or auto") from None
    if value > MAX_CPUS:
        raise ValueError(f"expected at most {MAX_CPUS} sandboxes")
    return value


#: The network modes: ``services`` (the default) is the sandbox's own
#: loopback plus the services pytest and its subprocesses listen on there.
NETWORK_MODES = ("services", "none", "host")
_NETWORK_EXPECTED = ("expected 'services' (the default), 'none' or 'host', or host loopback ports to forward "
                     "like 127.0.0.1:5432, [::1]:5432, localhost:6379 or 6379")


def _network(text: object) -> Union[str, Tuple[str, ...]]:
    """A mode, or the host loopback ports forwarded on top of ``services``:
    a list (marker) or a comma- or space-separated string (CLI, environment,
    ini, marker)."""
    from isolate_runtime import parse_endpoint  # only when set: a run that isolates nothing never imports it

    items: List[object]
    if isinstance(text, str):
        if text.strip() in NETWORK_MODES:
            return text.strip()
        items = [p for p in re.split(r"[,\s]+", text) if p]
    elif isinstance(text, (list, tuple)):
        items = list(text)
    else:
        raise ValueError(_NETWORK_EXPECTED)
    if not items:
        raise ValueError(_NETWORK_EXPECTED + ", not an empty list")
    out: List[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(_NETWORK_EXPECTED)
        item = item.strip()
        if item in NETWORK_MODES:
            raise ValueError(f"{item!r} is a mode of its own: give it alone, not in a list of ports")
        if ":" not in item and not item.isdigit():
            raise ValueError(_NETWORK_EXPECTED)
        try:
            parse_endpoint(item)
        except ValueError as e:
            raise ValueError(f"{item}: {e}" if len(items) > 1 else str(e)) from None
        out.append(item)
    return tuple(dict.fromkeys(out))


def network_text(value: Union[str, Tuple[str, ...]]) -> str:
    """How a network setting reads: ``services``, ``none``, ``host`` or
    ``services + 127.0.0.1:5432, localhost:6379``."""
    return value if isinstance(value, str) else "services + " + ", ".join(value)


def _pid(text: object) -> str:
    if text not in ("private", "host"):
        raise ValueError("expected 'private' or 'host'")
    return str(text)


def parse_bool(text: object) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def _policy(text: object) -> str:
    if text not in ("warn", "strict"):
        raise ValueError("expected 'warn' or 'strict'")
    return str(text)


def no_nul(path: str) -> str:
    """A path is a C string for open() and mount(): NUL would end it, so
    Python refuses it there ("embedded null byte").  Refuse it here, with
    the value and its source, instead of after tests have run.  Every
    path-valued setting goes through this (``writable`` and the
    ``--isolate-json``/``-html``/``-compare`` files)."""
    if "\0" in path:
        raise ValueError("a path cannot contain a NUL character")
    return path


def _paths(text: object) -> Tuple[str, ...]:
    items: Iterable[object]
    if isinstance(text, str):
        if not text.strip():
            raise ValueError("expected a path or a list of paths, not an empty one")
        items = [p for p in text.split(os.pathsep) if p.strip()]
    elif isinstance(text, os.PathLike):
        items = [text]
    elif isinstance(text, (list, tuple)):
        items = text
    else:
        raise ValueError("expected a path or a list of paths")
    out = []
    for p in items:
        if not isinstance(p, (str, os.PathLike)) or not str(p).strip():
            raise ValueError("expected a path or a list of paths, not an empty one")
        out.append(os.path.abspath(no_nul(os.fspath(p))))
    return tuple(out)


@dataclass(frozen=True)
class Option:
    """One setting: how to parse it and where it may be given."""

    name: str
    parse: Callable[[object], Any]
    help: str
    default: Any = None
    cli: bool = True
    marker: bool = True
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--isolate-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def ini(self) -> str:
        return "isolate_" + self.name

    @property
    def dest(self) -> str:
        return "isolate_" + self.name


#: Per-test limits and sandbox options (marker keyword = setting name).
ITEM_OPTIONS: Tuple[Option, ...] = (
    Option("memory", _size, "memory limit for the whole sandbox, e.g. 512M, 2G", metavar="SIZE"),
    Option("cpus", _cpus, "CPU bandwidth cap in CPUs, e.g. 0.5", metavar="N"),
    Option("cpu_time", _duration, "CPU-time budget in seconds; the sandbox is killed once it is spent",
           metavar="SECONDS"),
    Option("timeout", _duration, "wall-clock limit per isolated test (setup+call+teardown), e.g. 10, 2m",
           metavar="SECONDS"),
    Option("pids", _pids, "maximum number of processes/threads in the sandbox", metavar="N"),
    Option("memory_warn", _size, "flag (never kill) a test whose peak memory exceeds this, e.g. 400M",
           metavar="SIZE"),
    Option("cpu_time_warn", _duration, "flag (never kill) a test whose CPU time (user+system) exceeds this",
           metavar="SECONDS"),
    Option("timeout_warn", _duration, "flag (never kill) a test whose sandbox ran longer than this",
           metavar="SECONDS"),
    Option("network", _network, "services (the default): the sandbox's own loopback plus the TCP services pytest "
           "and its subprocesses listen on at 127.0.0.1/::1, relayed; none: own loopback only; host: the host's "
           "network; or host loopback ports to forward on top of services, e.g. 127.0.0.1:5432,localhost:6379",
           default="services", metavar="services|none|host|PORTS"),
    Option("pid", _pid, "'private' (the test sees only its own processes, the default) or 'host' (it shares "
           "pytest's PID namespace: processes the session started are visible and can be signalled)",
           default="private", metavar="private|host"),
    Option("writable", _paths, "host paths whose writes persist (marker only)", default=(), cli=False),
    Option("root", parse_bool, "run the test as a fake root inside the sandbox (marker only)", default=False,
           cli=False),
    Option("exclusive", parse_bool, "under --isolate-jobs, run this test with no other sandbox in flight "
           "(marker only)", default=False, cli=False),
)
ITEM_NAMES = tuple(o.name for o in ITEM_OPTIONS)

#: Session-wide settings (no marker form).
SESSION_OPTIONS: Tuple[Option, ...] = (
    Option("all", parse_bool, "run every test in its own sandbox", default=False, marker=False),
    Option("policy", _policy, "warn (default): run with the isolation this host has and say what is "
           "missing; strict: refuse to start unless every layer is available", default="warn",
           marker=False, metavar="warn|strict"),
    Option("delegate", parse_bool, "ordinary user on cgroup v2 without a delegated cgroup: ask this user's systemd for "
           "a transient scope with Delegate=yes holding this pytest process, as rootless podman does, so that "
           "memory/CPU/pids limits apply (no effect where cgroups are already writable)", default=False,
           marker=False),
    Option("prefork", parse_bool, "fork and set up the next test's sandbox while the current test runs, when the "
           "parent has nothing to set up for it in between (default true; false: each sandbox is forked "
           "when its test's turn comes)", default=True, cli=False, marker=False),
    Option("message_limit", _size, "the most one isolated test may send back to pytest (its reports with "
           "their captured output, warnings, coverage data; each message counts at least 1 KiB), e.g. 16M; "
           "past it the test is reported CRASHED and its sandbox killed", default=16 << 20, marker=False,
           metavar="SIZE"),
    Option("jobs", _jobs, "how many isolated tests may run at once, or auto (the CPUs this process may use); "
           "reports still come in collection order (default 1)", default=1, marker=False, metavar="N|auto"),
    Option("jobs_memory", _size, "with --isolate-jobs: start a test only while the memory limits of the tests "
           "in flight fit in this, e.g. 4G (default: the memory available to this process)", marker=False,
           metavar="SIZE"),
)


@dataclass(frozen=True)
class ItemSettings:
    """What one test gets; frozen, stored in the item's stash."""

    isolated: Value
    memory: Value
    cpus: Value
    cpu_time: Value
    timeout: Value
    pids: Value
    network: Value
    pid: Value
    writable: Value
    root: Value
    exclusive: Value
    memory_warn: Value
    cpu_time_warn: Value
    timeout_warn: Value


#: Where each item keeps its :class:`ItemSettings` (set at collection).
settings_key = pytest.StashKey[ItemSettings]()


def bad_value(option: str, raw: object, source: str, why: str) -> pytest.UsageError:
    return pytest.UsageError(f"pytest-isolate: invalid {option} {raw!r} from {source}: {why}")


MISSING_WRITABLE = ("no such file or directory: a writable path is bound into the sandbox as it is, so it must "
                    "exist before the first test starts. Create it first (in CI, or in a conftest.py's "
                    "pytest_configure) or drop it from the writable paths")


def check_writable(value: Value) -> None:
    """Refuse a declared writable path that does not exist, before any test
    runs.  Not created instead: whether a file or a directory was meant is
    unknown, and a typo would leave a stray directory behind."""
    for path in value.value or ():
        if not os.path.exists(path):
            raise bad_value("writable", path, value.source, MISSING_WRITABLE)


def ini_paths(config: pytest.Config, name: str) -> Optional[Tuple[str, ...]]:
    """The ini list of paths ``name``, each relative to the ini file's
    directory (as pytest's own path-valued ini options are), or None."""
    raw = config.getini(name)
    if not raw:
        return None
    inipath = getattr(config, "inipath", None)
    base = inipath.parent if inipath is not None else config.invocation_params.dir
    return tuple(os.path.join(base, os.fspath(p)) for p in raw)


class SessionSettings:
    """CLI > environment > ini > default for every option, validated once."""

    def __init__(self, config: pytest.Config, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        self.values: Dict[str, Value] = {}
        for opt in ITEM_OPTIONS + SESSION_OPTIONS:
            self.values[opt.name] = self._resolve(config, env, opt)
        self.no_isolate = bool(config.getoption("isolate_disable", False))
        #: What every test without an ``isolated`` marker gets (one object:
        #: it is frozen).
        self._unmarked: Optional[ItemSettings] = None

    @staticmethod
    def _resolve(config: pytest.Config, env: Mapping[str, str], opt: Option) -> Value:
        # (what is parsed, where it came from, what an error shows: the
        # value as the user wrote it)
        candidates: List[Tuple[Any, str, Any]] = []
        if opt.cli:
            given = config.getoption(opt.dest, None)
            candidates.append((given, opt.flag, given))
        candidates.append((env.get(opt.env), f"environment {opt.env}", env.get(opt.env)))
        written = config.getini(opt.ini)
        ini = written if opt.name != "writable" else ini_paths(config, opt.ini)
        if ini not in (None, "", []):
            inipath = getattr(config, "inipath", None)
            where = f" ({inipath.name})" if inipath is not None else ""
            candidates.append((ini, f"ini {opt.ini}{where}", written))
        for raw, source, shown in candidates:
            if raw is None or (isinstance(raw, str) and raw.strip() == "" and opt.name != "all"):
                continue
            try:
                return Value(opt.parse(raw), source)
            except ValueError as e:
                raise bad_value(opt.name.replace("_", "-"), shown, source, _why(e)) from None
        return Value(opt.default, "default")

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def for_item(self, item: pytest.Item) -> ItemSettings:
        """Merge the item's ``isolated`` markers (closest wins) over the
        session values; raises :class:`pytest.UsageError` on a bad marker."""
        marks = list(item.iter_markers(MARKER))
        if not marks and self._unmarked is not None:
            return self._unmarked
        merged: Dict[str, Value] = {}
        marked = False
        for mark in marks:  # closest (function) first
            marked = True
            source = f"marker on {item.nodeid}"
            if mark.args:
                raise pytest.UsageError(
                    f"pytest-isolate: invalid marker arguments {mark.args!r} from {source}: "
                    f"@pytest.mark.isolated takes keyword arguments only ({', '.join(ITEM_NAMES)})")
            for key, raw in mark.kwargs.items():
                if key not in ITEM_NAMES:
                    raise pytest.UsageError(
                        f"pytest-isolate: unknown marker argument {key}={raw!r} from {source}; "
                        f"known: {', '.join(ITEM_NAMES)}")
                if key in merged:
                    continue
                opt = ITEM_OPTIONS[ITEM_NAMES.index(key)]
                if raw is None:
                    merged[key] = Value(None, source)
                    continue
                try:
                    merged[key] = Value(opt.parse(raw), source)
                except ValueError as e:
                    raise bad_value(key.replace("_", "-"), raw, source, _why(e)) from None
        all_ = self.values["all"]
        if self.no_isolate:
            isolated = Value(False, "--no-isolate")
        elif marked:
            isolated = Value(True, f"marker on {item.nodeid}")
        else:
            isolated = Value(bool(all_.value), all_.source)
        fields = {name: merged.get(name, self.values[name]) for name in ITEM_NAMES}
        settings = ItemSettings(isolated=isolated, **fields)
        if not marks:
            self._unmarked = settings
        return settings


def _why(e: ValueError) -> str:
    text = str(e)
    # parse_size repeats the value ("..., got '12x'"); the message names it already.
    return re.sub(r",? got .*$", "", text)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolate", "run tests in throwaway sandboxes (pytest-isolate)")
    group.addoption("--isolate-all", action="store_true", dest="isolate_all", default=None,
                    help="run every test in its own sandbox (ini isolate_all, env PYTEST_ISOLATE_ALL)")
    for opt in ITEM_OPTIONS:
        if opt.cli:
            group.addoption(opt.flag, dest=opt.dest, default=None, metavar=opt.metavar,
                            help=f"{opt.help} (ini {opt.ini}, env {opt.env}; a marker argument wins)")
    group.addoption("--isolate-policy", dest="isolate_policy", default=None, metavar="warn|strict",
                    help="warn (default): run with the isolation this host has and say what is missing; "
                         "strict: refuse to start unless every layer is available "
                         "(ini isolate_policy, env PYTEST_ISOLATE_POLICY)")
    group.addoption("--isolate-delegate", action="store_true", dest="isolate_delegate", default=None,
                    help="ordinary user on cgroup v2 without a delegated cgroup: ask this user's systemd for a "
                         "transient scope with Delegate=yes for this pytest process, so that cgroup limits apply "
                         "(ini isolate_delegate, env PYTEST_ISOLATE_DELEGATE)")
    group.addoption("--isolate-doctor", action="store_true", dest="isolate_doctor", default=False,
                    help="show which isolation layers this host supports, and how to fix what is missing; "
                         "then exit")
    group.addoption("--no-isolate", action="store_true", dest="isolate_disable", default=False,
                    help="run every test in-process, ignoring @pytest.mark.isolated and --isolate-all")
    for opt in SESSION_OPTIONS:
        if opt.name.startswith("jobs") or opt.name == "message_limit":
            group.addoption(opt.flag, dest=opt.dest, default=None, metavar=opt.metavar,
                            help=f"{opt.help} (ini {opt.ini}, env {opt.env})")
    for opt in ITEM_OPTIONS + SESSION_OPTIONS:
        if opt.name in ("writable", "root"):
            continue
        parser.addini(opt.ini, help=f"pytest-isolate: {opt.help}", default=None)
    parser.addini("isolate_writable", type="linelist", default=[],
                  help="pytest-isolate: host paths whose writes persist for every isolated test (one per line, "
                       "relative to the ini file's directory; each must exist)")
    parser.addini("isolate_root", help="pytest-isolate: run isolated tests as a fake root", default=None)


MARKER_HELP = (
    "isolated(memory=None, cpus=None, cpu_time=None, timeout=None, pids=None, network='services', pid='private', "
    "writable=(), root=False, exclusive=False, memory_warn=None, cpu_time_warn=None, timeout_warn=None): "
    "run this test in a throwaway sandbox (fresh user/PID/mount/network/IPC/UTS namespaces, a copy-on-write "
    "root, cgroup limits). "
    "memory: size like '256M'; cpus: CPU cap like 0.5; "
    "cpu_time and timeout: seconds; pids: process cap; network: 'services' (own loopback plus pytest's "
    "loopback services), 'none', 'host', or host loopback ports to add like ['127.0.0.1:5432']; pid: 'private' "
    "or 'host' (see the processes the session started); writable: host "
    "paths whose writes persist; root: fake root inside; exclusive: run with no other sandbox in flight "
    "(--isolate-jobs); memory_warn, cpu_time_warn, timeout_warn: thresholds that only flag a test. "
    "Applies to functions, classes and modules (pytestmark); "
    "the closest marker wins per argument. See pytest --isolate-doctor for what this host supports."
)
