"""Hook specifications of pytest-isolate.

Implement them in a ``conftest.py`` or a plugin; they are registered by
``pytest_addhooks``, so a plugin that loads before pytest-isolate should mark
its implementations ``@pytest.hookimpl(optionalhook=True)``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence, Union

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


def pytest_isolate_child_data(item: pytest.Item) -> Optional[Mapping[str, object]]:
    """Collect what a plugin recorded in the sandbox, to be merged in pytest.

    A plugin that keeps session state while a test runs (results,
    assertions seen, files it would write) keeps it in the sandbox, which
    is thrown away.  This hook is its way back: called in the sandboxed
    process once the test's teardown is done (also after ``pytest.exit``
    or KeyboardInterrupt in the test), it returns plain data, which
    :func:`pytest_isolate_merge_data` receives in the pytest process.

    :param item: The test that ran.
    :returns: ``None``, or a mapping from names the plugin owns (a letter,
        then letters, digits, ``_``, ``.`` or ``-``; at most 64 characters;
        conventionally the plugin's name) to plain data: ``dict`` with
        ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``,
        ``None`` (tuples arrive as lists, other objects as their ``str()``).
        Bytes must be encoded (base64).  What one test sends back is
        limited by ``--isolate-message-limit``.

    Nothing is sent for a sandbox that was killed (crash, timeout, OOM)
    before its teardown was done.  Every implementation's mapping is sent;
    a name returned twice is sent twice.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """


def pytest_isolate_merge_data(item: pytest.Item, name: str, data: object) -> None:
    """Merge plain data a plugin's sandbox side sent back.

    Called in the pytest process for each entry a
    :func:`pytest_isolate_child_data` implementation returned in the
    sandbox, as it arrives: after the test's setup report was logged and
    before its call and teardown reports are (the parent's teardown of the
    higher scopes comes later still).  Act only on ``name`` values your
    plugin owns.

    :param item: The test that ran.
    :param name: The name the data was sent under.
    :param data: The data: JSON types only.  It is **hostile input** (the
        test's code runs in the same process as the sandbox side and can
        send anything under any name): check its type, shape and bounds
        before use, never import, evaluate or unpickle anything it names,
        and never use a path it names for file work (compute paths from
        what pytest knows, such as the item).  Raise an exception for
        data that is not what it must be: the test is then reported as
        ``CRASHED`` (``the sandbox sent an invalid message``) with the
        exception's text, and the session goes on.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook.
    """


def pytest_isolate_writable(config: pytest.Config) -> Optional[Sequence[Union[str, "os.PathLike[str]"]]]:
    """Declare paths every isolated test may write through.

    A sandbox's writes are copy-on-write and thrown away with it, except
    below pytest's basetemp and the paths declared writable (marker,
    option, ini ``isolate_writable``, and this hook).  A plugin whose
    files must be written while a test runs declares them here.

    Called once per pytest process, at the session's start, when tests are
    isolated (not with ``--no-isolate``).

    :param config: The pytest config object.
    :returns: ``None``, or existing files or directories (relative paths
        are taken from the rootdir).  A path that does not exist is a
        usage error naming the plugin.

    A test can plant a symbolic link in a writable path, and whatever
    follows it later outside the sandbox writes where the test chose.  Do
    no file work there in the pytest process; rather send data back
    (:func:`pytest_isolate_child_data`) and write it from pytest, to paths
    pytest computes.

    Use in conftest plugins
    =======================

    This hook is only called for initial conftests: the paths apply to
    every test.
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
