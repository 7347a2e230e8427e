"""pytest-timeout's settings, enforced by the sandbox for isolated tests.

pytest-timeout arms its timer around ``pytest_runtest_protocol``, which for
an isolated test runs in the pytest process while it waits for the sandbox.
Its default ``signal`` method would raise ``Failed: Timeout`` there, out of
the middle of our protocol (an INTERNALERROR, the sandbox left running),
and its ``thread`` method would end the whole pytest process.  So for an
isolated test its timer is never armed, neither in pytest nor in the
sandbox, and its timeout becomes the sandbox's ``timeout`` instead: a stack
dump of every thread, then a kill of the whole process tree, reported as
``TIMEOUT``.  Tests that are not isolated keep pytest-timeout's behaviour.

Which timeout applies to an isolated test, the most specific first:

1. ``@pytest.mark.isolated(timeout=...)``
2. ``@pytest.mark.timeout(...)`` (``0`` means no timeout, as in pytest-timeout)
3. ``--isolate-timeout``, ``PYTEST_ISOLATE_TIMEOUT``, ini ``isolate_timeout``
4. ``--timeout``, ``PYTEST_TIMEOUT``, ini ``timeout`` (pytest-timeout's)

It always covers the sandbox's setup, call and teardown; pytest-timeout's
``func_only`` and ``method`` do not apply to isolated tests.  The
higher-scoped fixtures pytest's process sets up and tears down for an
isolated test are timed there by pytest-timeout itself, as in plain pytest
(:func:`parent_work`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any, Iterator, Optional

import pytest

from . import compat
from .settings import ItemSettings, Value

#: pytest-timeout's module.  It is registered under its entry point's name
#: (``timeout``) when autoloaded, under the module's name with
#: ``-p pytest_timeout``: it is recognised by the module, whatever the name.
MODULE = "pytest_timeout"


def active(config: pytest.Config) -> bool:
    module = sys.modules.get(MODULE)
    return module is not None and config.pluginmanager.is_registered(module)


def _marker_timeout(item: pytest.Item) -> Optional[Value]:
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return None
    raw = mark.args[0] if mark.args else mark.kwargs.get("timeout")
    if raw is None:
        return None
    return _seconds(raw, f"marker timeout on {item.nodeid}")


def _seconds(raw: object, source: str) -> Value:
    """pytest-timeout's value: a number of seconds, 0 or less for none."""
    try:
        seconds = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"pytest-isolate: invalid timeout {raw!r} from {source}: expected a number of seconds") from None
    return Value(seconds if seconds > 0 else None, source)


def _session_timeout(config: pytest.Config) -> Optional[Value]:
    """pytest-timeout's own --timeout > PYTEST_TIMEOUT > ini timeout."""
    candidates = ((config.getoption("timeout", None), "--timeout"),
                  (os.environ.get("PYTEST_TIMEOUT"), "environment PYTEST_TIMEOUT"),
                  (config.getini("timeout") or None, "ini timeout"))
    for raw, source in candidates:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        return _seconds(raw, source)
    return None


def effective(item: pytest.Item, s: ItemSettings) -> ItemSettings:
    """``s`` with pytest-timeout's timeout folded in, by the precedence in
    this module's docstring (a no-op without pytest-timeout)."""
    if not active(item.config) or s.timeout.source.startswith("marker on"):
        return s
    chosen = _marker_timeout(item)
    if chosen is None and s.timeout.source == "default":
        chosen = _session_timeout(item.config)
    if chosen is None:
        return s
    return dataclasses.replace(s, timeout=chosen)


class TimerGuard:
    """Registered only when pytest-timeout is active: keeps its timer
    unarmed for isolated tests (they time out in the sandbox)."""

    def __init__(self, isolated: Any) -> None:
        #: ``isolated(item) -> bool``: does this item run in a sandbox?
        self._isolated = isolated
        #: pytest's process is doing an isolated test's share of setup or
        #: teardown (:func:`parent_work`): pytest-timeout times that.
        self.parent_side = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> Optional[bool]:
        return True if self._isolated(item) and not self.parent_side else None

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> Optional[bool]:
        return True if self._isolated(item) and not self.parent_side else None


#: The name :class:`TimerGuard` is registered under.
GUARD = "isolate-timeout-guard"


@contextlib.contextmanager
def parent_work(item: pytest.Item) -> Iterator[None]:
    """pytest-timeout's timer, armed as pytest-timeout arms it, around the
    higher-scoped fixtures pytest's process sets up or tears down for an
    isolated test (plain pytest-timeout times them with the test: a hanging
    session fixture fails its test, and does not hang the session).  Its
    ``signal`` method fails the fixture with ``Failed: Timeout``; its
    ``thread`` method ends the session, as in plain pytest."""
    guard = item.config.pluginmanager.get_plugin(GUARD)
    settings = compat.timeout_settings(item) if isinstance(guard, TimerGuard) else None
    if settings is None or not settings.timeout or settings.timeout <= 0 or settings.func_only:
        yield
        return
    assert isinstance(guard, TimerGuard)
    guard.parent_side = True
    try:
        item.ihook.pytest_timeout_set_timer(item=item, settings=settings)
        try:
            yield
        finally:
            item.ihook.pytest_timeout_cancel_timer(item=item)
    finally:
        guard.parent_side = False
