"""Every option, ini key, environment variable and marker argument, with bad values.

Each must stop the run with a usage error (exit 4) that names the value and
where it came from, before any test runs.  Runs in-process with
``--collect-only`` (marker values are checked at collection), so a value
that is wrongly accepted shows as exit 0 instead of running anything.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest

#: option -> bad values per kind.  Strings are what a user types (CLI, env,
#: ini); marker values are Python expressions.
TEXT: Dict[str, Dict[str, List[str]]] = {
    "memory": {"malformed": ["12x", "1.5.5G", "G"], "negative": ["-1G"], "zero": ["0", "0.1"],
               "absurd": ["99999999999999999999T"]},
    "cpus": {"malformed": ["many", "1,5"], "negative": ["-2"], "zero": ["0"], "absurd": ["1e30"],
             "not-a-number": ["nan", "inf"]},
    "cpu_time": {"malformed": ["soon", "1e3", "10 minutes"], "negative": ["-1"], "zero": ["0", "0s"],
                 "absurd": ["99999999999999999h"]},
    "timeout": {"malformed": ["abc", "5x"], "negative": ["-5"], "zero": ["0"], "absurd": ["99999999999999999h"]},
    "pids": {"malformed": ["x", "1.5"], "negative": ["-3"], "zero": ["0"], "absurd": ["99999999999999999999"]},
    "network": {"malformed": ["wifi", "HOST", "none x"]},
    "policy": {"malformed": ["lax", "STRICT"]},
    "all": {"malformed": ["perhaps", "2"]},
    "prefork": {"malformed": ["sometimes", "2"]},
    "root": {"malformed": ["maybe", "2"]},
    "memory_warn": {"malformed": ["lots"], "negative": ["-1M"], "zero": ["0"], "absurd": ["99999999999999999999T"]},
    "cpu_time_warn": {"malformed": ["x"], "negative": ["-1"], "zero": ["0"], "absurd": ["99999999999999999h"]},
    "timeout_warn": {"malformed": ["x"], "negative": ["-1"], "zero": ["0"], "absurd": ["99999999999999999h"]},
    "report": {"malformed": ["ten"], "negative": ["-1"], "absurd": ["99999999999999999999999"]},
    "fail_on_increase": {"malformed": ["lots"], "negative": ["-5"], "absurd": ["1e400"]},
    "junit_properties": {"malformed": ["maybe"]},
    "json": {"malformed": ["/etc/hostname/under-a-file.json"], "nul": ["with\0nul.json"]},
    "html": {"malformed": ["/etc/hostname/under-a-file.html"], "nul": ["with\0nul.html"]},
    "compare": {"malformed": ["/nonexistent-dir-of-containment/old.json"], "nul": ["with\0nul.json"]},
    "writable": {"nul": ["with\0nul"]},
}
MARKER: Dict[str, Dict[str, List[str]]] = {
    "memory": {"malformed": ["'12x'"], "negative": ["-1"], "zero": ["0"], "absurd": ["10**30"],
               "wrong-type": ["[1]", "{'a': 1}", "True", "b'1G'", "0.5"]},
    "cpus": {"malformed": ["'many'"], "negative": ["-0.5"], "zero": ["0"], "absurd": ["10**30", "10**400"],
             "wrong-type": ["[1]", "True", "float('nan')"]},
    "cpu_time": {"malformed": ["'x'"], "negative": ["-1"], "zero": ["0"], "absurd": ["10**400"],
                 "wrong-type": ["[1]", "True", "float('inf')"]},
    "timeout": {"malformed": ["'x'"], "negative": ["-1"], "zero": ["0.0"], "absurd": ["10**400"],
                "wrong-type": ["[1]", "True", "object()"]},
    "pids": {"malformed": ["'x'"], "negative": ["-1"], "zero": ["0"], "absurd": ["10**30"],
             "wrong-type": ["2.5", "True", "[1]"]},
    "network": {"malformed": ["'bridge'"], "wrong-type": ["1", "True", "['none']"]},
    "writable": {"malformed": ["''", "['']", "'with\\0nul'"], "wrong-type": ["3", "[3]", "{'a': 1}"]},
    "root": {"malformed": ["'maybe'"], "wrong-type": ["2", "[]", "0.5"]},
    "memory_warn": {"malformed": ["'lots'"], "negative": ["-1"], "zero": ["0"], "wrong-type": ["[1]"]},
    "cpu_time_warn": {"malformed": ["'x'"], "negative": ["-1"], "zero": ["0"], "wrong-type": ["[1]"]},
    "timeout_warn": {"malformed": ["'x'"], "negative": ["-1"], "zero": ["0"], "wrong-type": ["[1]"]},
}

CLI_OPTIONS = ("memory", "cpus", "cpu_time", "timeout", "pids", "network", "policy", "memory_warn",
               "cpu_time_warn", "timeout_warn", "report", "fail_on_increase", "json", "html", "compare")
ENV_INI_OPTIONS = CLI_OPTIONS + ("all", "prefork", "root", "writable", "junit_properties")

#: Known defects: (source, option, value) -> reason ("*" matches any source).
#: Kept as strict xfails so a fix shows up as XPASS.
_NO_BOUND = ("defect: settings have no upper bound, so an absurd {option} is accepted at configure; ")
DEFECTS: Dict[Tuple[str, str, str], str] = {
    # Fixed since: every other absurd value (memory, cpus, cpu_time, timeout,
    # pids, the *_warn budgets, from every source, and int marker values too
    # large for a float), writable='', an absurd --isolate-report and an
    # --isolate-json/--isolate-html path that cannot be written are usage
    # errors now, and so is a path containing NUL from any source.
}


def _cases() -> List[Any]:
    out = []
    for option, kinds in TEXT.items():
        for kind, values in kinds.items():
            for raw in values:
                for where in ("cli", "env", "ini"):
                    if where == "cli" and option not in CLI_OPTIONS:
                        continue
                    if where in ("env", "ini") and option not in ENV_INI_OPTIONS:
                        continue
                    if where == "env" and "\0" in raw:
                        # the environment cannot carry NUL (os.environ refuses
                        # it); pytest.main() arguments and ini files can
                        continue
                    out.append(_param(where, option, kind, raw))
    for option, kinds in MARKER.items():
        for kind, values in kinds.items():
            for raw in values:
                out.append(_param("marker", option, kind, raw))
    return out


def _param(where: str, option: str, kind: str, raw: str) -> Any:
    reason = DEFECTS.get((where, option, raw)) or DEFECTS.get(("*", option, raw))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(where, option, raw, id=f"{where}-{option}-{kind}-{raw!r}", marks=marks)


def _source(where: str, option: str) -> str:
    if where == "cli":
        return "--isolate-" + option.replace("_", "-")
    if where == "env":
        return "environment PYTEST_ISOLATE_" + option.upper()
    if where == "ini":
        return f"ini isolate_{option} (tox.ini)"
    return "marker on test_bad_value.py::test_b"


@pytest.mark.parametrize("where, option, raw", _cases())
def test_bad_value_is_a_usage_error_naming_value_and_source(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                            where: str, option: str, raw: str) -> None:
    args = ["--collect-only", "-q", "-p", "no:cacheprovider"]
    if option != "all":  # the flag would win over the environment / ini value under test
        args.append("--isolate-all")
    if where == "cli":
        args.append(f"--isolate-{option.replace('_', '-')}={raw}")
    elif where == "env":
        monkeypatch.setenv(f"PYTEST_ISOLATE_{option.upper()}", raw)
    elif where == "ini":
        pytester.makeini(f"[pytest]\nisolate_{option} = {raw}\n")
    pytester.makepyfile(test_bad_value=f"""
        import pytest

        def test_a():
            pass

        @pytest.mark.isolated({option + '=' + raw if where == 'marker' else ''})
        def test_b():
            pass
    """)
    result = pytester.runpytest_inprocess(*args)
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, (
        f"{raw!r} for {option} from {where} was accepted (exit {result.ret})\n{result.stdout.str()[-1500:]}\n{err}")
    assert "INTERNALERROR" not in err + result.stdout.str(), err
    name = "writable" if option == "writable" else option.replace("_", "-")
    assert f"pytest-isolate: invalid {name} " in err or "pytest-isolate: unknown" in err, err
    assert f"from {_source(where, option)}" in err, err
    shown = raw if where != "marker" else str(eval(raw)) if "object" not in raw else "object"
    # the message shows the value's repr: 'with\x00nul' for a NUL
    value_repr = repr(raw if where != "marker" else eval(raw) if "object" not in raw else "object")
    assert (shown[:12] in err or repr(raw)[:12] in err or value_repr[:12] in err
            or (where == "marker" and raw[:12] in err)), f"the message does not show the value {raw!r}: {err}"


#: The exact message for a path with NUL, from every source that can carry one
#: (the environment cannot: os.environ refuses it).
NUL_MESSAGES = [
    ("marker", "writable", "'with\\0nul'",
     "ERROR: pytest-isolate: invalid writable 'with\\x00nul' from marker on test_bad_value.py::test_b: "
     "a path cannot contain a NUL character"),
    ("marker", "writable", "['ok', 'with\\0nul']",
     "ERROR: pytest-isolate: invalid writable ['ok', 'with\\x00nul'] from marker on test_bad_value.py::test_b: "
     "a path cannot contain a NUL character"),
    ("ini", "writable", "with\0nul",
     "ERROR: pytest-isolate: invalid writable ['with\\x00nul'] from ini isolate_writable (tox.ini): "
     "a path cannot contain a NUL character"),
    ("cli", "json", "with\0nul.json",
     "ERROR: pytest-isolate: invalid json 'with\\x00nul.json' from --isolate-json: "
     "a path cannot contain a NUL character"),
    ("ini", "html", "with\0nul.html",
     "ERROR: pytest-isolate: invalid html 'with\\x00nul.html' from ini isolate_html (tox.ini): "
     "a path cannot contain a NUL character"),
    ("cli", "compare", "with\0nul.json",
     "ERROR: pytest-isolate: invalid compare 'with\\x00nul.json' from --isolate-compare: "
     "a path cannot contain a NUL character"),
]


@pytest.mark.parametrize("where, option, raw, message", NUL_MESSAGES,
                         ids=[f"{w}-{o}-{r!r}" for w, o, r, _ in NUL_MESSAGES])
def test_nul_in_a_path_message(pytester: pytest.Pytester, where: str, option: str, raw: str,
                               message: str) -> None:
    """Refused at configure/collection with this exact text, not at mount or
    report-writing time ("embedded null byte" after the tests ran)."""
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "--isolate-all"]
    if where == "cli":
        args.append(f"--isolate-{option}={raw}")
    elif where == "ini":
        pytester.makeini(f"[pytest]\nisolate_{option} = {raw}\n")
    pytester.makepyfile(test_bad_value=f"""
        import pytest

        @pytest.mark.isolated({option + '=' + raw if where == 'marker' else ''})
        def test_b():
            pass
    """)
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    assert message in result.stderr.lines, result.stderr.str()
