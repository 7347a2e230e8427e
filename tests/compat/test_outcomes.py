"""pytest's own outcomes and settings, plain vs ``--isolate-all``:
outcomes raised in higher-scoped fixtures, scope mismatches, warnings turned
into errors, tests that mock what the sandbox's side uses, writable paths
that do not exist, and memory figures without cgroups.
"""
from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from .harness import ISOLATED, NO_ISOLATE, PLAIN, Compat, Run, assert_isolated, assert_same

#: Deselect with ``-m 'not compat'`` (e.g. in CI while the fixes are under way).
pytestmark = pytest.mark.compat

# ------------------------------------------------------------------ outcomes in higher-scoped fixtures

HIGHER_SCOPES = {
    "test_1_session.py": """
        import pytest

        @pytest.fixture(scope="session")
        def session_fails():
            pytest.fail("session fixture failed")

        def test_a(session_fails):
            pass

        def test_b(session_fails):
            pass

        def test_not_using_it():
            pass
    """,
    "test_2_module_xfail.py": """
        import pytest

        @pytest.fixture(scope="module")
        def module_xfails():
            pytest.xfail("module fixture xfails")

        def test_a(module_xfails):
            pass

        def test_b(module_xfails):
            pass
    """,
    "test_3_module_skip.py": """
        import pytest

        @pytest.fixture(scope="module")
        def module_skips():
            pytest.skip("module fixture skips")

        def test_a(module_skips):
            pass

        def test_b(module_skips):
            pass
    """,
    "test_4_classes.py": """
        import pytest

        class TestSetupClassFails:
            @classmethod
            def setup_class(cls):
                pytest.fail("setup_class failed")

            def test_a(self):
                pass

            def test_b(self):
                pass

        @pytest.fixture(scope="class")
        def class_raises():
            raise RuntimeError("class fixture raised")

        @pytest.mark.usefixtures("class_raises")
        class TestClassFixtureRaises:
            def test_a(self):
                pass

            def test_b(self):
                pass

        class TestSkippedClass:
            @classmethod
            def setup_class(cls):
                pytest.skip("setup_class skips")

            def test_a(self):
                pass
    """,
    "test_5_scope_mismatch.py": """
        import pytest

        @pytest.fixture(scope="module")
        def wants_tmp_path(tmp_path):
            return tmp_path

        def test_a(wants_tmp_path):
            pass

        def test_b(wants_tmp_path):
            pass
    """,
    "test_6_after.py": """
        def test_still_runs():
            pass
    """,
}


def test_outcomes_raised_in_higher_scoped_fixtures(compat: Compat) -> None:
    """``pytest.fail``/``xfail``/``skip`` in a session, module or class
    fixture or ``setup_class``, and a ScopeMismatch: plain pytest reports
    each affected test and goes on."""
    compat.write(HIGHER_SCOPES)
    plain, iso = compat.both("-rA")
    assert plain.outcomes == {"passed": 2, "skipped": 3, "xfailed": 2, "errors": 8}, plain
    assert_isolated(iso)
    assert_same(plain, iso)


@pytest.mark.parametrize("module", [m for m in HIGHER_SCOPES if m != "test_6_after.py"])
def test_each_higher_scoped_failure_alone(compat: Compat, module: str) -> None:
    """The same, one module at a time (a difference shows which case causes it)."""
    compat.write({module: HIGHER_SCOPES[module], "test_6_after.py": HIGHER_SCOPES["test_6_after.py"]})
    plain, iso = compat.both()
    assert set(plain.outcomes) - {"passed"}, plain
    assert_same(plain, iso)


# ------------------------------------------------------------------ filterwarnings = error

WARNINGS_AS_ERRORS = {
    "pytest.ini": """
        [pytest]
        filterwarnings = error
    """,
    "test_class_fixture.py": """
        import pytest

        class TestInstanceMethodFixture:
            # pytest 9 deprecates a class-scoped fixture written as an
            # instance method (PytestRemovedIn10Warning)
            @pytest.fixture(scope="class")
            def resource(self):
                return 1

            def test_one(self, resource):
                assert resource == 1

            def test_two(self, resource):
                assert resource == 1

        def test_warns_in_call():
            import warnings
            warnings.warn(DeprecationWarning("deprecated in the call"))
    """,
}


def test_filterwarnings_error_and_a_class_fixture_as_instance_method(compat: Compat) -> None:
    compat.write(WARNINGS_AS_ERRORS)
    plain, iso = compat.both("-rA")
    assert plain.outcomes.get("failed") == 1, plain
    assert_same(plain, iso)


NO_WARNINGS_PLUGIN = {
    "test_nw.py": """
        import warnings

        def test_warns_and_fails():
            warnings.warn("hello warning", UserWarning)
            assert 0

        def test_warns():
            warnings.warn("second warning", UserWarning)
    """,
}


def test_without_the_warnings_plugin_a_warning_is_the_tests_stderr(compat: Compat) -> None:
    """``-p no:warnings``: Python prints the warning to the test's stderr,
    captured with the rest; no warnings summary, no count."""
    compat.write(NO_WARNINGS_PLUGIN)
    plain, iso = compat.both("-p", "no:warnings", "-rA")
    assert "warnings summary" not in plain.stdout and "UserWarning: hello warning" in plain.stdout, plain
    assert_same(plain, iso)
    assert "warnings summary" not in iso.stdout and "warning" not in iso.summary, iso


NO_CRASH_LINE = {
    "test_missing.py": """
        def test_missing(nosuchfixture):
            pass
    """,
    "mod.py": """
        def add(a, b):
            \"\"\"
            >>> add(1, 1)
            3
            \"\"\"
            return a + b
    """,
}


def test_failures_without_a_crash_line_keep_their_short_summary(compat: Compat) -> None:
    """A missing fixture's error and a doctest's failure have no crash line:
    the short summary names the test and nothing after it (pytest 9 adds a
    plain string's first line, which their serialized text is)."""
    compat.write(NO_CRASH_LINE)
    plain, iso = compat.both("-rA", "--doctest-modules")
    summary = plain.section("short test summary info")
    assert "ERROR test_missing.py::test_missing\n" in summary + "\n", plain
    assert iso.section("short test summary info") == summary, iso
    assert_same(plain, iso)


def test_warnings_summary_of_a_deprecated_class_fixture(compat: Compat) -> None:
    """Without ``error``: the deprecation appears once in the summary, as plain pytest shows it."""
    files = dict(WARNINGS_AS_ERRORS)
    files["pytest.ini"] = "[pytest]\n"
    compat.write(files)
    plain, iso = compat.both()
    assert "warnings summary" in plain.stdout, plain
    assert_same(plain, iso)


# ------------------------------------------------------------------ mocked os functions

MOCKED_OS = {
    "pytest.ini": """
        [pytest]
        # the isolated run must not hang if a mocked os.write loops forever
        timeout = 5
    """,
    "test_mocks.py": """
        import os
        from unittest import mock

        import pytest

        def test_getpid_constant():
            with mock.patch("os.getpid", return_value=1234):
                assert os.getpid() == 1234

        def test_getpid_raises():
            with mock.patch("os.getpid", side_effect=RuntimeError("no pid today")):
                with pytest.raises(RuntimeError):
                    os.getpid()

        def test_write_raises():
            with mock.patch("os.write", side_effect=OSError(5, "EIO")):
                with pytest.raises(OSError):
                    os.write(1, b"x")

        def test_write_returns_zero():
            with mock.patch("os.write", return_value=0):
                assert os.write(1, b"x") == 0

        # monkeypatch keeps the patch until the function scope is torn
        # down: after the call phase's report exists
        def test_monkeypatched_getpid(monkeypatch):
            monkeypatch.setattr(os, "getpid", lambda: 42)
            assert os.getpid() == 42

        def test_monkeypatched_getpid_raises(monkeypatch):
            def boom():
                raise RuntimeError("no pid today")
            monkeypatch.setattr(os, "getpid", boom)

        def test_monkeypatched_write_raises(monkeypatch):
            def boom(fd, data):
                raise OSError(5, "EIO")
            monkeypatch.setattr(os, "write", boom)

        def test_monkeypatched_write_constant(monkeypatch):
            monkeypatch.setattr(os, "write", lambda fd, data: 3)

        def test_after_the_mocks():
            assert os.getpid() > 0
    """,
}


@pytest.mark.slow
def test_tests_that_mock_os_getpid_and_os_write(compat: Compat) -> None:
    compat.write(MOCKED_OS, plugins=["pytest-timeout"])
    plain, iso = compat.both(timeout=300)
    assert plain.outcomes == {"passed": 9}, plain
    assert_same(plain, iso)


@pytest.mark.slow
def test_a_test_whose_os_write_returns_zero_until_teardown(compat: Compat) -> None:
    """A 0-byte write must not make the sandbox's report loop spin: nothing
    the test patches may be on the sandbox's own path."""
    compat.write({"pytest.ini": MOCKED_OS["pytest.ini"], "test_zero.py": """
        import os

        def test_monkeypatched_write_zero(monkeypatch):
            monkeypatch.setattr(os, "write", lambda fd, data: 0)

        def test_after():
            pass
    """}, plugins=["pytest-timeout"])
    plain, iso = compat.both(timeout=300)
    assert plain.outcomes == {"passed": 2}, plain
    assert_same(plain, iso)


# ------------------------------------------------------------------ writable paths that do not exist

def _usage_error_or_same(plain: Run, iso: Run, missing: str) -> None:
    """Either a clear usage error before any test ran, naming the path, or
    the same run as plain pytest."""
    if iso.ret == pytest.ExitCode.USAGE_ERROR:
        assert not iso.of_kind("report"), f"tests ran before the usage error: {iso!r}"
        assert missing in iso.stderr, iso
        return
    assert_same(plain, iso)


def test_writable_marker_path_that_does_not_exist(compat: Compat) -> None:
    missing = str(compat.base / "isolated" / "not-there")
    compat.write({"test_w.py": f"""
        import pytest

        @pytest.mark.isolated(writable=[{missing!r}])
        def test_declares_a_missing_writable_path():
            pass

        def test_other():
            pass
    """})
    plain, iso = compat.both(plain=NO_ISOLATE)
    assert plain.outcomes == {"passed": 2}, plain
    _usage_error_or_same(plain, iso, missing)


def test_writable_ini_path_that_does_not_exist(compat: Compat) -> None:
    compat.write({"pytest.ini": """
        [pytest]
        isolate_writable =
            build/output
    """, "test_w.py": """
        def test_a():
            pass
    """})
    plain, iso = compat.both(plain=NO_ISOLATE)
    assert plain.outcomes == {"passed": 1}, plain
    _usage_error_or_same(plain, iso, "build/output")


# ------------------------------------------------------------------ memory figures without cgroups

# Without cgroups the figures are sampled (every 20 ms, less often on a
# loaded machine): each test holds its memory long enough to be seen, as a
# test whose peak lasts a few milliseconds may not be.
MEMORY = {"test_mem.py": """
    import time

    def test_allocates_150_mib():
        block = b"x" * (150 << 20)  # written, so resident
        time.sleep(0.5)
        assert len(block) == 150 << 20

    def test_small():
        time.sleep(0.2)
        assert sum(range(1000)) == 499500
"""}


def _peaks(run: Run) -> Dict[str, Any]:
    data = json.loads(run.file("stats.json"))
    return {t["nodeid"].split("::")[-1]: t["stats"].get("peak_memory_bytes") for t in data["tests"]}


@pytest.mark.parametrize("cgroups", ["none", "auto"])
def test_memory_figures(compat: Compat, cgroups: str) -> None:
    """A test that allocates 150 MiB shows about 150 MiB, a small one more
    than nothing; with cgroups (``auto``) as the control."""
    compat.write(MEMORY)
    iso = compat.run("isolated", *ISOLATED, "--isolate-json=stats.json",
                     env={"ISOLATE_RUNTIME_CGROUPS": cgroups})
    assert iso.outcomes == {"passed": 2}, iso
    peaks = _peaks(iso)
    mib = {name: None if v is None else round(v / (1 << 20), 1) for name, v in peaks.items()}
    assert peaks["test_allocates_150_mib"] is not None and 140 << 20 <= peaks["test_allocates_150_mib"] <= 200 << 20, \
        f"peak memory figures in MiB: {mib}"
    assert peaks["test_small"], f"peak memory figures in MiB: {mib}"


def test_plain_run_of_the_memory_project(compat: Compat) -> None:
    compat.write(MEMORY)
    plain = compat.run("plain", *PLAIN)
    assert plain.outcomes == {"passed": 2}, plain
