"""prepare(): a sandbox built ahead and held until its payload is released."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, List, Tuple

import psutil
import pytest
from isolate_runtime import Outcome, PreparedSandbox, SandboxSpec, launcher, prepare
from isolate_runtime.spec import CallablePayload


def _mark(path: str) -> int:
    Path(path).write_text("ran")
    return os.getpid()


def _spec(fn: Any, *args: Any, **fields: Any) -> SandboxSpec:
    return SandboxSpec(payload=CallablePayload(fn, tuple(args)), **fields)


def _pipes() -> List[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            out.append(target)
    return out


def _pipe_ids(fds: "tuple[int, ...]") -> List[str]:
    return [f"pipe:[{os.fstat(fd).st_ino}]" for fd in fds if fd >= 0]


def test_the_payload_runs_only_when_released(full_isolation: None, tmp_path: Path) -> None:
    marker = str(tmp_path / "ran")
    held = prepare(_spec(_mark, marker, writable=(str(tmp_path),)))
    assert held.held
    time.sleep(0.3)  # fully set up by now
    assert not os.path.exists(marker)
    result = held.run()
    assert result.outcome is Outcome.OK, result.error
    assert result.value == 2  # PID 2 of its own PID namespace, as with run()
    assert Path(marker).read_text() == "ran"
    assert not held.held


def test_the_timeout_counts_from_the_release(full_isolation: None) -> None:
    held = prepare(_spec(time.sleep, 0.05, timeout_seconds=0.5))
    time.sleep(1.0)
    result = held.run()
    assert result.outcome is Outcome.OK, (result.outcome, result.evidence)
    assert result.stats.wall_seconds < 0.5


def test_a_discarded_sandbox_never_runs_and_leaves_nothing(full_isolation: None, tmp_path: Path) -> None:
    marker = str(tmp_path / "ran")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    held = prepare(_spec(_mark, marker, writable=(str(tmp_path),)))
    time.sleep(0.2)
    ours = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert ours, "the held sandbox has no processes"
    held.discard()
    launcher.settle()
    assert not os.path.exists(marker)
    assert not ours & {p.pid for p in psutil.Process().children(recursive=True)}
    assert not held.held
    held.discard()  # a second time: nothing to do


def test_a_sandbox_forked_while_another_is_held_holds_none_of_its_pipes(full_isolation: None) -> None:
    first = prepare(_spec(_pipes))
    theirs = _pipe_ids(_caller_fds(first))
    assert len(theirs) == 3  # the channel, the stack dump pipe, the gate
    second = prepare(_spec(_pipes))
    seen = second.run()
    assert seen.outcome is Outcome.OK, seen.error
    assert not set(theirs) & set(seen.value), (theirs, seen.value)
    first.discard()
    # and a plain run() started while one is held
    third = prepare(_spec(_pipes))
    theirs = _pipe_ids(_caller_fds(third))
    plain = launcher.run(_spec(_pipes))
    assert plain.outcome is Outcome.OK and not set(theirs) & set(plain.value)
    assert third.run().outcome is Outcome.OK


def _caller_fds(held: PreparedSandbox) -> Tuple[int, int, int]:
    started: Any = held._started
    return (started.chan_r, started.dump_r, started.gate_w)


def test_misuse_is_named(full_isolation: None) -> None:
    held: PreparedSandbox = prepare(_spec(int))
    with pytest.raises(RuntimeError, match=r"^release\(\) the prepared sandbox before waiting for it$"):
        held.wait()
    held.run()
    with pytest.raises(RuntimeError, match="^this prepared sandbox was already run or discarded$"):
        held.run()
    gone = prepare(_spec(int))
    gone.discard()
    with pytest.raises(RuntimeError, match="^this prepared sandbox was already run or discarded$"):
        gone.release()


def _sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def test_many_sandboxes_in_flight_are_watched_at_once(full_isolation: None) -> None:
    """wait_any makes progress on every sandbox together: a younger one's
    timeout is enforced while an older, slower one still runs."""
    from isolate_runtime import wait_any

    slow = prepare(_spec(_sleep_then, 1.5, 1))
    stuck = prepare(_spec(_sleep_then, 60, 2, timeout_seconds=0.3))
    quick = prepare(_spec(_sleep_then, 0.1, 3))
    flight = [slow, stuck, quick]
    messages: List[Any] = []
    for sb in flight:
        sb.release()
        sb.watch(messages.append)
    order = []
    t = time.monotonic()
    while flight:
        for sb in wait_any(flight, timeout=1.0):
            flight.remove(sb)
            order.append((sb, sb.result()))
    assert time.monotonic() - t < 5
    outcomes = {id(sb): r for sb, r in order}
    assert outcomes[id(quick)].value == 3 and outcomes[id(slow)].value == 1
    assert outcomes[id(stuck)].outcome is Outcome.TIMEOUT, outcomes[id(stuck)]
    assert [sb for sb, _ in order][0] is quick and [sb for sb, _ in order][-1] is slow


@pytest.mark.parametrize("watched", [False, True], ids=["released", "watched"])
def test_a_released_sandbox_that_is_discarded_is_killed(full_isolation: None, tmp_path: Path, watched: bool) -> None:
    """A sandbox released ahead of its turn whose result is no longer wanted
    (its copy went stale, or the session stops): nothing of it goes on."""
    from isolate_runtime import wait_any

    marker = str(tmp_path / "ran")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    sb = prepare(_spec(_sleep_then_mark, 1.0, marker, writable=(str(tmp_path),)))
    sb.release()
    if watched:
        sb.watch(None)
        assert wait_any([sb], timeout=0.3) == []
    else:
        time.sleep(0.3)
    sb.discard()
    launcher.settle()
    assert not {p.pid for p in psutil.Process().children(recursive=True)} - before
    time.sleep(1.0)
    assert not os.path.exists(marker)
    sb.discard()  # a second time: nothing to do
    with pytest.raises(RuntimeError, match="^this prepared sandbox was already run or discarded$"):
        sb.release()


def _sleep_then_mark(seconds: float, path: str) -> None:
    time.sleep(seconds)
    Path(path).write_text("ran")


def test_a_sandbox_that_could_not_be_built_ends_at_once_in_wait_any(monkeypatch: pytest.MonkeyPatch) -> None:
    from isolate_runtime import wait_any

    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", "bogus")
    sb = prepare(_spec(int))
    sb.release()
    sb.watch(None)
    assert wait_any([sb], timeout=5.0) == [sb]
    result = sb.result()
    assert result.outcome is Outcome.SETUP_FAILED and "ISOLATE_RUNTIME_SPAWN" in str(result.error)
