"""Coverage of isolated tests: measured in the sandbox, merged in pytest.

The sandbox is a fork of the pytest process, so coverage.py's tracer keeps
running in it, but everything it would save lands on the copy-on-write
filesystem and is thrown away with the sandbox.  So the sandbox side
records into a fresh in-memory ``CoverageData`` and sends it over the
result channel when the test is done; the pytest process merges it into the
data of its own running ``Coverage``, whatever saves that data later
(pytest-cov, ``coverage run``, an xdist worker) finds the lines there.

Two reasons the sandbox must not touch the inherited data object: its
SQLite connection may already be open, and a file descriptor opened before
the sandbox's root was built writes to the *host's* file, past the
copy-on-write layer, racing the pytest process.  Hence the swap at the
start rather than a flush at the end.

The data crosses the sandbox boundary as plain data (lines or arcs per
file and context), never as coverage's own SQL dump: loading that in the
pytest process would run a script the sandbox wrote.

This leans on two coverage.py attributes that are not public API
(``Coverage._collector`` and ``Coverage._data``), stable since coverage 5;
without them, nothing is merged and nothing breaks.  :func:`recheck` leans
on two more (``CoverageData._file_map`` and ``_connect``); without them a
file swapped after its data came in is not left out; :func:`merge` on
``Coverage._inorout.check_include_omit_etc`` (coverage 5 to 7), to keep
only the files this process's settings would have measured; without it,
only the check of the files' names.
"""
from __future__ import annotations

import os
import stat
import sys
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

#: Message kind on the result channel.
KIND = "coverage"

#: The files whose coverage data came from a sandbox: checked again before
#: the report (:func:`recheck`).
_from_sandboxes: Set[str] = set()


def _current() -> Any:
    """The running ``coverage.Coverage`` of this process, if any (never
    imports coverage when nobody else did)."""
    mod = sys.modules.get("coverage")
    if mod is None:
        return None
    try:
        return mod.Coverage.current()
    except Exception:
        return None


class SandboxCoverage:
    """Sandbox side: redirect this process's measurement into memory."""

    def __init__(self, cov: Any, collector: Any, data: Any) -> None:
        self._cov = cov
        self._collector = collector
        self._data = data

    @classmethod
    def take_over(cls) -> Optional["SandboxCoverage"]:
        """Call first thing in the sandbox; None when nothing is measured."""
        cov = _current()
        collector = getattr(cov, "_collector", None)
        if collector is None or not hasattr(collector, "use_data"):
            return None
        from coverage import CoverageData

        data = CoverageData(no_disk=True)
        # What the pytest process measured but had not flushed yet is its
        # own to save; it need not travel back.
        for per_file in list(getattr(collector, "data", {}).values()):
            if hasattr(per_file, "clear"):
                per_file.clear()
        collector.use_data(data, getattr(collector, "static_context", None))
        # A save from inside the sandbox (coverage's ``patch = _exit``) then
        # goes to memory too, never to the inherited data file.
        cov._data = data
        return cls(cov, collector, data)

    def payload(self) -> Optional[Dict[str, Any]]:
        """The lines/arcs measured in the sandbox, as plain data:
        ``{"arcs": bool, "contexts": {context: {file: [lines or [a, b] arcs]}},
        "tracers": {file: plugin}}``."""
        try:
            self._collector.flush_data()
            data = self._data
            if not data:
                return None
            arcs = bool(data.has_arcs())
            contexts: Dict[str, Dict[str, List[Any]]] = {}
            for context in sorted(data.measured_contexts()):
                data.set_query_context(context)
                per_file: Dict[str, List[Any]] = {}
                for path in data.measured_files():
                    got = data.arcs(path) if arcs else data.lines(path)
                    if got:
                        per_file[path] = [list(a) for a in got] if arcs else sorted(got)
                contexts[context] = per_file
            data.set_query_contexts(None)
            tracers = {path: data.file_tracer(path) for path in data.measured_files() if data.file_tracer(path)}
            return {"arcs": arcs, "contexts": contexts, "tracers": tracers}
        except Exception as e:  # never fail a test over its coverage
            sys.stderr.write(f"pytest-isolate: could not collect this test's coverage data: {e!r}\n")
            return None


def switch_context(item: Any, when: str) -> None:
    """Under ``--cov-context=test``, pytest-cov's context for ``item`` and
    phase ``when``: what pytest's process runs of the test's setup and
    teardown (its higher-scoped fixtures) is recorded under the test's
    ``<nodeid>|setup`` and ``|teardown`` contexts, as in plain pytest
    (pytest-cov switches in its setup and teardown hooks, which run in the
    sandbox)."""
    plugin = item.config.pluginmanager.get_plugin("_cov_contexts")
    switch = getattr(plugin, "switch_context", None)
    if callable(switch):
        switch(item, when)


def file_tracer_names() -> FrozenSet[str]:
    """The names of the file tracer plugins this process's coverage has
    loaded: the only tracer names its report can resolve (it looks each
    file's up among them, and an unknown one ends the report with a
    KeyError)."""
    plugins = getattr(_current(), "_plugins", None)
    names = set()
    for plugin in getattr(plugins, "file_tracers", None) or ():
        name = getattr(plugin, "_coverage_plugin_name", None)
        if isinstance(name, str):
            names.add(name)
    return frozenset(names)


def merge(payload: Dict[str, Any]) -> None:
    """Pytest side: add a sandbox's coverage data (checked plain data, see
    :func:`pytest_isolate.messages.check_coverage`) to this process's,
    through coverage.py's public recording API (``add_lines``/``add_arcs``
    also keep coverage 7.14-7.16's data-file hash current, which ``combine``
    uses to drop duplicate files)."""
    cov = _current()
    target = getattr(cov, "_data", None)
    if target is None:
        return
    if target.has_arcs() != payload["arcs"] and target.measured_files():
        return  # a line-mode and a branch-mode measurement cannot be merged
    measured = _measured_here(cov, payload["tracers"])
    payload = {"arcs": payload["arcs"],
               "contexts": {context: {path: got for path, got in per_file.items() if measured(path)}
                            for context, per_file in payload["contexts"].items()},
               "tracers": {path: name for path, name in payload["tracers"].items() if measured(path)}}
    previous = getattr(target, "_current_context", None)
    _from_sandboxes.update(path for per_file in payload["contexts"].values() for path in per_file)
    _from_sandboxes.update(payload["tracers"])
    try:
        for context, per_file in payload["contexts"].items():
            target.set_context(context or None)
            if payload["arcs"]:
                target.add_arcs({path: [tuple(a) for a in arcs] for path, arcs in per_file.items()})
            else:
                target.add_lines(per_file)
        # A file already traced by another plugin: coverage would raise on
        # the conflict, and the plugin that claims a file is the same in
        # every fork of this process, so that data is not coverage's.
        tracers = {path: name for path, name in payload["tracers"].items()
                   if target.file_tracer(path) in (None, "", name)}
        if tracers:
            target.add_file_tracers(tracers)
    finally:
        target.set_context(previous)


#: What Python source files are called (a file a file tracer plugin claims,
#: such as a template, may be called anything).
SOURCE_SUFFIXES = (".py", ".pyw")


def _measured_here(cov: Any, tracers: Dict[str, str]) -> Callable[[str], bool]:
    """Whether this process's coverage would have measured a file the
    sandbox names: the same source, include and omit settings (the sandbox
    is a fork: an honest one measured by them), and a Python source file's
    name unless a file tracer claims it. Coverage's report reads every file
    in the data, and its annotate report writes ``<file>,cover`` beside each:
    a name the sandbox chose would be read and written beside by pytest."""
    inorout = getattr(cov, "_inorout", None)
    check = getattr(inorout, "check_include_omit_etc", None)
    if getattr(inorout, "source_pkgs_match", None):
        # a source named as a package (--cov=pkg) matches module names,
        # which a frame gives and a file name alone does not: the names'
        # check only, not to lose data coverage measured truly
        check = None

    def measured(path: str) -> bool:
        if path not in tracers and not path.endswith(SOURCE_SUFFIXES):
            return False
        if check is None:
            return True
        try:
            return check(path, None) is None
        except Exception:  # another coverage's shape: its data is left out
            return False

    return measured


#: What a path in coverage data is called when it is not a regular file.
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"))


def not_regular(mode: int) -> Optional[str]:
    """What a file of ``mode`` (``lstat``) is, when it is not a regular file
    (coverage's report opens it: a FIFO hangs it, a device is read without
    end); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def recheck() -> List[Tuple[str, str]]:
    """Before the report: leave out of this process's coverage data every
    file a sandbox named that is no longer a regular file, each with what it
    is now.  Each was a regular file when its data came in; a later test
    that may write where it lies can have replaced it since, and the report
    opens every file in the data (a FIFO would hang it, a device be read
    without end).  A file that is gone is kept: coverage's report says so,
    as for any source file removed."""
    target = getattr(_current(), "_data", None)
    file_map = getattr(target, "_file_map", None)
    connect = getattr(target, "_connect", None)
    if not _from_sandboxes or not isinstance(file_map, dict) or connect is None:
        return []
    dropped = []
    for path in sorted(_from_sandboxes):
        try:
            what = not_regular(os.lstat(path).st_mode)
        except OSError:
            continue
        if what is not None:
            dropped.append((path, what))
    _from_sandboxes.clear()
    gone = [(path, file_map[path]) for path, _ in dropped if path in file_map]
    if gone:
        with connect() as con:
            for path, file_id in gone:
                for table in ("line_bits", "arc", "tracer"):
                    con.execute_void(f"delete from {table} where file_id = ?", (file_id,))  # noqa: S608 - fixed names
                con.execute_void("delete from file where id = ?", (file_id,))
                del file_map[path]
    return dropped
