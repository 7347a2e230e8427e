"""Type and shape checks of what a sandbox sends: hostile input.

Each function returns the value it checked, or raises
:class:`~isolate_runtime.ProtocolViolation` saying what is wrong with what;
the test is then reported as CRASHED with that text and the session goes
on.  :mod:`pytest_isolate.messages` checks pytest-isolate's own messages
with them, and the adapters (:mod:`pytest_isolate.adapters`) the data
other plugins' sandbox sides send back: a ``pytest_isolate_merge_data``
implementation may use them too.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from isolate_runtime import ProtocolViolation

__all__ = ["ProtocolViolation", "boolean", "fail", "integer", "listing", "mapping", "number", "string", "strings"]


def fail(what: str) -> ProtocolViolation:
    return ProtocolViolation(what)


def string(value: Any, what: str, most: Optional[int] = None) -> str:
    if not isinstance(value, str):
        raise fail(f"{what} is not a string")
    if most is not None and len(value) > most:
        raise fail(f"{what} is longer than {most} characters")
    return value


def integer(value: Any, what: str, least: Optional[int] = None, most: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{what} is not an integer")
    if (least is not None and value < least) or (most is not None and value > most):
        raise fail(f"{what} is out of range ({value})")
    return value


def number(value: Any, what: str) -> float:
    """A finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise fail(f"{what} is not a finite number >= 0")
    return float(value)


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise fail(f"{what} is not true or false")
    return value


def listing(value: Any, what: str, most: Optional[int] = None) -> List[Any]:
    if not isinstance(value, list):
        raise fail(f"{what} is not a list")
    if most is not None and len(value) > most:
        raise fail(f"{what} has more than {most} entries")
    return value


def mapping(value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(f"{what} is not an object")
    return value


def strings(value: Any, what: str) -> List[str]:
    return [string(v, what) for v in listing(value, what)]


def subclass_named(base: type, module: str, qualname: str) -> Optional[type]:
    """The subclass of ``base`` (or ``base``) whose module and qualified name
    are these, found among the classes that exist: a name from the sandbox
    never imports a module or looks up an attribute."""
    stack: List[type] = [base]
    seen = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__module__ == module and cls.__qualname__ == qualname:
            return cls
        try:
            stack.extend(cls.__subclasses__())
        except TypeError:  # pragma: no cover - a metaclass without __subclasses__
            continue
    return None
