"""The resource figures as people read them: units, the change against a
baseline judged against the noise floor, CPU time as one number.  Shared by
the terminal report, the JSON/HTML outputs and the regression check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

#: Increases smaller than these are noise, never a regression: cgroup v1
#: splits CPU time in 10 ms ticks, and a Python subprocess's footprint
#: varies by a few hundred KiB between runs.
MEMORY_NOISE_BYTES = 1 << 20
CPU_NOISE_SECONDS = 0.1


def human_bytes(n: Optional[float]) -> str:
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_seconds(s: Optional[float]) -> str:
    return "n/a" if s is None else f"{s:.2f}s"


@dataclass(frozen=True)
class Change:
    """A figure against its baseline, judged against the noise floor."""

    #: Percent change; 0.0 within the noise floor; ``None`` without both
    #: figures or from a baseline of 0.
    percent: Optional[float]
    #: ``"up"``, ``"down"``, ``"noise"`` (within the floor) or ``"na"``.
    kind: str
    #: The difference, e.g. ``"+12.0 MiB"`` (``""`` for noise and na).
    delta: str = ""

    @property
    def text(self) -> str:
        """e.g. ``+12.0 MiB = +40.0%``, ``within noise``, ``""``."""
        if self.kind == "noise":
            return "within noise"
        if self.percent is None or not self.delta:
            return self.delta
        return f"{self.delta} = {self.percent:+.1f}%"


#: Per figure: the noise floor and how to show a difference.
NOISE = {"peak_memory_bytes": MEMORY_NOISE_BYTES, "cpu_seconds": CPU_NOISE_SECONDS}


def change(key: str, new: Optional[float], old: Optional[float]) -> Change:
    """How ``new`` compares with ``old`` for ``key`` (``peak_memory_bytes``
    or ``cpu_seconds``): differences under the noise floor are no change."""
    if new is None or old is None:
        return Change(None, "na")
    diff = new - old
    if abs(diff) < NOISE[key]:
        return Change(0.0, "noise")
    fmt = human_bytes if key == "peak_memory_bytes" else human_seconds
    return Change(None if old <= 0 else diff / old * 100, "up" if diff > 0 else "down",
                  f"{'+' if diff > 0 else '-'}{fmt(abs(diff))}")


def noise_floor_text() -> str:
    """What the floor is, for the report and the page."""
    return (f"changes under {human_bytes(MEMORY_NOISE_BYTES)} of peak memory or {human_seconds(CPU_NOISE_SECONDS)} "
            "of CPU time are within measurement noise")


def cpu_seconds(stats: Mapping[str, Any]) -> Optional[float]:
    """User + system CPU time, or ``None`` when either is unavailable."""
    user, system = stats.get("cpu_user_seconds"), stats.get("cpu_system_seconds")
    if user is None or system is None:
        return None
    return round(float(user) + float(system), 6)
