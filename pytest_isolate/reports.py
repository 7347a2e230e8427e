"""Reports: the wire format, synthetic crash/timeout/OOM reports, statuses.

Reports cross the sandbox boundary only through pytest's own
``pytest_report_to_serializable`` / ``pytest_report_from_serializable``
hooks (the wire format xdist uses; pytest 9.2's structured ``NodeId`` rides
along as the ``nodeid`` string), as plain data checked by
:mod:`pytest_isolate.messages`.  A sandbox that ends without a report for a
phase gets a synthetic one: a normal ``TestReport`` with ``outcome="failed"``
(so junitxml, ``--lf``, ``-x`` and xdist treat it as a failure or error),
carrying ``isolate_status`` - a plain string that survives serialization -
which :func:`teststatus` turns into its own word and letter in the terminal.
"""
from __future__ import annotations

import os
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import pytest
from isolate_runtime import Outcome, SandboxResult

from .compat import (
    SETUP_ERRORS,
    ReprEntryNative,
    ReprExceptionInfo,
    ReprFileLocation,
    ReprTraceback,
    evaluate_xfail_marks,
)

#: ``isolate_status`` value -> (letter, word) shown by the terminal.
STATUSES: Dict[str, Tuple[str, str]] = {
    "crashed": ("C", "CRASHED"),
    "timeout": ("T", "TIMEOUT"),
    "oom": ("M", "OOM"),
    "cpu-budget": ("B", "CPU-BUDGET"),
}
_STATUS_OF = {
    Outcome.CRASHED: "crashed",
    Outcome.EXITED: "crashed",
    Outcome.RAISED: "crashed",
    Outcome.SETUP_FAILED: "crashed",
    Outcome.TIMEOUT: "timeout",
    Outcome.OOM: "oom",
    Outcome.CPU_BUDGET: "cpu-budget",
    Outcome.REJECTED: "crashed",
}


def teststatus(report: pytest.TestReport) -> Optional[Tuple[str, str, str]]:
    """The terminal status of a synthetic report, or ``None`` for others."""
    status = getattr(report, "isolate_status", None)
    if status not in STATUSES or not report.failed:
        return None
    letter, word = STATUSES[status]
    category = "failed" if report.when == "call" else "error"
    return category, letter, word


def describe(result: SandboxResult, phase: str, after_reports: bool = False) -> str:
    """One line: what happened to the sandbox, and in which phase (or, with
    ``after_reports``, after it had reported every phase)."""
    o = result.outcome
    during = "after its last report" if after_reports else f"during {phase}"
    if o is Outcome.CRASHED:
        return f"CRASHED: the test process was killed by {result.signal_name} {during}"
    if o is Outcome.EXITED:
        return (f"CRASHED: the test process exited with status {result.exit_code} {during} "
                f"(os._exit or a C-level exit: the test did not finish)")
    if o is Outcome.TIMEOUT:
        return f"TIMEOUT: the test exceeded its time limit ({result.evidence}) {during}; the whole sandbox was killed"
    if o is Outcome.OOM:
        return f"OOM: the sandbox ran out of memory and was killed {during} ({result.evidence})"
    if o is Outcome.CPU_BUDGET:
        return f"CPU-BUDGET: the sandbox spent its CPU-time budget {during} ({result.evidence}); it was killed"
    if o is Outcome.SETUP_FAILED:
        return f"CRASHED: the sandbox could not be built: {result.error}"
    if o is Outcome.RAISED:
        return f"CRASHED: pytest-isolate's code in the sandbox raised {result.error}"
    if o is Outcome.REJECTED:
        return (f"CRASHED: the sandbox sent an invalid message {during}: {result.evidence}; "
                f"it was killed")
    return f"CRASHED: the sandbox ended without a report ({result.describe()}) {during}"


Phase = Literal["setup", "call", "teardown"]


def synthetic(item: pytest.Item, phase: Phase, result: SandboxResult, sections: Sequence[Tuple[str, str]],
              duration: float, user_properties: Sequence[Tuple[str, object]] = (),
              after_reports: bool = False) -> pytest.TestReport:
    """A failed report for ``phase`` of ``item`` standing for a sandbox that
    ended abnormally."""
    headline = describe(result, phase, after_reports)
    lines: List[str] = [headline + "\n"]
    message = headline.split(": ", 1)[1]
    if result.outcome is Outcome.RAISED and result.traceback:
        lines.append("\n" + result.traceback)
    if result.stack_dump.strip():
        lines.append("\nStacks of all threads before the kill:\n" + result.stack_dump.rstrip() + "\n")
    if result.written_paths:
        shown = ", ".join(result.written_paths[:5]) + (" ..." if len(result.written_paths) > 5 else "")
        lines.append(f"\nDiscarded writes outside the writable paths: {shown}\n")
    path, lineno, _ = item.location
    crash = ReprFileLocation(path=os.fspath(item.path) if hasattr(item, "path") else path,
                             lineno=(lineno or 0) + 1, message=message)
    longrepr = ReprExceptionInfo(
        reprtraceback=ReprTraceback(reprentries=[ReprEntryNative(lines)], extraline=None, style="native"),
        reprcrash=crash,
    )
    report = pytest.TestReport(
        nodeid=item.nodeid, location=item.location, keywords={k: 1 for k in item.keywords},
        outcome="failed", longrepr=longrepr, when=phase, sections=list(sections), duration=duration,
        user_properties=list(user_properties),
    )
    report.isolate_status = _STATUS_OF.get(result.outcome, "crashed")  # type: ignore[attr-defined]
    return report


def passed_teardown(item: pytest.Item, user_properties: Sequence[Tuple[str, object]] = ()) -> pytest.TestReport:
    """The teardown report of a sandbox that died before its teardown (the
    function-scoped teardown died with it; the parent's scopes follow)."""
    return pytest.TestReport(
        nodeid=item.nodeid, location=item.location, keywords={k: 1 for k in item.keywords},
        outcome="passed", longrepr=None, when="teardown", sections=[], duration=0.0,
        user_properties=list(user_properties),
    )


def honour_xfail(item: pytest.Item, report: pytest.TestReport) -> None:
    """A crash in an ``xfail`` test is an expected failure, exactly as an
    exception would be: same conditions, ``raises`` (a crash matches no
    exception class), ``run``; ``strict`` only concerns passes."""
    if item.config.getoption("runxfail", False):
        return
    try:
        xfailed = evaluate_xfail_marks(item)
    except SETUP_ERRORS:  # a broken condition: pytest reported it in the sandbox
        return
    if xfailed is None or xfailed.raises is not None:
        return
    report.outcome = "skipped"
    report.wasxfail = xfailed.reason
