"""Higher-scoped fixtures live in the parent; SetupState stays consistent."""
from __future__ import annotations

import itertools
import textwrap

import pytest

SCOPED_CONFTEST = """
import os, pytest

@pytest.fixture(scope="session")
def sess():
    print("\\nEVENT session-setup pid-ok=%s" % (os.getpid() != 2))
    yield "S"
    print("\\nEVENT session-teardown pid-ok=%s" % (os.getpid() != 2))
"""

MODULE = """
import os, pytest
pytestmark = pytest.mark.isolated

@pytest.fixture(scope="module")
def mod():
    print("\\nEVENT module-setup {name}")
    yield "M"
    print("\\nEVENT module-teardown {name}")

def setup_module():
    print("\\nEVENT xunit-setup-module {name}")

def teardown_module():
    print("\\nEVENT xunit-teardown-module {name}")

@pytest.mark.parametrize("i", range({n}))
def test_f(sess, mod, i):
    assert (sess, mod) == ("S", "M")
    assert os.getpid() == 2  # PID 2 of the sandbox's own PID namespace

class TestC:
    @pytest.fixture(scope="class")
    def cls(self):
        print("\\nEVENT class-setup {name}")
        yield "C"
        print("\\nEVENT class-teardown {name}")

    def test_1(self, sess, cls):
        assert cls == "C"

    def test_2(self, sess, mod, cls):
        assert (sess, mod, cls) == ("S", "M", "C")
"""


def events(lines: "list[str]") -> "list[str]":
    return [line.split("EVENT ", 1)[1] for line in lines if "EVENT " in line]


def test_higher_scopes_set_up_and_torn_down_once_in_the_parent(pytester: pytest.Pytester,
                                                                 full_sandbox: None) -> None:
    pytester.makeconftest(SCOPED_CONFTEST)
    pytester.makepyfile(test_m1=MODULE.format(name="m1", n=23), test_m2=MODULE.format(name="m2", n=23))
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=50)
    assert events(result.outlines) == [
        "session-setup pid-ok=True",
        "xunit-setup-module m1", "module-setup m1",
        "class-setup m1", "class-teardown m1",
        "module-teardown m1", "xunit-teardown-module m1",
        "xunit-setup-module m2", "module-setup m2",
        "class-setup m2", "class-teardown m2",
        "module-teardown m2", "xunit-teardown-module m2",
        "session-teardown pid-ok=True",
    ]


def test_a_child_does_not_see_or_leak_changes_to_a_parent_fixture(pytester: pytest.Pytester,
                                                                  full_sandbox: None) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="module")
        def box():
            return []

        @pytest.mark.isolated
        def test_a(box):
            box.append(1)
            assert box == [1]

        @pytest.mark.isolated
        def test_b(box):
            assert box == []  # test_a's change stayed in its sandbox

        def test_c(box):
            assert box == []
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=3)


PATTERNS = ["".join(p) for p in itertools.product("IN", repeat=4)]


def _interleaved_module(pattern: str) -> str:
    tests = []
    for pos, kind in enumerate(pattern):
        mark = "@pytest.mark.isolated\n" if kind == "I" else ""
        # Tests 2 and 3 sit in a class, so class boundaries are crossed too.
        indent = "    " if pos in (1, 2) else ""
        self_arg = "self, " if indent else ""
        body = (f"{mark}def test_{pos}_{kind}({self_arg}sess, mod{', cls' if indent else ''}):\n"
                f"    COUNTS.append({pos})\n")
        tests.append((indent, textwrap.indent(body, indent)))
    out = ["import pytest", "COUNTS = []", "",
           "@pytest.fixture(scope='module')",
           "def mod():",
           "    print('\\nEVENT module-setup %s' % __name__)",
           "    yield",
           "    print('\\nEVENT module-teardown %s' % __name__)", ""]
    out.append(tests[0][1])
    out.append("class TestK:\n"
               "    @pytest.fixture(scope='class')\n"
               "    def cls(self):\n"
               "        print('\\nEVENT class-setup %s' % __name__)\n"
               "        yield\n"
               "        print('\\nEVENT class-teardown %s' % __name__)\n")
    out.append(tests[1][1])
    out.append(tests[2][1])
    out.append(tests[3][1])
    return "\n".join(out)


def test_isolated_and_plain_tests_interleave_in_every_order(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(SCOPED_CONFTEST)
    files = {f"test_{p}": _interleaved_module(p) for p in PATTERNS}
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=4 * len(PATTERNS))
    assert "was not torn down properly" not in result.stdout.str() + result.stderr.str()
    seen = events(result.outlines)
    assert seen[0] == "session-setup pid-ok=True" and seen[-1] == "session-teardown pid-ok=True"
    expected = []
    for p in PATTERNS:
        expected += [f"module-setup test_{p}", f"class-setup test_{p}", f"class-teardown test_{p}",
                     f"module-teardown test_{p}"]
    assert seen[1:-1] == expected


def test_isolated_last_in_module_then_plain_module(pytester: pytest.Pytester, full_sandbox: None) -> None:
    """The pytest-forked#67 shape: an isolated test ends a module and a plain
    test follows in the next one."""
    pytester.makepyfile(
        test_a="""
            import pytest
            def test_plain(): pass
            @pytest.mark.isolated
            def test_last(): pass
        """,
        test_b="""
            def test_next(): pass
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=3)
    assert "not torn down properly" not in result.stdout.str()


def test_higher_scoped_fixture_error_is_reported_as_pytest_would(pytester: pytest.Pytester,
                                                                  full_sandbox: None) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="module")
        def broken():
            raise RuntimeError("module fixture failed")

        @pytest.mark.isolated
        def test_a(broken): pass

        @pytest.mark.isolated
        def test_b(broken): pass

        def setup_function():
            pass
    """)
    isolated = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    isolated.assert_outcomes(errors=2)
    isolated.stdout.fnmatch_lines(["*RuntimeError: module fixture failed*",
                                   "ERROR test_higher_scoped_fixture_error_is_reported_as_pytest_would.py::test_a*"])


TEARDOWN_OUTPUT = """
import pytest

@pytest.fixture(scope="module")
def modfix():
    yield
    print("modfix teardown")

@pytest.fixture
def fnfix():
    yield
    print("fnfix teardown")

def test_last(modfix, fnfix):
    assert False
"""


@pytest.mark.parametrize("jobs", [None, "2"])
def test_the_teardown_output_of_both_scopes_is_one_section(pytester: pytest.Pytester, full_sandbox: None,
                                                           jobs: str) -> None:
    """The test's own teardown (in the sandbox) and its module's (in pytest's
    process, after it) print under one "Captured stdout teardown", as plain
    pytest captures the whole phase at once."""
    pytester.makepyfile(test_td=TEARDOWN_OUTPUT)
    runs = {mode: pytester.runpytest_subprocess(*args, timeout=120)
            for mode, args in (("plain", ()), ("isolated", ("--isolate-all",) + (("--isolate-jobs", jobs)
                                                                                  if jobs else ())))}
    for mode, result in runs.items():
        result.assert_outcomes(failed=1)
        lines = result.stdout.lines
        headers = [i for i, line in enumerate(lines) if "Captured stdout teardown" in line]
        assert len(headers) == 1, (mode, result.stdout.str())
        assert lines[headers[0] + 1:headers[0] + 3] == ["fnfix teardown", "modfix teardown"], (mode, lines)
