"""What the header (one line; ``-v``: the details), ``--isolate-doctor`` and
``python -m pytest_isolate`` say about the C accelerator and about
``--isolate-delegate``."""
from __future__ import annotations

import sys

import pytest

from ..conftest import MUST_WORK

IN_USE = "isolate: C accelerator: in use (isolate_runtime._fastspawn sets up each sandbox without the interpreter)"
DISABLED = ("isolate: C accelerator: not used: disabled: ISOLATE_RUNTIME_SPAWN=fork is set: sandboxes are set up in "
            "Python (fix: unset ISOLATE_RUNTIME_SPAWN)")


def test_the_header_says_whether_the_accelerator_is_in_use(pytester: pytest.Pytester, caps: object,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_a(): pass")
    if caps.accelerator.in_use or MUST_WORK:  # type: ignore[attr-defined]
        pytester.runpytest_subprocess("--isolate-all", timeout=60).stdout.fnmatch_lines(
            ["isolate: sandbox layers: *; C accelerator: in use"])
        pytester.runpytest_subprocess("--isolate-all", "-v", timeout=60).stdout.fnmatch_lines([IN_USE])
    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", "fork")
    result = pytester.runpytest_subprocess("--isolate-all", timeout=60)
    result.stdout.fnmatch_lines(["isolate: *C accelerator: not used"])
    result = pytester.runpytest_subprocess("--isolate-all", "-v", timeout=60)
    if caps.accelerator.state in ("in use", "disabled"):  # type: ignore[attr-defined]
        result.stdout.fnmatch_lines([DISABLED])
    else:
        result.stdout.fnmatch_lines(["isolate: C accelerator: not used: *"])
    assert result.stdout.str().count("isolate: C accelerator:") == 1


def test_doctor_and_python_m_pytest_isolate_say_it(pytester: pytest.Pytester, caps: object,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if not caps.accelerator.in_use:  # type: ignore[attr-defined]
        assert not MUST_WORK, caps.accelerator  # type: ignore[attr-defined]
        pytest.skip(f"the accelerator is not in use here: {caps.accelerator}")  # type: ignore[attr-defined]
    monkeypatch.setenv("ISOLATE_RUNTIME_SPAWN", "fork")
    lines = ["C accel  not used: disabled: ISOLATE_RUNTIME_SPAWN=fork is set: sandboxes are set up in Python",
             "             fix: unset ISOLATE_RUNTIME_SPAWN"]
    doctor = pytester.runpytest_subprocess("--isolate-doctor", timeout=60)
    doctor.stdout.fnmatch_lines(lines)
    module = pytester.run(sys.executable, "-m", "pytest_isolate", timeout=60)
    module.stdout.fnmatch_lines(["pytest-isolate: isolation layers on this host (linux, euid *)", *lines])


def test_isolate_delegate_where_cgroups_are_writable_does_nothing_and_says_so(pytester: pytest.Pytester) -> None:
    from isolate_runtime.cgroups import probe_cgroups

    found = probe_cgroups()
    if not found.available or found.needs_delegation:
        assert not MUST_WORK, found
        pytest.skip(f"this process's cgroups are not writable here: {found.describe()}")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess("--isolate-delegate", "--isolate-all", timeout=60)
    result.stdout.fnmatch_lines([f"isolate: --isolate-delegate (from --isolate-delegate): nothing to do, this "
                                 f"process's cgroups are already writable ({found.kind})",
                                 "isolate: sandbox layers: *"])
    result.assert_outcomes(passed=1)


def test_isolate_delegate_where_it_cannot_help_is_refused(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISOLATE_RUNTIME_CGROUPS", "none")
    monkeypatch.setenv("PYTEST_ISOLATE_DELEGATE", "1")
    pytester.makepyfile("def test_a(): pass")
    # a run that isolates nothing never needs the delegation
    assert pytester.runpytest_subprocess(timeout=60).ret == pytest.ExitCode.OK
    pytester.makepyfile("import pytest\n\n@pytest.mark.isolated\ndef test_a():\n    print('RAN')\n")
    result = pytester.runpytest_subprocess("-s", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "RAN" not in result.stdout.str()
    result.stderr.fnmatch_lines([
        "ERROR: pytest-isolate: --isolate-delegate (from environment PYTEST_ISOLATE_DELEGATE) cannot help on this "
        "host: switched off (ISOLATE_RUNTIME_CGROUPS=none or force='none'). Fix: unset ISOLATE_RUNTIME_CGROUPS"])
