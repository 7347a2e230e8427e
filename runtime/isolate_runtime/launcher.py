"""Run one payload in a sandbox: the public API and the life of one sandbox.

::

    run(spec)            build, start and wait: the SandboxResult
    prepare(spec)        build now and hold the payload at its start
      .run() / .release() + .wait() / .discard()
    settle()             finish the teardowns still going on beside the caller

One :class:`PreparedSandbox` per sandbox, in one of these states::

    HELD ──release()──▶ RUNNING ──wait()──▶ ENDED
     └────discard()──▶ DISCARDED          (run() = release() + wait())

The modules below it, each with one job: :mod:`program` (the setup as
data), :mod:`spawn` (the processes, by either executor), :mod:`watch` (the
wait), :mod:`outcome` (the verdict), :mod:`written` (what the payload wrote),
:mod:`cgroups` (limits and figures).

A sandbox's end is the payload's end (the kernel's word: its process was
reaped); its PID 1 and cgroup are killed then, and their teardown (the
address space, the namespaces, the cgroup's removal) finishes beside the
caller: it is reaped at the next sandbox and at :func:`settle`.
"""
from __future__ import annotations

import atexit
import contextlib
import enum
import os
import select
import time
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple

from . import forward, mounts, outcome, program, relay, spawn, written
from .cgroups import SandboxCgroup, select_backend
from .cgroups.base import Planned
from .cgroups.keeper import Keeper
from .channel import OnMessage
from .errors import SetupError, UnsupportedError
from .result import Outcome, SandboxResult
from .spec import LAYERS, SandboxSpec
from .watch import POLL_EVERY, Control, Watch, kill, reap

_plan_cache: Dict[Tuple[Tuple[str, ...], Tuple[str, ...], bool, Tuple[str, ...], int, int, bool], mounts.Plan] = {}


def host_plan(writable: Tuple[str, ...], cwd: str, privileged: bool = False,
              visible: Tuple[str, ...] = (), xino: bool = False) -> mounts.Plan:
    """The mount plan for these pass-throughs, computed once per process."""
    own = () if privileged else mounts.own_roots_for(os.geteuid(), (os.path.expanduser("~"), cwd))
    views = tuple(visible) + (cwd,)
    # (the plan's modes depend on who asks)
    key = (writable, own, privileged, views, os.geteuid(), os.getegid(), xino)
    plan = _plan_cache.get(key)
    if plan is None:
        plan = _plan_cache[key] = mounts.host_plan(writable, own, privileged, views, xino)
    return plan


def effective_layers(spec: SandboxSpec) -> Dict[str, str]:
    """Which layers to apply: ``{layer: "applied" | why not}``."""
    from .probe import probe

    caps = probe()
    out: Dict[str, str] = {}
    for name in LAYERS:
        mode = spec.layers.get(name, "off")
        if mode == "off":
            shared = {"network": spec.network, "pid": spec.pid}.get(name) == "host"
            out[name] = f"off ({name}='host')" if shared else "off"
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


class State(enum.Enum):
    #: Built (or being built); the payload waits at its start.
    HELD = "held"
    #: The payload runs (or has run: wait() collects it).
    RUNNING = "running"
    #: Waited for: its result was returned.
    ENDED = "ended"
    #: Ended unrun (or never built: a setup error before the fork).
    DISCARDED = "discarded"


def run(spec: SandboxSpec, on_message: Optional[OnMessage] = None) -> SandboxResult:
    """Run ``spec.payload`` in a fresh sandbox and return how it ended.

    ``on_message`` is called in this process, in order, with every value the
    payload passes to :func:`isolate_runtime.send_message` (plain data), as
    soon as it is read; raising
    :class:`~isolate_runtime.channel.ProtocolViolation` from it ends the
    sandbox with outcome ``REJECTED``.  Must be called from the main thread
    (the sandbox dies with the thread that forked it).
    """
    sandbox = _launch(spec, hold=False)
    sandbox.state = State.RUNNING
    return sandbox.wait(on_message)


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
    """One sandbox, from its fork to its result (see the module docstring)."""

    def __init__(self, spec: SandboxSpec, limits: Dict[str, Any], layers: Optional[Dict[str, str]] = None,
                 error: Optional[BaseException] = None) -> None:
        self.spec = spec
        self.state = State.HELD if error is None else State.DISCARDED
        self._limits = limits
        self._layers = layers or {}
        self._error = error
        self._started: Optional[spawn.Started] = None
        self._program: Optional[program.Program] = None
        self._cg: Optional[SandboxCgroup] = None
        self._forwarding: Optional[relay.Forwarding] = None
        self._t0 = 0.0
        self._control: Optional[Control] = None
        self._watch: Optional[Watch] = None
        self._done = False
        #: When a step is due even if nothing of it is ready (wait_any).
        self._due = 0.0
        self._ended = False

    @property
    def held(self) -> bool:
        """Built and neither released nor discarded."""
        return self.state is State.HELD and self._started is not None and self._started.gate_w >= 0

    def run(self, on_message: Optional[OnMessage] = None) -> SandboxResult:
        """Release the payload and wait for the sandbox, as :func:`run`."""
        self.release()
        return self.wait(on_message)

    def release(self) -> None:
        """Let the payload start (its timeout starts now); then :meth:`wait`."""
        if self.state in (State.ENDED, State.DISCARDED) and self._error is None:
            raise RuntimeError("this prepared sandbox was already run or discarded")
        if self.state is not State.HELD:
            return
        self.state = State.RUNNING
        if self in _held:
            _held.remove(self)
        started = self._started
        if started is not None and started.gate_w >= 0:
            self._t0 = time.perf_counter()
            try:
                os.write(started.gate_w, b"g")
            except OSError:  # it died while held: its status says why
                pass
            spawn.forget_fd(started.gate_w)
            started.gate_w = -1

    def discard(self) -> None:
        """End the sandbox without its result: a held payload never runs, a
        released one is killed where it is (no-op once waited for)."""
        if self.state is State.RUNNING and self._error is None:
            self._cancel()
            return
        if self.state is not State.HELD:
            return
        self.state = State.DISCARDED
        if self in _held:
            _held.remove(self)
        started, cg = self._started, self._cg
        if started is None or cg is None:
            return
        control = Control(started.ctl, self._program or program.Program(()))
        control.read()
        kill(started, control, cg)
        if self._forwarding is not None:
            self._forwarding.end()
        _close_fds(started)
        _close_layers(control)
        _tearing_down.append(_Teardown(_children(started, control, set()), cg))

    def _cancel(self) -> None:
        """Kill a released sandbox, watched or not; what it sent is dropped."""
        started, cg, prog = self._started, self._cg, self._program
        if started is None or cg is None or prog is None or self._ended:
            self.state = State.DISCARDED
            return
        if self._watch is None:
            self._control = Control(started.ctl, prog)
            self._watch = Watch(started, self._control, cg, None, 0.0, self.spec.message_limit_bytes,
                                self._layers.get("pid") == "applied")
        self._watch.control.read()  # the pids it told so far: the kill needs them
        self._watch.abort()
        self._end()
        self.state = State.DISCARDED

    def wait(self, on_message: Optional[OnMessage] = None) -> SandboxResult:
        """Wait for the released sandbox and return how it ended (see :func:`run`)."""
        if self._error is not None:
            self.state = State.ENDED
            return SandboxResult(Outcome.SETUP_FAILED, error=self._error, limits=self._limits)
        self.watch(on_message)
        assert self._watch is not None
        try:
            while True:
                try:
                    ready, _, _ = select.select(self._watch.fds(), [], [], self._watch.wait_for())
                except InterruptedError:  # pragma: no cover
                    ready = []
                if self._watch.step(set(ready)):
                    break
        except BaseException:
            self._watch.abort()
            self._end()
            raise
        return self.result()

    # -------------------------------------------------------------- many in flight
    #
    # watch(), then step() whenever one of fds() is ready or wait_for() has
    # passed, until step() is true; then result().  wait() is that for one
    # sandbox; wait_any() for many at once.

    def watch(self, on_message: Optional[OnMessage] = None) -> None:
        """Start watching the released sandbox (its messages go to
        ``on_message`` as they are read).  A sandbox that could not be built
        has nothing to watch: :meth:`step` says it has ended, :meth:`result`
        why."""
        if self._error is not None:
            return
        if self.state is State.HELD:
            raise RuntimeError("release() the prepared sandbox before waiting for it")
        if self.state is not State.RUNNING or self._watch is not None:
            raise RuntimeError("this prepared sandbox was already run or discarded")
        started, cg, prog = self._started, self._cg, self._program
        assert started is not None and cg is not None and prog is not None
        spec = self.spec
        self._control = Control(started.ctl, prog)
        self._watch = Watch(started, self._control, cg, spec.timeout_seconds, spec.timeout_grace_seconds,
                            spec.message_limit_bytes, self._layers.get("pid") == "applied")
        if self._forwarding is not None:
            # the relay closes its side while the figures are read here
            self._watch.on_end = self._forwarding.end
        self._watch.begin(self._t0, on_message)

    def fds(self) -> List[Any]:
        return self._watch.fds() if self._watch is not None else []

    def wait_for(self) -> float:
        return self._watch.wait_for() if self._watch is not None else 0.0

    def _handover(self) -> Optional[Tuple[Optional[float], float, int, List[int]]]:
        """What the keeper needs to keep this sandbox's deadline (see
        :func:`busy`): None when there is none to keep."""
        if self._error is not None or self._done or self._watch is None:
            return None
        return self._watch.handover()

    def step(self, ready: Set[Any]) -> bool:
        """Make progress on what is ready; True once the sandbox has ended
        (then :meth:`result`)."""
        if self._error is not None:
            return True
        assert self._watch is not None
        self._done = self._done or self._watch.step(ready)
        self._due = time.perf_counter() + self._watch.wait_for()
        return self._done

    def _taken_back(self, drained: bytes, ended_at: Optional[float], fired: Tuple[Optional[float], ...]) -> None:
        """From :func:`busy`: what the keeper read of the result channel,
        when the payload ended (None: not seen), and, if the keeper met the
        deadline, ``(when it killed, or None)``."""
        if self._watch is not None and not self._done:
            self._watch.taken_back(drained, ended_at, fired[0] if fired else None, bool(fired))
            self._due = 0.0  # stepped at once

    def result(self) -> SandboxResult:
        """How the ended sandbox ended (after :meth:`step` said so)."""
        if self._error is not None:
            self.state = State.ENDED
            return SandboxResult(Outcome.SETUP_FAILED, error=self._error, limits=self._limits)
        watch, control, cg, prog = self._watch, self._control, self._cg, self._program
        assert watch is not None and control is not None and cg is not None and prog is not None
        self.state = State.ENDED
        obs = watch.obs
        fwd = self._forwarding
        network: Tuple[Tuple[str, ...], Tuple[str, ...]] = ((), ())
        try:
            obs = watch.finish()
            stats = outcome.resource_stats(obs.ended - self._t0, cg.read_stats(), obs.rusage)
            paths: Tuple[str, ...] = ()
            if prog.plan is not None and control.ready:
                paths = tuple(written.listing(control.layers, prog.plan.overlays, _known_top(prog.plan),
                                              prog.plan.reported))
            if fwd is not None:
                network = fwd.outcome(control.listen_errnos)
        finally:
            self._end()
        applied = dict(cg.applied_limits or self._limits)
        return outcome.decide(self.spec, obs, control.ready, stats, applied, self._layers, paths, network)

    def _end(self) -> None:
        self.state = State.ENDED
        started, control, cg = self._started, self._control, self._cg
        if started is None or control is None or cg is None or self._ended:
            return
        self._ended = True
        if self._forwarding is not None:
            self._forwarding.end()
        _close_layers(control)
        _close_fds(started)
        reaped = self._watch.obs.reaped if self._watch is not None else set()
        _tearing_down.append(_Teardown(_children(started, control, reaped), cg))


def wait_any(sandboxes: List[PreparedSandbox], timeout: Optional[float] = None) -> List[PreparedSandbox]:
    """Make progress on every watched sandbox at once (see
    :meth:`PreparedSandbox.watch`); return those that have ended (call
    :meth:`PreparedSandbox.result` on each), waiting at most ``timeout``."""
    fds: Dict[Any, List[PreparedSandbox]] = {}
    wait = timeout if timeout is not None else POLL_EVERY
    now = time.perf_counter()
    for sb in sandboxes:
        for fd in sb.fds():
            fds.setdefault(fd, []).append(sb)
        wait = min(wait, sb._due - now)
    try:
        ready, _, _ = select.select(list(fds), [], [], max(0.0, wait))
    except InterruptedError:  # pragma: no cover
        ready = []
    got = set(ready)
    # Only the sandboxes with something ready, or whose budget poll or
    # deadline is due: what one event costs does not grow with how many
    # sandboxes are in flight.
    now = time.perf_counter()
    stepped = {id(sb) for fd in ready for sb in fds[fd]}
    return [sb for sb in sandboxes if (id(sb) in stepped or now >= sb._due) and sb.step(got)]


@contextlib.contextmanager
def busy(sandboxes: Sequence[PreparedSandbox]) -> Iterator[None]:
    """Around work of the caller's that may take a while (a fixture's
    setup) while ``sandboxes`` run and nobody steps them: the keeper
    process watches them meanwhile.  It asks a sandbox still running at
    its deadline for its stacks and kills it a grace later, as
    :meth:`PreparedSandbox.step` would have; reads their result channels
    (no payload waits for the busy caller); and notes when each payload
    ended.  Afterwards what it read is taken as if read here, each sandbox
    whose deadline it met ends as a timeout, and one that ended has its
    end time.  Sandboxes without a deadline, or when no keeper can be
    started, are left as they were (met at the next step, if still
    running)."""
    handed: Dict[int, PreparedSandbox] = {}
    boxes: List[Tuple[int, Optional[float], float, int, List[int]]] = []
    for sb in sandboxes:
        got = sb._handover()
        if got is not None:
            handed[id(sb)] = sb
            boxes.append((id(sb), *got))
    # A message carries at most 253 descriptors (the kernel's SCM_MAX_FD):
    # several watches, a bounded number of sandboxes each.
    batches = [boxes[i:i + WATCH_BATCH] for i in range(0, len(boxes), WATCH_BATCH)]
    tickets: List[Tuple[int, List[Tuple[int, Optional[float], float, int, List[int]]]]] = []
    try:
        if boxes and not _keeper.running:
            _keeper.start()
            spawn.parent_fds.add(_keeper.fileno())
        for batch in batches:
            tickets.append((_keeper.watch(batch), batch))
    except Exception:  # noqa: S110 - without a keeper, the next step meets them
        pass
    finally:
        for _, _, _, _, fds in boxes:
            for fd in fds:
                os.close(fd)
    try:
        yield
    finally:
        for ticket, batch in tickets:
            if not ticket:
                continue
            seen = _keeper.unwatch(ticket)
            for box, deadline, _, _, _ in batch:
                sb = handed[box]
                if seen is None:
                    if deadline is not None and time.perf_counter() >= deadline:
                        sb._taken_back(b"", None, (None,))
                    continue
                sb._taken_back(seen.drained.get(box, b""), seen.ended.get(box),
                               (seen.fired[box],) if box in seen.fired else ())


#: Sandboxes per watch message: at most 6 descriptors each.
WATCH_BATCH = 32


def running_at_once(n: int) -> None:
    """Tell the runtime that the caller keeps ``n`` sandboxes running at
    once (see :meth:`~isolate_runtime.cgroups.base.CgroupBackend.weigh`):
    their cgroups then weigh together as much CPU as ``n`` processes."""
    select_backend().weigh(n)


def _known_top(plan: mounts.Plan) -> FrozenSet[str]:
    """Top-level names the plan itself puts in the sandbox's root."""
    return frozenset({op.target for op in plan.ops if op.target.count("/") == 1} | set(mounts.FIXED))


def _close_fds(started: spawn.Started) -> None:
    spawn.parent_fds.discard(started.ctl.fileno())
    started.ctl.close()
    spawn.forget_fd(started.chan_r)
    spawn.forget_fd(started.dump_r)
    spawn.forget_fd(started.gate_w)
    started.gate_w = -1


def _close_layers(control: Control) -> None:
    spawn.parent_fds.difference_update((control.layers.upper_fd, control.layers.root_fd))
    control.layers.close()


def _children(started: spawn.Started, control: Control, reaped: Set[int]) -> List[int]:
    """The caller's children of this sandbox still to be reaped: A; with the
    C executor also S and P (the kernel gave their pids to A, which told)."""
    out = [started.a_pid]
    if started.c_executor:
        out += [pid for pid in (control.s_pid, control.p_pid) if pid]
    return [pid for pid in out if pid not in reaped]


#: Sandboxes prepared and not yet released or discarded.
_held: List[PreparedSandbox] = []


class _Teardown:
    """A sandbox whose payload has ended, while its PID 1, the rest of its
    processes and its namespaces go away beside the caller."""

    def __init__(self, pids: List[int], cg: SandboxCgroup) -> None:
        self.pids = list(pids)
        self.cg = cg
        self.since = time.monotonic()

    def step(self, force: bool) -> bool:
        """Reap what has exited; with ``force``, kill what is left.  True
        once everything is gone and the cgroup removed."""
        if force:
            for pid in self.pids:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            try:
                self.cg.kill()
            except Exception:  # noqa: S110 - close() reports its own problems
                pass
        self.pids = [pid for pid in self.pids if reap(pid, 1.0 if force else 0.0) is None]
        if self.pids:
            return False
        dirs = self.cg.directories()
        if dirs and _keeper.running and _keeper.remove(dirs):
            return True  # it waits for the cgroup to empty, beside this process
        try:
            if self.cg.procs():
                if not force:
                    return False
                self.cg.kill()
        except Exception:  # noqa: S110 - a cgroup that is gone has no processes
            pass
        _close(self.cg)
        return True


_tearing_down: List[_Teardown] = []
#: After this long a sandbox still tearing down is killed.
TEARDOWN_GRACE = 5.0


def _close(cg: SandboxCgroup) -> None:
    try:
        cg.close()
    except Exception:  # pragma: no cover - close() reports its own problems
        pass


def _reap_finished(block_for: float = 0.0) -> None:
    """Reap what has finished; with ``block_for``, wait that long for the
    rest and then kill it.  A sandbox tearing down longer than
    TEARDOWN_GRACE is killed either way."""
    end = time.monotonic() + block_for
    while _tearing_down:
        now = time.monotonic()
        late = block_for > 0 and now >= end
        for entry in list(_tearing_down):
            if entry.step(force=late or now - entry.since >= TEARDOWN_GRACE):
                _tearing_down.remove(entry)
        if late or not _tearing_down or block_for <= 0:
            return  # what is still there (unkillable) is tried again next time
        time.sleep(0.002)


def settle(timeout: float = TEARDOWN_GRACE) -> None:
    """Finish the teardown of every sandbox that has ended: reap its
    processes and remove its cgroup (bounded by ``timeout``); discard every
    sandbox :func:`prepare` still holds; remove the cgroup made ahead for
    the next sandbox; stop the process that makes and removes cgroups (the
    next sandbox starts another) and the network relay (the next sandbox
    that forwards starts it again)."""
    for held in list(_held):
        held.discard()
    _reap_finished(block_for=timeout)
    relay.stop()
    while _spare:
        owner, planned, ticket = _spare.pop()
        if owner == os.getpid() and _keeper.made(ticket) is None:
            _keeper.remove(list(reversed(planned.to_make)))
    if _keeper.running:
        _keeper.sync(timeout)
        spawn.parent_fds.discard(_keeper.fileno())
        _keeper.stop()


atexit.register(settle)

#: The next sandbox's cgroup, named and being made by the keeper while the
#: current sandbox runs: (pid of the process that asked, its directories,
#: the keeper's ticket).
_spare: List[Tuple[int, Planned, int]] = []
#: Makes and removes the sandboxes' cgroups beside this process.
_keeper = Keeper()


def _cgroup_for(spec: SandboxSpec) -> SandboxCgroup:
    backend = select_backend()
    while _spare:
        owner, planned, ticket = _spare.pop()
        if owner != os.getpid():
            continue  # inherited by a fork: not ours to use or remove
        if _keeper.made(ticket) is None:
            try:
                return backend.adopt(planned, spec.limits)
            except Exception:  # noqa: S110 - made again below, where a failure is reported
                _keeper.remove(list(reversed(planned.to_make)))
    return backend.create(spec.label or "sandbox", spec.limits)


def _make_spare(spec: SandboxSpec) -> None:
    backend = select_backend()
    if _spare or not backend.makes_cgroups:
        return
    try:
        planned = backend.plan(spec.label or "sandbox", spec.limits)
        if planned is None:
            return
        if not _keeper.running:
            _keeper.start()
            spawn.parent_fds.add(_keeper.fileno())
        ticket = _keeper.make(planned.to_make)
        if ticket:
            _spare.append((os.getpid(), planned, ticket))
    except Exception:  # noqa: S110 - the next run() creates its own and reports a failure then
        pass


def _release(cg: SandboxCgroup) -> None:
    """Remove a dead sandbox's cgroup: by the keeper when there is one."""
    dirs = cg.directories()
    if dirs and _keeper.running and _keeper.remove(dirs):
        return
    _close(cg)


def _forget_inherited() -> None:
    """In any child forked from this process: the sandboxes above are the
    parent's, not its own."""
    _held.clear()
    _tearing_down.clear()
    _spare.clear()
    _keeper.forget()


os.register_at_fork(after_in_child=_forget_inherited)
_CAP_LAST = program.cap_last()


def _forwarding(spec: SandboxSpec, layers: Dict[str, str]) -> Optional[relay.Forwarding]:
    """The services relayed into this sandbox (None: nothing to forward, or
    no network namespace of its own: then it shares the host's network)."""
    if layers.get("network") != "applied" or (spec.network != "services" and not spec.forward):
        return None
    forwards = forward.for_sandbox(spec.network == "services", spec.forward)
    return relay.Forwarding(forwards) if forwards else None


def _launch(spec: SandboxSpec, hold: bool) -> PreparedSandbox:
    limits_dict = {k: v for k, v in vars(spec.limits).items() if v is not None}
    try:
        layers = effective_layers(spec)
        spawn.spawn_mode()
    except (UnsupportedError, SetupError) as e:
        return PreparedSandbox(spec, limits_dict, error=e)
    if spec.cwd is None:
        # resolved here: inside the sandbox the default would be read after
        # the root switch
        spec = spec.replace(cwd=os.getcwd())
    assert spec.cwd is not None
    sandbox = PreparedSandbox(spec, limits_dict, layers)
    plan = None
    if layers.get("mount") == "applied":
        from .probe import probe

        caps = probe()
        plan = host_plan(spec.writable, spec.cwd, caps.privileged_mounts, spec.visible, caps.overlay_xino)
    cg = _cgroup_for(spec)
    c_executor = spawn.c_executor_for(spec, layers.get("pid") == "applied")
    fwd = _forwarding(spec, layers)
    listen = [(f.address, f.port) for f in fwd.forwards] if fwd is not None else []
    prog = program.build(spec, layers, plan, tuple(cg.join_files() or ()), os.getpid(), os.geteuid(), os.getegid(),
                         _CAP_LAST, listen, (fwd.relay_fd, fwd.header()) if fwd is not None else (-1, ""))
    try:
        started = spawn.start(spec, prog, cg, c_executor, hold)
    except BaseException:
        if fwd is not None:
            fwd.end()
        raise
    sandbox._forwarding = fwd
    cg.set_root_pid(started.a_pid)
    sandbox._started, sandbox._cg, sandbox._program = started, cg, prog
    sandbox._t0 = time.perf_counter()
    if hold:
        _held.append(sandbox)
    # While the sandbox sets itself up: the next one's cgroup, and the
    # teardown of the ones before it.
    _make_spare(spec)
    if _tearing_down:
        _reap_finished()
    return sandbox
