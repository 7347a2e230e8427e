"""cgroup backends: unified (v2), legacy/hybrid (v1 controllers), none.

Placeholder selector until the backends land: always the null backend.
"""
from __future__ import annotations

from .base import CgroupBackend, CgroupStats, SandboxCgroup
from .none import NoCgroupBackend

_selected = None


def select_backend() -> CgroupBackend:
    global _selected
    if _selected is None:
        _selected = NoCgroupBackend("cgroup backends not implemented yet")
    return _selected


__all__ = ["CgroupBackend", "CgroupStats", "SandboxCgroup", "select_backend", "NoCgroupBackend"]
