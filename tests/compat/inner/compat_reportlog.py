"""The recorder loaded into every inner pytest run of ``tests/compat``
(``-p compat_reportlog``, this directory on ``PYTHONPATH``).

One JSON object per line, appended to the file named by
``$COMPAT_REPORTLOG``: every report as the terminal sees it (node id, phase,
outcome and the status word ``-v`` prints), every recorded warning, the
terminal's outcome counts and the exit status.  pytest has no built-in report
log (``--result-log`` went in pytest 6 and pytest-reportlog is a plugin that
records less than this: no status word, no counts), hence this file.

Only the pytest process that owns the terminal writes: an xdist worker's
reports reach the controller anyway.  The file is opened for every line, so
no descriptor of it is ever inherited by a sandbox forked from this process.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

_config: Optional[Any] = None


def _write(obj: Dict[str, Any]) -> None:
    path = os.environ.get("COMPAT_REPORTLOG")
    if not path or _config is None or hasattr(_config, "workerinput"):
        return
    with open(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True, default=repr) + "\n")


def pytest_configure(config: Any) -> None:
    global _config
    _config = config


def pytest_unconfigure(config: Any) -> None:
    global _config
    _config = None


def _status(report: Any) -> List[Any]:
    assert _config is not None
    res = _config.hook.pytest_report_teststatus(report=report, config=_config)
    category, letter, word = res
    if isinstance(word, tuple):  # (word, markup)
        word = word[0]
    return [category, letter, word]


def _crash(report: Any) -> Optional[str]:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    message = getattr(crash, "message", None)
    if message is None and isinstance(getattr(report, "longrepr", None), tuple):
        message = str(report.longrepr[2])  # a skip: (path, lineno, reason)
    return None if message is None else str(message).splitlines()[0] if message else ""


def pytest_runtest_logreport(report: Any) -> None:
    context = getattr(report, "context", None)  # pytest >= 9 and pytest-subtests
    _write({
        "kind": "report",
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "status": _status(report),
        "type": type(report).__name__,
        "subtest": None if context is None else [getattr(context, "msg", None),
                                                 dict(getattr(context, "kwargs", {}) or {})],
        "wasxfail": getattr(report, "wasxfail", None),
        "crash": _crash(report),
        "sections": [title for title, _ in report.sections],
        # pytest-isolate's own figures are the one intended addition
        "user_properties": [list(p) for p in report.user_properties if not str(p[0]).startswith("isolate.")],
    })


def pytest_collectreport(report: Any) -> None:
    if report.outcome != "passed":
        _write({"kind": "collect", "nodeid": report.nodeid, "outcome": report.outcome, "crash": _crash(report)})


def pytest_warning_recorded(warning_message: Any, when: str, nodeid: str, location: Any) -> None:
    _write({
        "kind": "warning",
        "category": warning_message.category.__name__,
        "message": str(warning_message.message),
        "when": when,
        "nodeid": nodeid,
        "where": [os.path.basename(str(warning_message.filename)), warning_message.lineno],
    })


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    counts = {key or "(empty)": len(value) for key, value in terminalreporter.stats.items()}
    _write({"kind": "counts", "counts": counts})


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    _write({"kind": "exit", "exitstatus": int(exitstatus)})
