"""The do-nothing backend (placeholder; the real fallback uses rlimits and sampling)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from ..result import Figure
from ..spec import Limits
from .base import CgroupBackend, CgroupStats, SandboxCgroup


def _na() -> Figure:
    return Figure(None, "unavailable")


class _NoCgroup(SandboxCgroup):
    def __init__(self, limits: Limits) -> None:
        self.applied_limits: dict = {}

    def join_self(self) -> None:
        pass

    def child_rlimits(self) -> Sequence[Tuple[int, int]]:
        return ()

    def poll(self) -> Optional[str]:
        return None

    def procs(self) -> List[int]:
        return []

    def kill(self) -> None:
        pass

    def read_stats(self) -> CgroupStats:
        return CgroupStats(*(_na() for _ in range(9)))

    def close(self) -> None:
        pass


class NoCgroupBackend(CgroupBackend):
    name = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def create(self, label: str, limits: Limits) -> SandboxCgroup:
        return _NoCgroup(limits)

    def describe(self) -> str:
        return f"none ({self.reason})"
