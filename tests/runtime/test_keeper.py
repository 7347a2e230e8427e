"""The cgroup keeper's batching: a dead sandbox's directories ride with the
next ``mkdir`` (one wake-up of the keeper per sandbox), and are never lost
on the way.  The keeper only makes and removes the directories it is
named, so plain directories stand in for cgroups here."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from isolate_runtime.cgroups import keeper as keeper_mod
from isolate_runtime.cgroups.keeper import HOLD_MAX, Keeper

from .cgroup_helpers import wait_for


@pytest.fixture
def keeper() -> Iterator[Keeper]:
    k = Keeper()
    k.start()
    try:
        yield k
    finally:
        k.stop()


def _make(k: Keeper, d: Path) -> None:
    assert k.made(k.make([str(d)])) is None
    assert d.is_dir()


def test_a_removal_rides_with_the_next_mkdir(keeper: Keeper, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _make(keeper, first)
    assert keeper.remove([str(first)])
    time.sleep(0.1)
    assert first.is_dir(), "the removal was sent on its own, not held for the next mkdir"
    _make(keeper, second)
    assert wait_for(lambda: not first.exists(), 5), "the held removal did not come with the next mkdir"
    assert second.is_dir()


def test_held_removals_go_on_their_own_when_many_are_held(keeper: Keeper, tmp_path: Path) -> None:
    dirs = [tmp_path / f"d{i}" for i in range(HOLD_MAX)]
    for d in dirs:
        _make(keeper, d)
    for d in dirs[:-1]:
        keeper.remove([str(d)])
    time.sleep(0.1)
    assert all(d.is_dir() for d in dirs)
    keeper.remove([str(dirs[-1])])
    assert wait_for(lambda: not any(d.exists() for d in dirs), 5), "HOLD_MAX held removals were not handed over"


def test_held_removals_go_on_their_own_once_old(keeper: Keeper, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper_mod, "HOLD_SECONDS", 0.2)
    old, young = tmp_path / "old", tmp_path / "young"
    _make(keeper, old)
    _make(keeper, young)
    keeper.remove([str(old)])
    time.sleep(0.3)
    assert old.is_dir()
    keeper.remove([str(young)])  # the oldest held is past HOLD_SECONDS: both go now
    assert wait_for(lambda: not old.exists() and not young.exists(), 5)


def test_sync_and_stop_hand_over_what_is_held(tmp_path: Path) -> None:
    k = Keeper()
    k.start()
    a, b = tmp_path / "a", tmp_path / "b"
    _make(k, a)
    _make(k, b)
    k.remove([str(a)])
    assert k.sync(5.0)
    assert not a.exists(), "sync() returned with a held removal not done"
    k.remove([str(b)])
    k.stop()
    assert not b.exists(), "stop() dropped a held removal"
