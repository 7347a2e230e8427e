"""Run one payload in a sandbox: the process tree, the wait, the kill, the result.

::

    caller (never unshared, never limited)
     └─ A   joins the cgroup, dies with the caller, unshares user+mount+pid+net+ipc+uts+cgroup,
         │  writes the id maps, builds the root filesystem, brings lo up, sets the hostname
         └─ B = PID 1 of the new PID namespace: mounts /proc, detaches the host tree,
             │  forks C, forwards signals, reaps everything, reports C's status and the
             │  paths C wrote; its exit makes the kernel kill whatever is left
             └─ C = the payload: rlimits, drops privileges, runs the callable / execs argv

The caller waits for A's *exit* (pidfd) with a deadline, reading frames as
they arrive; it never waits for EOF alone (a grandchild may hold the pipe).
"""
from __future__ import annotations

import atexit
import errno
import faulthandler
import gc
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from . import channel as ch
from . import mounts
from ._syscalls import fork as _fork
from .cgroups import SandboxCgroup, select_backend
from .errors import PayloadLost, SetupError, UnsupportedError
from .result import Figure, Outcome, ResourceStats, SandboxResult
from .spec import LAYERS, CallablePayload, CommandPayload, Limits, SandboxSpec

#: Signal that makes a callable payload dump the stacks of all its threads.
DUMP_SIGNAL = signal.SIGUSR2
#: Exit status of A/B when setup failed (the frame says why).
SETUP_EXIT = 125
#: Signals B (PID 1) forwards to the payload.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

_HINTS: Dict[Tuple[str, int], str] = {
    ("unshare", errno.EPERM): "this host forbids unprivileged user namespaces (see `python -m isolate_runtime probe`)",
    ("unshare", errno.ENOSPC): "the user/namespace count limit is reached (sysctl user.max_user_namespaces)",
    ("unshare", errno.EINVAL): "the kernel lacks one of the namespace types, or the process was multi-threaded",
    ("id maps", errno.EPERM): "writing uid_map was refused (AppArmor or a container runtime restricts user namespaces)",
    ("root filesystem", errno.EINVAL): "overlayfs refused a lower directory (see `python -m isolate_runtime probe`)",
    ("root filesystem", errno.EPERM): "mounting inside the user namespace was refused (container seccomp/AppArmor?)",
}

if sys.platform.startswith("linux"):
    # Load these in the caller once: importing (or resolving libc) in every
    # forked child costs milliseconds per sandbox.
    import resource  # noqa: F401

    import prctl  # noqa: F401

    from . import _syscalls, namespaces, network  # noqa: F401

    _syscalls.libc()

try:
    # One copy of the caller's memory per sandbox instead of three (x86-64).
    from . import _fastspawn  # type: ignore[attr-defined]

    if not hasattr(_fastspawn, "sandbox"):  # pragma: no cover - a stale build of an older version
        _fastspawn = None
except ImportError:  # pragma: no cover - not built on this platform
    _fastspawn = None

_plan_cache: Dict[Tuple[Tuple[str, ...], Tuple[str, ...], bool, Tuple[str, ...], int, int], mounts.Plan] = {}


def host_plan(writable: Tuple[str, ...], cwd: str, privileged: bool = False,
              visible: Tuple[str, ...] = ()) -> mounts.Plan:
    """The mount plan for these pass-throughs, computed once per process."""
    own = () if privileged else mounts.own_roots_for(os.geteuid(), (os.path.expanduser("~"), cwd))
    views = tuple(visible) + (cwd,)
    key = (writable, own, privileged, views, os.geteuid(), os.getegid())  # the plan's modes depend on who asks
    plan = _plan_cache.get(key)
    if plan is None:
        plan = _plan_cache[key] = mounts.host_plan(writable, own, privileged, views)
    return plan


def _step(step: str, fn: Callable[..., Any], *args: Any, detail: str = "") -> Any:
    try:
        return fn(*args)
    except OSError as e:
        err = e.errno or 0
        raise SetupError(step, err, detail or str(e), _HINTS.get((step, err), "")) from None


def _exit_code_for(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


# --------------------------------------------------------------------- child side

def _child_a(spec: SandboxSpec, plan: Optional[mounts.Plan], layers: Dict[str, str], cg: SandboxCgroup,
             caller: int, chan_w: int, dump_w: int, uid: int, gid: int) -> None:
    """Runs in A; never returns."""

    def body() -> int:
        if sys.platform.startswith("linux"):
            from .namespaces import FLAGS, die_with_parent, sethostname, write_id_maps

            _step("die-with-parent", die_with_parent)
            if os.getppid() != caller:  # the caller died before PDEATHSIG was armed
                os._exit(SETUP_EXIT)
            if isinstance(spec.payload, CallablePayload):
                # Leave the caller's session and process group: otherwise
                # os.killpg(0, sig) in the payload signals the caller and its
                # whole group.  (A command keeps the terminal's job control.)
                os.setsid()
            _step("cgroup", cg.join_self)
            flags = 0
            for name, state in layers.items():
                if state == "applied":
                    flags |= FLAGS[name]
            if plan is not None and plan.prefix:
                # Privileged caller: build the whole tree as real root (one
                # overlay for the root filesystem), then enter the user
                # namespace, whose copy of the mount namespace it owns.  The
                # cgroup namespace is made here too, owned by the host's user
                # namespace: a sandbox whose root is the host's uid 0 (owner
                # of the cgroup files) must not be able to mount its cgroup
                # hierarchy and lift its own limits.
                first = FLAGS["mount"] | (FLAGS["cgroup"] if flags & FLAGS["cgroup"] else 0)
                _step("unshare", _unshare, first)
                flags &= ~FLAGS["cgroup"]
                _build_root(plan)
            if flags:
                _step("unshare", _unshare, flags)
            if layers.get("user") == "applied":
                inside_uid, inside_gid = (0, 0) if spec.root else (uid, gid)
                proc = mounts.OLDROOT + "/proc" if plan is not None and plan.prefix else "/proc"
                _step("id maps", write_id_maps, inside_uid, uid, inside_gid, gid, proc)
            if plan is not None and not plan.prefix:
                _build_root(plan)
            if layers.get("network") == "applied":
                from .network import loopback_up

                _step("loopback", loopback_up)
            if layers.get("uts") == "applied":
                _step("hostname", sethostname, spec.hostname)
        else:
            os.setpgid(0, 0)
        b = _fork()
        if b == 0:
            _child_b(spec, plan, layers, cg, chan_w, dump_w)
        ch.send(ch.SPAWNED, {"init": b}, fd=chan_w)
        _, status = os.waitpid(b, 0)
        return _exit_code_for(status)

    _exit_after(chan_w, "sandbox", body)


def _exit_after(chan_w: int, step: str, body: Callable[[], int]) -> None:
    """Run ``body`` in a sandbox process and ``_exit`` with its status; a
    failure becomes a setup-error frame.  Never returns: a forked child must
    not fall back into the caller's code."""
    code = SETUP_EXIT
    try:
        code = body()
    except SetupError as e:
        _report_setup(chan_w, e)
    except BaseException as e:
        _report_setup(chan_w, SetupError(step, 0, f"{type(e).__name__}: {e}"))
    finally:
        os._exit(code)


SPAWN_ENV = "ISOLATE_RUNTIME_SPAWN"
SPAWN_MODES = ("auto", "fork")


def _spawn_mode() -> str:
    mode = os.environ.get(SPAWN_ENV, "") or "auto"
    if mode not in SPAWN_MODES:
        raise SetupError("spawn", 0, f"{SPAWN_ENV}={mode!r} (from the environment) is not one of: "
                         f"{', '.join(SPAWN_MODES)}", f"unset {SPAWN_ENV} or set it to 'fork'")
    return mode


def _fast_path_for(spec: SandboxSpec, layers: Dict[str, str]) -> bool:
    return (_fastspawn is not None and isinstance(spec.payload, CallablePayload)
            and layers.get("pid") == "applied" and _spawn_mode() != "fork")


def _build_root(plan: mounts.Plan) -> None:
    mounts.execute(mounts.root_calls(plan))


def _unshare(flags: int) -> None:
    from ._syscalls import unshare

    unshare(flags)


def _report_setup(chan_w: int, err: SetupError) -> None:
    try:
        ch.send(ch.SETUP_ERROR, err, fd=chan_w)
    except BaseException:
        pass


def _enter_root(spec: SandboxSpec, plan: Optional[mounts.Plan], layers: Dict[str, str]) -> int:
    """In the sandbox's first process inside the PID namespace: fresh /proc,
    detach the host tree, chdir.  Returns the upper-layer fd (or -1)."""
    upper_fd = -1
    if plan is not None:
        proc = mounts.proc_calls(plan) if layers.get("pid") == "applied" else mounts.host_proc_calls(plan)
        upper_fd = mounts.execute(proc + mounts.finish_calls(plan))
    _chdir(spec, plan)
    return upper_fd


def _chdir(spec: SandboxSpec, plan: Optional[mounts.Plan]) -> None:
    cwd = spec.cwd or os.getcwd()
    try:
        os.chdir(cwd)
    except OSError:
        if plan is None:
            raise
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)


def _send_written(plan: Optional[mounts.Plan], upper_fd: int, chan_w: int) -> None:
    if upper_fd >= 0 and plan is not None:
        try:
            ch.send(ch.WRITTEN, tuple(mounts.written_paths(plan, upper_fd)), fd=chan_w)
        except OSError:
            pass


def _program(spec: SandboxSpec, plan: Optional[mounts.Plan], layers: Dict[str, str], join: Sequence[str],
             caller: int, uid: int, gid: int) -> List[List[mounts.Call]]:
    """Everything :func:`_child_a` and :func:`_enter_root` do, as kernel calls
    for the C executor (in segments; the plan's are cached with their wire
    form): A's part up to SPAWN, then PID 2's."""
    from .namespaces import FLAGS

    C = mounts.Call
    segments: List[List[mounts.Call]] = []
    calls = [C(mounts.PDEATHSIG, "die-with-parent"), C(mounts.CHECK_PPID, "die-with-parent", (), caller),
             C(mounts.SETSID, "sandbox")]
    calls += [C(mounts.WRITE, "cgroup", (path, "0")) for path in join]
    flags = 0
    for name, state in layers.items():
        if state == "applied":
            flags |= FLAGS[name]
    if plan is not None and plan.prefix:
        # Privileged caller: the tree is built as real root, then the user
        # namespace is entered, whose copy of the mount namespace it owns;
        # the cgroup namespace is owned by the host's user namespace (a
        # sandbox whose root is the host's uid 0 must not be able to mount
        # its cgroup hierarchy and lift its own limits).
        first = FLAGS["mount"] | (flags & FLAGS["cgroup"])
        flags &= ~FLAGS["cgroup"]
        calls.append(C(mounts.UNSHARE, "unshare", (), first))
        segments += [calls, _root_calls(plan)]
        calls = []
    if flags:
        calls.append(C(mounts.UNSHARE, "unshare", (), flags))
    if layers.get("user") == "applied":
        inside_uid, inside_gid = (0, 0) if spec.root else (uid, gid)
        proc = mounts.OLDROOT + "/proc" if plan is not None and plan.prefix else "/proc"
        calls += [C(mounts.WRITE, "id maps", (f"{proc}/self/uid_map", f"{inside_uid} {uid} 1\n")),
                  C(mounts.WRITE, "id maps", (f"{proc}/self/setgroups", "deny\n"), 1),
                  C(mounts.WRITE, "id maps", (f"{proc}/self/gid_map", f"{inside_gid} {gid} 1\n"))]
    if plan is not None and not plan.prefix:
        segments += [calls, _root_calls(plan)]
        calls = []
    if layers.get("network") == "applied":
        calls.append(C(mounts.LO_UP, "loopback"))
    if layers.get("uts") == "applied":
        calls.append(C(mounts.SETHOSTNAME, "hostname", (spec.hostname,)))
    calls += [C(mounts.SPAWN, "spawn"), C(mounts.PDEATHSIG, "die-with-parent")]
    segments.append(calls)
    if plan is not None:
        segments.append(_enter_calls(plan))
    return segments


_cache: Dict[Tuple[str, int], Tuple[mounts.Plan, List[mounts.Call], bytes]] = {}


def _cached(kind: str, plan: mounts.Plan, make: Callable[[mounts.Plan], List[mounts.Call]]) -> List[mounts.Call]:
    got = _cache.get((kind, id(plan)))
    if got is None or got[0] is not plan:
        calls = make(plan)
        got = _cache[(kind, id(plan))] = (plan, calls, _encode_calls(calls))
        _encoded[id(calls)] = (calls, got[2])
    return got[1]


def _root_calls(plan: mounts.Plan) -> List[mounts.Call]:
    return _cached("root", plan, mounts.root_calls)


def _enter_calls(plan: mounts.Plan) -> List[mounts.Call]:
    return _cached("enter", plan, lambda p: mounts.proc_calls(p) + mounts.finish_calls(p))


#: id of a cached list of calls -> (the list, its wire form)
_encoded: Dict[int, Tuple[List[mounts.Call], bytes]] = {}


def _encode_calls(calls: Sequence[mounts.Call]) -> bytes:
    """The wire form _fastspawn.c decodes: ``<BBBxq`` code, 0, number of
    arguments, integer; each argument as ``<I`` length and NUL-terminated bytes."""
    out = []
    for c in calls:
        out.append(struct.pack("<BBBxq", c.code, 0, len(c.args), c.num))
        for a in c.args:
            b = os.fsencode(a) + b"\0"
            out.append(struct.pack("<I", len(b)))
            out.append(b)
    return b"".join(out)


def _encode(segments: Sequence[List[mounts.Call]]) -> bytes:
    out = []
    for seg in segments:
        got = _encoded.get(id(seg))
        out.append(got[1] if got is not None and got[0] is seg else _encode_calls(seg))
    return b"".join(out)


def _payload_after_spawn(spec: SandboxSpec, plan: Optional[mounts.Plan], layers: Dict[str, str], cg: SandboxCgroup,
                         chan_w: int, dump_w: int, upper_fd: int) -> None:
    """PID 2 of the C executor's sandbox (see _fastspawn.c), back in Python
    with the root switched: the payload; never returns."""

    def body() -> int:
        _chdir(spec, plan)
        code = _run_payload(spec, layers, cg, chan_w, dump_w)
        _send_written(plan, upper_fd, chan_w)
        return code

    _exit_after(chan_w, "init", body)


def _child_b(spec: SandboxSpec, plan: Optional[mounts.Plan], layers: Dict[str, str], cg: SandboxCgroup,
             chan_w: int, dump_w: int) -> None:
    """PID 1 of the sandbox (or a plain reaper without a PID namespace)."""

    def body() -> int:
        upper_fd = -1
        if sys.platform.startswith("linux"):
            from .namespaces import die_with_parent

            die_with_parent()
            if layers.get("pid") != "applied":
                import prctl

                prctl.set_child_subreaper(1)
            upper_fd = _enter_root(spec, plan, layers)
        c = _fork()
        if c == 0:
            _child_c(spec, layers, cg, chan_w, dump_w)
        for sig in FORWARDED:
            signal.signal(sig, _forwarder(c))
        code = SETUP_EXIT
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == c:
                ch.write_frame(chan_w, ch.STATUS, struct.pack(">i", status))
                code = _exit_code_for(status)
                break
        _send_written(plan, upper_fd, chan_w)
        return code

    _exit_after(chan_w, "init", body)


def _forwarder(pid: int) -> Callable[[int, Any], None]:
    def forward(sig: int, _frame: Any) -> None:
        try:
            os.kill(pid, sig)
        except OSError:
            pass

    return forward


def _child_c(spec: SandboxSpec, layers: Dict[str, str], cg: SandboxCgroup, chan_w: int, dump_w: int) -> None:
    """The payload process of the two-fork design; never returns."""
    code = 1
    try:
        if sys.platform.startswith("linux"):
            from .namespaces import die_with_parent

            die_with_parent()
        code = _run_payload(spec, layers, cg, chan_w, dump_w)
    finally:
        os._exit(code)


def _run_payload(spec: SandboxSpec, layers: Dict[str, str], cg: SandboxCgroup, chan_w: int, dump_w: int) -> int:
    """Limits, privileges, then the callable (result framed) or the command
    (exec).  Returns the exit status to use."""
    if sys.platform.startswith("linux"):
        import resource

        from .namespaces import drop_privileges, maps_host_root

        for res, limit in cg.child_rlimits():
            resource.setrlimit(res, (limit, limit))
        if layers.get("user") == "applied" and not spec.root and not maps_host_root():
            drop_privileges()
    gate = _gate_fd
    if gate >= 0:
        # Held by prepare(): wait for the release (EOF: the caller is gone).
        try:
            released = os.read(gate, 1)
        except OSError:
            released = b""
        os.close(gate)
        if not released:
            os._exit(0)  # nobody is left to read a result
    payload = spec.payload
    if isinstance(payload, CommandPayload):
        env = dict(payload.env) if payload.env is not None else dict(os.environ)
        try:
            os.execvpe(payload.argv[0], list(payload.argv), env)
        except OSError as e:
            _report_setup(chan_w, SetupError("exec", e.errno or 0, f"cannot execute {payload.argv[0]!r}",
                                             "is it installed and on PATH inside the sandbox?"))
        return 127
    assert isinstance(payload, CallablePayload)
    faulthandler.register(DUMP_SIGNAL, file=dump_w, all_threads=True, chain=False)
    ch.set_write_fd(chan_w)
    try:
        value = payload.fn(*payload.args, **dict(payload.kwargs))
    except BaseException as exc:
        tb = traceback.format_exc()
        try:
            body = pickle.dumps((exc, repr(exc), tb), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            body = pickle.dumps((None, repr(exc), tb), protocol=pickle.HIGHEST_PROTOCOL)
        ch.write_frame(chan_w, ch.RAISED, body)
        return 1
    try:
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        ch.write_frame(chan_w, ch.RAISED, pickle.dumps(
            (None, f"PayloadLost('return value could not be pickled: {exc!r}')", ""), protocol=4))
        return 1
    ch.write_frame(chan_w, ch.RESULT, body)
    return 0


# -------------------------------------------------------------------- parent side

class _Run:
    def __init__(self, spec: SandboxSpec, on_message: Optional[Callable[[Any], None]],
                 calls: Optional[Sequence[mounts.Call]] = None) -> None:
        self.spec = spec
        self.calls = calls
        self.on_message = on_message
        self.init_pid: Optional[int] = None
        self.payload_pid: Optional[int] = None
        self.setup_error: Optional[SetupError] = None
        self.value: Any = None
        self.has_value = False
        self.raised: Optional[Tuple[Optional[BaseException], str, str]] = None
        self.status: Optional[int] = None
        self.written: Tuple[str, ...] = ()

    def dispatch(self, kind: int, body: bytes) -> None:
        if kind == ch.STATUS:
            self.status = struct.unpack(">i", body)[0]
            return
        if kind == ch.SPAWNED_PIDS:
            self.init_pid, self.payload_pid = struct.unpack(">ii", body)
            return
        if kind == ch.CALL_FAILED:
            index, err = struct.unpack(">Ii", body)
            call = self.calls[index] if self.calls is not None and index < len(self.calls) else None
            step = call.step if call is not None else "sandbox"
            what = call.describe() if call is not None else f"call {index}"
            self.setup_error = SetupError(step, err, what, _HINTS.get((step, err), ""))
            return
        try:
            obj = pickle.loads(body)
        except Exception as e:
            if kind == ch.RESULT:
                self.raised = (PayloadLost(f"return value could not be unpickled: {e!r}"), "", "")
            return
        if kind == ch.MESSAGE:
            if self.on_message is not None:
                self.on_message(obj)
        elif kind == ch.RESULT:
            self.value, self.has_value = obj, True
        elif kind == ch.RAISED:
            self.raised = obj
        elif kind == ch.SPAWNED:
            self.init_pid = obj.get("init")
            self.payload_pid = obj.get("payload")
        elif kind == ch.SETUP_ERROR:
            self.setup_error = obj
        elif kind == ch.WRITTEN:
            self.written = tuple(obj)


def effective_layers(spec: SandboxSpec) -> Dict[str, str]:
    """Which layers to apply: ``{layer: "applied" | why not}``."""
    from .probe import probe

    caps = probe()
    out: Dict[str, str] = {}
    for name in LAYERS:
        mode = spec.layers.get(name, "off")
        if mode == "off":
            out[name] = "off" if not (name == "network" and spec.network == "host") else "off (network='host')"
            continue
        layer = caps.layers.get(name)
        if layer is not None and layer.available:
            out[name] = "applied"
        else:
            why = layer.reason if layer is not None else "not probed"
            if mode == "required":
                raise UnsupportedError(name, why, layer.fix if layer is not None else "")
            out[name] = f"unavailable: {why}"
    if out.get("user") != "applied":
        # Without a user namespace nothing else can be created by an
        # unprivileged caller, and a privileged one would hand the payload
        # real root powers over the host: fall back to a plain fork.
        for name in LAYERS:
            if out[name] == "applied":
                out[name] = "unavailable: needs the user namespace"
    return out


def run(spec: SandboxSpec, on_message: Optional[Callable[[Any], None]] = None) -> SandboxResult:
    """Run ``spec.payload`` in a fresh sandbox and return how it ended.

    ``on_message`` is called in this process, in order, with every object the
    payload passes to :func:`isolate_runtime.send_message`, as soon as it is
    read.  Must be called from the main thread (the sandbox dies with the
    thread that forked it).
    """
    return _launch(spec, hold=False).wait(on_message)


def prepare(spec: SandboxSpec) -> "PreparedSandbox":
    """Build the sandbox for ``spec`` now, up to the moment its payload would
    start, and hold it there: :meth:`PreparedSandbox.run` releases it and
    returns what :func:`run` would; :meth:`PreparedSandbox.discard` ends it
    unrun.  The payload is the caller's state *now* (a fork): prepare while
    the caller waits for something else, e.g. the sandbox before it.

    Its timeout and wall time count from the release; its CPU and memory
    figures include its own setup, as with :func:`run`.  Every prepared
    sandbox is discarded by :func:`settle` (and at exit) if still held.
    """
    return _launch(spec, hold=True)


class PreparedSandbox:
    """A sandbox built and waiting for its payload to be released."""

    def __init__(self, spec: SandboxSpec, limits: Dict[str, Any], layers: Optional[Dict[str, str]] = None,
                 error: Optional[BaseException] = None) -> None:
        self.spec = spec
        self._limits = limits
        self._layers = layers or {}
        self._error = error
        self._pid = -1
        self._cg: Optional[SandboxCgroup] = None
        self._fds: Tuple[int, int, int] = (-1, -1, -1)  # chan_r, dump_r, go_w
        self._calls: Optional[List[mounts.Call]] = None
        self._t0 = 0.0
        self._done = False

    @property
    def held(self) -> bool:
        """Built and neither released nor discarded."""
        return not self._done and self._fds[2] >= 0

    def run(self, on_message: Optional[Callable[[Any], None]] = None) -> SandboxResult:
        """Release the payload and wait for the sandbox, as :func:`run`."""
        self.release()
        return self.wait(on_message)

    def release(self) -> None:
        """Let the payload start (its timeout starts now); then :meth:`wait`."""
        if self._done:
            raise RuntimeError("this prepared sandbox was already run or discarded")
        chan_r, dump_r, go_w = self._fds
        if go_w >= 0:
            self._t0 = time.perf_counter()
            try:
                os.write(go_w, b"g")
            except OSError:  # it died while held: its status says why
                pass
            _forget_fd(go_w)
            self._fds = (chan_r, dump_r, -1)

    def discard(self) -> None:
        """End the held sandbox without running its payload (no-op once run)."""
        if self._done:
            return
        self._done = True
        if self._error is not None or self._cg is None:
            return
        if self in _held:
            _held.remove(self)
        for fd in self._fds:
            _forget_fd(fd)
        # (EOF on its gate would end the payload unrun, but the C executor's
        # A and PID 1 hold copies of the gate: end the whole sandbox.)
        _kill(self._pid, None, self._cg)
        _tearing_down.append((self._pid, self._cg, time.monotonic()))

    def wait(self, on_message: Optional[Callable[[Any], None]] = None) -> SandboxResult:
        """Wait for the released sandbox and return how it ended (see :func:`run`)."""
        if self._done:
            raise RuntimeError("this prepared sandbox was already run or discarded")
        if self._fds[2] >= 0:
            raise RuntimeError("release() the prepared sandbox before waiting for it")
        self._done = True
        if self in _held:
            _held.remove(self)
        if self._error is not None or self._cg is None:
            return SandboxResult(Outcome.SETUP_FAILED, error=self._error, limits=self._limits)
        spec, pid, cg = self.spec, self._pid, self._cg
        chan_r, dump_r, _go_w = self._fds
        state = _Run(spec, on_message, self._calls)
        deferred = False
        try:
            # Without cgroups the CPU figures come from wait4() on A: wait for it.
            defer = select_backend().name != "none"
            outcome, a_status, dump, budget_reason = _wait(spec, pid, cg, state, chan_r, dump_r, self._t0, defer)
            wall = time.perf_counter() - self._t0
            cg_stats = cg.read_stats()
            if a_status is None:
                _tearing_down.append((pid, cg, time.monotonic()))
                deferred = True
        finally:
            _forget_fd(chan_r)
            _forget_fd(dump_r)
            if not deferred:
                _close(cg)
        return _result(spec, state, outcome, a_status, dump, budget_reason, wall, cg_stats, self._layers,
                       self._limits, cg)


#: Sandboxes prepared and not yet released or discarded.
_held: List[PreparedSandbox] = []
#: File descriptors this process holds for sandboxes in flight (read ends of
#: their channels, the write end of a held one's gate): a sandbox forked
#: meanwhile closes them first, so no sandbox holds another's.
_parent_fds: Set[int] = set()
#: In a child being forked for a held sandbox: the read end of its gate.
_gate_fd = -1


def _forget_fd(fd: int) -> None:
    if fd < 0:
        return
    _parent_fds.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass


def _close_parent_fds() -> None:
    """In a freshly forked sandbox process: drop the caller's ends of the
    other sandboxes' pipes (and of this one's)."""
    for fd in _parent_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _parent_fds.clear()
    _held.clear()
    _tearing_down.clear()


def _launch(spec: SandboxSpec, hold: bool) -> PreparedSandbox:
    global _gate_fd
    limits_dict = {k: v for k, v in vars(spec.limits).items() if v is not None}
    try:
        layers = effective_layers(spec)
        _spawn_mode()
    except (UnsupportedError, SetupError) as e:
        return PreparedSandbox(spec, limits_dict, error=e)
    if spec.cwd is None:
        # resolved here: inside the sandbox the default would be read after
        # the root switch
        spec = spec.replace(cwd=os.getcwd())
    assert spec.cwd is not None
    prepared = PreparedSandbox(spec, limits_dict, layers)
    plan = None
    if layers.get("mount") == "applied":
        from .probe import probe

        plan = host_plan(spec.writable, spec.cwd, probe().privileged_mounts, spec.visible)
    cg = _cgroup_for(spec)
    uid, gid = os.geteuid(), os.getegid()
    chan_r, chan_w = os.pipe()
    dump_r, dump_w = os.pipe()
    go_r = go_w = -1
    if hold:
        go_r, go_w = os.pipe()
    _parent_fds.update(fd for fd in (chan_r, dump_r, go_w) if fd >= 0)
    caller = os.getpid()
    t0 = time.perf_counter()
    frozen = False
    join = cg.join_files() if _fast_path_for(spec, layers) else None
    calls: Optional[List[mounts.Call]] = None
    program = b""
    if join is not None:
        segments = _program(spec, plan, layers, join, caller, uid, gid)
        program = _encode(segments)
        calls = [c for seg in segments for c in seg]
    pid = -1
    try:
        gc.freeze()  # the child's collections then skip every inherited object
        frozen = True
        _gate_fd = go_r
        if calls is not None:
            assert _fastspawn is not None
            pid, _init, _payload, upper_fd = _fastspawn.sandbox(program, chan_w)
            if pid == 0:
                _close_parent_fds()
                _payload_after_spawn(spec, plan, layers, cg, chan_w, dump_w, upper_fd)
        else:
            pid = _fork()
        if pid == 0:
            _close_parent_fds()
            _child_a(spec, plan, layers, cg, caller, chan_w, dump_w, uid, gid)
    finally:
        _gate_fd = -1
        if frozen:
            gc.unfreeze()
        os.close(chan_w)
        os.close(dump_w)
        if go_r >= 0:
            os.close(go_r)
    set_root = getattr(cg, "set_root_pid", None)
    if set_root is not None:
        set_root(pid)
    prepared._pid, prepared._cg, prepared._calls, prepared._t0 = pid, cg, calls, t0
    prepared._fds = (chan_r, dump_r, go_w)
    if hold:
        _held.append(prepared)
    # While the sandbox sets itself up: the next one's cgroup, and the
    # teardown of the ones before it.
    _make_spare(spec)
    if _tearing_down:
        _reap_finished()
    return prepared


# Sandboxes whose payload has exited and been reported, while their namespaces
# are still being torn down (pid of A, its cgroup, when it was handed over).
# Reaping them and removing their cgroups is kept off the caller's critical
# path: done at the next run() and at exit, or by settle().
_tearing_down: List[Tuple[int, SandboxCgroup, float]] = []
#: After this long a sandbox still tearing down is killed.
TEARDOWN_GRACE = 5.0


def _close(cg: SandboxCgroup) -> None:
    try:
        cg.close()
    except Exception:  # pragma: no cover - close() reports its own problems
        pass


def settle(timeout: float = TEARDOWN_GRACE) -> None:
    """Finish the teardown of every sandbox that :func:`run` already returned
    for: reap its processes and remove its cgroup (bounded by ``timeout``);
    discard every sandbox :func:`prepare` still holds; remove the cgroup made
    ahead for the next sandbox."""
    for held in list(_held):
        held.discard()
    _reap_finished(block_for=timeout)
    while _spare:
        owner, _limits, cg = _spare.pop()
        if owner == os.getpid():
            _close(cg)


#: A cgroup made ahead for the next sandbox, while the current one sets
#: itself up (creating one costs ~0.25 ms on the critical path otherwise):
#: (pid of the process that made it, its limits, the cgroup).
_spare: List[Tuple[int, Limits, SandboxCgroup]] = []


def _cgroup_for(spec: SandboxSpec) -> SandboxCgroup:
    while _spare:
        owner, limits, cg = _spare.pop()
        if owner != os.getpid():
            continue  # inherited by a fork: not ours to use or remove
        if limits == spec.limits:
            return cg
        _close(cg)
    return select_backend().create(spec.label or "sandbox", spec.limits)


def _make_spare(spec: SandboxSpec) -> None:
    backend = select_backend()
    if _spare or backend.name == "none":
        return
    try:
        _spare.append((os.getpid(), spec.limits, backend.create(spec.label or "sandbox", spec.limits)))
    except Exception:  # noqa: S110 - the next run() creates its own and reports a failure then
        pass


def _reap_finished(block_for: float = 0.0) -> None:
    """Reap what has finished; with ``block_for``, wait that long for the rest
    and then kill it.  A sandbox tearing down longer than TEARDOWN_GRACE is
    killed either way."""
    end = time.monotonic() + block_for
    while _tearing_down:
        now = time.monotonic()
        for entry in list(_tearing_down):
            pid, cg, since = entry
            if _reap(pid) is None:
                overdue = now - since >= TEARDOWN_GRACE or (block_for > 0 and now >= end)
                if not overdue:
                    continue
                _kill(pid, None, cg)
                if _reap(pid, timeout=1.0) is None:  # pragma: no cover - unkillable
                    continue
            _tearing_down.remove(entry)
            _close(cg)
        if not _tearing_down or block_for <= 0:
            return
        time.sleep(0.002)


atexit.register(settle)


def _wait(spec: SandboxSpec, pid: int, cg: SandboxCgroup, state: _Run, chan_r: int, dump_r: int,
          t0: float, defer_teardown: bool) -> Tuple[Optional[Outcome], Optional[Tuple[int, Any]], str, str]:
    """Wait for the sandbox with a deadline, dispatching frames as they come.
    Returns when A has exited, or (``defer_teardown``) as soon as A has
    reported the payload's exit; A's wait status is ``None`` then."""
    os.set_blocking(chan_r, False)
    os.set_blocking(dump_r, False)
    reader = ch.FrameReader(chan_r)
    pidfd = _pidfd_open(pid)
    deadline = t0 + spec.timeout_seconds if spec.timeout_seconds else None
    forced: Optional[Outcome] = None
    budget_reason = ""
    dump = b""
    a_status: Optional[Tuple[int, Any]] = None
    poll_every = 0.02
    try:
        while a_status is None:
            now = time.perf_counter()
            wait = poll_every
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            fds = [chan_r] if not reader.eof else []
            if pidfd is not None:
                fds.append(pidfd)
            try:
                ready, _, _ = select.select(fds, [], [], wait)
            except InterruptedError:  # pragma: no cover
                ready = []
            if chan_r in ready:
                for kind, body in reader.read_available():
                    state.dispatch(kind, body)
            if pidfd is None or pidfd in ready:
                got = _reap(pid)
                if got is not None:
                    a_status = got
                    break
            if defer_teardown and forced is None and state.status is not None and state.payload_pid is not None:
                # The payload has exited and A has reported its status (the
                # last frame of the one-copy design): what is left is namespace
                # teardown, reaped later (see _tearing_down).
                break
            reason = cg.poll()
            if reason and forced is None:
                forced, budget_reason = Outcome.CPU_BUDGET, reason
                _kill(pid, state.init_pid, cg)
            if deadline is not None and time.perf_counter() >= deadline and forced is None:
                forced = Outcome.TIMEOUT
                # PID 1 forwards the signal in the two-fork design; the C init
                # does not, so signal the payload itself when we know it.
                dump = _dump_stacks(state.payload_pid or state.init_pid, dump_r, spec.timeout_grace_seconds)
                _kill(pid, state.init_pid, cg)
                deadline = None
        # A has exited: every writer is gone (A waited for B, whose exit
        # killed the namespace).  Drain what is left, bounded.  (Or A is
        # tearing down after its last frame: nothing is left to read.)
        end = time.perf_counter() + 2.0
        while a_status is not None and not reader.eof and time.perf_counter() < end:
            ready, _, _ = select.select([chan_r], [], [], 0.05)
            if not ready:
                break
            for kind, body in reader.read_available():
                state.dispatch(kind, body)
        if a_status is not None and (forced is not None or cg.procs()):
            cg.kill()  # nothing of the sandbox outlives it
        try:
            dump += os.read(dump_r, 1 << 20)
        except (BlockingIOError, OSError):
            pass
    except BaseException:
        _kill(pid, state.init_pid, cg)
        _reap(pid, timeout=5.0)
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return forced, a_status, trim_dump(dump.decode("utf-8", "replace")), budget_reason


def trim_dump(text: str) -> str:
    """Drop the frames below the payload (the runtime's own, and the caller's
    that the fork inherited) from each thread's faulthandler stack."""
    out: List[str] = []
    skipping = False
    for line in text.splitlines():
        if not line.startswith("  "):  # "Current thread ..." / "Thread ..." / blank
            skipping = False
        elif skipping or f"{os.sep}isolate_runtime{os.sep}" in line:
            skipping = True
            continue
        out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def _pidfd_open(pid: int) -> Optional[int]:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _reap(pid: int, timeout: float = 0.0) -> Optional[Tuple[int, Any]]:
    end = time.perf_counter() + timeout
    while True:
        try:
            got, status, rusage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return (0, None)
        if got == pid:
            return (status, rusage)
        if time.perf_counter() >= end:
            return None
        time.sleep(0.005)


def _dump_stacks(target: Optional[int], dump_r: int, grace: float) -> bytes:
    if target is None:
        return b""
    try:
        os.kill(target, DUMP_SIGNAL)
    except OSError:
        return b""
    out = b""
    end = time.perf_counter() + max(0.05, min(grace, 5.0))
    quiet_since = None
    while time.perf_counter() < end:
        ready, _, _ = select.select([dump_r], [], [], 0.02)
        if ready:
            try:
                chunk = os.read(dump_r, 65536)
            except BlockingIOError:
                chunk = b""
            if chunk:
                out += chunk
                quiet_since = None
                continue
        if out:
            quiet_since = quiet_since or time.perf_counter()
            if time.perf_counter() - quiet_since > 0.05:
                break
    return out


def _kill(pid: int, init_pid: Optional[int], cg: SandboxCgroup) -> None:
    for target in (init_pid, pid):
        if target:
            try:
                os.kill(target, signal.SIGKILL)  # killing PID 1 kills its whole namespace
            except OSError:
                pass
    if not sys.platform.startswith("linux"):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        cg.kill()
    except Exception:
        pass


def _result(spec: SandboxSpec, state: _Run, forced: Optional[Outcome], a_status: Optional[Tuple[int, Any]],
            dump: str, budget_reason: str, wall: float, cg_stats: Any, layers: Dict[str, str],
            limits: Dict[str, Any], cg: SandboxCgroup) -> SandboxResult:
    rusage = a_status[1] if a_status else None

    sampled = cg_stats.cpu_user_seconds.source.startswith("psutil")

    def pick(fig: Figure, fallback: Optional[float], source: str) -> Figure:
        # Without cgroups the caller's wait4() rusage (every reaped
        # descendant) beats sampling, which misses the last interval.
        if fallback is not None and (fig.value is None or sampled):
            return Figure(fallback, source)
        return fig

    stats = ResourceStats(
        wall_seconds=wall,
        cpu_user_seconds=pick(cg_stats.cpu_user_seconds, rusage.ru_utime if rusage else None, "rusage"),
        cpu_system_seconds=pick(cg_stats.cpu_system_seconds, rusage.ru_stime if rusage else None, "rusage"),
        peak_memory_bytes=cg_stats.peak_memory_bytes,
        oom_kills=cg_stats.oom_kills,
        throttled_seconds=cg_stats.throttled_seconds,
        pids_peak=cg_stats.pids_peak,
        pids_limit_hits=cg_stats.pids_limit_hits,
        io_read_bytes=cg_stats.io_read_bytes,
        io_write_bytes=cg_stats.io_write_bytes,
    )
    applied = dict(getattr(cg, "applied_limits", {}) or limits)
    common: Dict[str, Any] = dict(stats=stats, limits=applied, layers=layers, written_paths=state.written,
                                  stack_dump=dump)
    status = state.status
    exit_code = sig = None
    if status is not None:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
        elif os.WIFEXITED(status):
            exit_code = os.WEXITSTATUS(status)
    elif a_status is not None and a_status[1] is not None:
        st = a_status[0]
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
        elif os.WIFEXITED(st) and os.WEXITSTATUS(st) != SETUP_EXIT:
            exit_code = os.WEXITSTATUS(st)
    oom = (stats.oom_kills.value or 0) > 0
    mem_limit = applied.get("memory_bytes")
    if state.setup_error is not None and not state.has_value and state.raised is None:
        return SandboxResult(Outcome.SETUP_FAILED, error=state.setup_error, **common)
    if forced is Outcome.TIMEOUT:
        ev = f"limit {spec.timeout_seconds:g}s"
        thr = stats.throttled_seconds.value
        if thr:
            ev += f", throttled {thr:.2f}s by the CPU cap"
        return SandboxResult(Outcome.TIMEOUT, exit_code=exit_code, signal=sig, evidence=ev, **common)
    if forced is Outcome.CPU_BUDGET:
        return SandboxResult(Outcome.CPU_BUDGET, exit_code=exit_code, signal=sig, evidence=budget_reason, **common)
    budget = applied.get("cpu_time_seconds") or spec.limits.cpu_time_seconds
    if sig == signal.SIGXCPU and budget:
        # RLIMIT_CPU, the per-process backstop when there are no cgroups
        return SandboxResult(Outcome.CPU_BUDGET, signal=sig, evidence=f"SIGXCPU after the {budget:g} s CPU-time "
                             "budget (RLIMIT_CPU: per process, no cgroups here)", **common)
    if oom:
        peak = stats.peak_memory_bytes
        ev = f"oom_kill={int(stats.oom_kills.value or 0)} in the sandbox's own memory cgroup"
        if mem_limit:
            ev += f", limit {_mib(mem_limit)}"
        if peak.value is not None:
            ev += f", peak {_mib(peak.value)} ({peak.source})"
        return SandboxResult(Outcome.OOM, exit_code=exit_code, signal=sig, evidence=ev, **common)
    if state.has_value:
        return SandboxResult(Outcome.OK, exit_code=exit_code, _value=state.value, **common)
    if state.raised is not None:
        exc, text, tb = state.raised
        err = exc if exc is not None else PayloadLost(text)
        return SandboxResult(Outcome.RAISED, exit_code=exit_code, error=err, traceback=tb, **common)
    if sig is not None:
        return SandboxResult(Outcome.CRASHED, signal=sig, **common)
    if isinstance(spec.payload, CommandPayload) and exit_code == 0:
        return SandboxResult(Outcome.OK, exit_code=0, **common)
    if state.setup_error is not None:
        return SandboxResult(Outcome.SETUP_FAILED, error=state.setup_error, **common)
    return SandboxResult(Outcome.EXITED, exit_code=exit_code if exit_code is not None else -1, **common)


def _mib(n: float) -> str:
    return f"{n / 1048576:.0f} MiB"
