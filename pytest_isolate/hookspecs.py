"""Hook specifications of pytest-isolate.

Implement them in a ``conftest.py`` or a plugin; they are registered by
``pytest_addhooks``, so a plugin that loads before pytest-isolate should mark
its implementations ``@pytest.hookimpl(optionalhook=True)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import pytest

if TYPE_CHECKING:
    from isolate_runtime import SandboxResult, SandboxSpec


def pytest_isolate_modify_spec(item: pytest.Item, spec: "SandboxSpec") -> Optional["SandboxSpec"]:
    """Adjust the sandbox specification of one isolated test.

    Called in the pytest process right before the test's sandbox is
    started, after the marker, command-line, environment and ini settings
    were applied.

    :param item: The test about to run.
    :param spec: The specification built from the settings (frozen; use
        ``spec.replace(...)`` to derive a changed one).
    :returns: A replacement spec, or ``None`` to keep it.

    Implementations are chained in pluggy's call order (``tryfirst`` ones
    first): each receives the spec returned by the previous one.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook; it applies to the tests
    below that conftest's directory.
    """


def pytest_isolate_child_setup(item: pytest.Item) -> None:
    """Run code inside the sandbox, before the test's setup phase.

    Called in the sandboxed process, once per isolated test: the place to
    reset fork-unsafe objects inherited from higher-scoped fixtures
    (database connections, thread pools, locks, CUDA contexts).

    :param item: The test about to run.

    An exception raised here is reported as an error in the test's setup.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """


def pytest_isolate_result(item: pytest.Item, result: "SandboxResult") -> None:
    """Receive how one isolated test's sandbox ended and what it used.

    Called in the pytest process after the sandbox is gone and its reports
    were replayed, before ``pytest_runtest_logfinish``.

    :param item: The test that ran.
    :param result: The runtime's result: ``outcome``, ``stats``
        (``stats.as_dict()`` is JSON-ready, every figure with its source),
        ``limits``, ``layers`` that were applied, ``written_paths`` (writes
        that were discarded), ``evidence``.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """


def pytest_isolate_stats(item: pytest.Item, result: "SandboxResult", report: pytest.TestReport) -> None:
    """Attach one isolated test's resource figures to its teardown report.

    Called in the process that ran the sandbox (pytest, or an xdist
    worker) once the sandbox is gone - also after a crash, timeout or OOM
    kill - right before ``report`` (the test's teardown report) is logged.
    pytest-isolate's own implementation (``trylast``) appends the
    ``isolate.*`` entries to ``report.user_properties`` and may turn the
    report into a failure (``--isolate-fail-on-increase``).

    :param item: The test that ran.
    :param result: The runtime's result (see :func:`pytest_isolate_result`).
    :param report: The teardown report about to be logged.  Anything added
        to ``report.user_properties`` must be JSON primitives, so that it
        survives pytest-xdist and reportlog.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """


@pytest.hookspec(firstresult=True)
def pytest_isolate_launcher(item: pytest.Item) -> Optional[Callable[..., "SandboxResult"]]:
    """Provide the function that runs a sandbox for this test.

    The function is called as ``launcher(spec, on_message=callback)`` and
    must behave like :func:`isolate_runtime.run`: run ``spec.payload``,
    deliver every object the payload passes to
    ``isolate_runtime.send_message`` to ``callback`` in order, and return a
    :class:`isolate_runtime.SandboxResult`.  Tests use this to swap in a
    fake runtime.

    :param item: The test about to run.

    Stops at first non-None result, see :ref:`firstresult`.  The default
    implementation returns :func:`isolate_runtime.run`.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """
