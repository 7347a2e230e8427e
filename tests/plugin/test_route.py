"""The route back for plugin state: ``pytest_isolate_child_data`` in the
sandbox, ``pytest_isolate_merge_data`` in pytest, and the paths plugins
declare writable (``pytest_isolate_writable``)."""
from __future__ import annotations

import pytest

ROUTE_CONFTEST = """
import pytest

SEEN = []      # what a test recorded: in its sandbox's copy
MERGED = []    # what came back: in pytest's

@pytest.fixture
def record():
    return SEEN.append

def pytest_isolate_child_data(item):
    return {"example.seen": [item.name, *SEEN]} if SEEN else None

def pytest_isolate_merge_data(item, name, data):
    if name == "example.seen":
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ValueError(f"not a list of names: {data!r}")
        MERGED.append(data)

def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"merged: {MERGED}")
"""


def test_a_plugins_data_comes_back_from_each_test(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(ROUTE_CONFTEST)
    pytester.makepyfile(test_route="""
        def test_a(record):
            record("a1")
            record("a2")

        def test_nothing():
            pass

        def test_b(record):
            record("b1")
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["merged: [['test_a', 'a1', 'a2'], ['test_b', 'b1']]"])


def test_data_a_plugin_refuses_crashes_its_test_only(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makeconftest(ROUTE_CONFTEST)
    pytester.makepyfile(test_route="""
        from isolate_runtime import send_message

        def test_lies():
            send_message({"t": "plugin", "name": "example.seen", "data": {"not": "a list"}})

        def test_after(record):
            record("after")
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*CRASHED: the sandbox sent an invalid message during call: the plugin data sent as 'example.seen' "
        "was refused: ValueError: not a list of names: {'not': 'a list'}; it was killed*",
        "merged: [['test_after', 'after']]",
    ])


@pytest.mark.parametrize("message,reason", [
    ('{"t": "plugin", "name": "../escape", "data": 1}', "plugin data under the name '../escape'"),
    ('{"t": "plugin", "name": "x" * 65, "data": 1}', "plugin data under the name 'xxx"),
    ('{"t": "plugin", "name": "example"}', "plugin data 'example' without its data"),
    ('{"t": "plugin", "name": 7, "data": 1}', "a plugin data name is not a string"),
])
def test_plugin_data_under_a_bad_name_is_refused(pytester: pytest.Pytester, full_sandbox: None, message: str,
                                                 reason: str) -> None:
    pytester.makepyfile(test_bad=f"""
        from isolate_runtime import send_message

        def test_sends():
            send_message({message})
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*CRASHED: the sandbox sent an invalid message during call: {reason}*"])


def test_a_test_cannot_flood_plugins_with_messages(pytester: pytest.Pytester, full_sandbox: None) -> None:
    pytester.makepyfile(test_flood="""
        from isolate_runtime import send_message

        def test_floods():
            for _ in range(1001):
                send_message({"t": "plugin", "name": "example", "data": None})
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CRASHED: the sandbox sent an invalid message during call: "
                                 "more than 1000 messages of plugin data*"])


@pytest.mark.parametrize("body,says", [
    ("raise RuntimeError('no data today')", "a pytest_isolate_child_data implementation raised "
                                            "RuntimeError('no data today'); no plugin data was sent for this test"),
    ("return ['not', 'a', 'mapping']", "a pytest_isolate_child_data implementation returned list, not a mapping "
                                       "of names to data; not sent"),
])
def test_a_broken_child_data_hook_costs_its_data_not_the_test(pytester: pytest.Pytester, full_sandbox: None,
                                                               body: str, says: str) -> None:
    pytester.makeconftest(f"""
        def pytest_isolate_child_data(item):
            {body}
    """)
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", "-s", timeout=120)
    result.assert_outcomes(passed=1)
    assert f"pytest-isolate: {says}" in result.stdout.str() + result.stderr.str()


def test_a_path_a_plugin_declares_writable_keeps_what_tests_write(pytester: pytest.Pytester,
                                                                   full_sandbox: None) -> None:
    (pytester.path / "kept").mkdir()
    pytester.makeconftest("""
        def pytest_isolate_writable(config):
            return ["kept"]
    """)
    pytester.makepyfile(test_w="""
        def test_writes():
            with open("kept/out.txt", "w") as f:
                f.write("written in the sandbox")
            with open("lost.txt", "w") as f:
                f.write("discarded")
    """)
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "kept" / "out.txt").read_text() == "written in the sandbox"
    assert not (pytester.path / "lost.txt").exists()


def test_a_missing_path_a_plugin_declares_writable_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        def pytest_isolate_writable(config):
            return ["not-there"]
    """)
    pytester.makepyfile(test_w="def test_x(): pass")
    result = pytester.runpytest_subprocess("--isolate-all", "-p", "no:cacheprovider", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    missing = pytester.path / "not-there"
    result.stderr.fnmatch_lines([f"*pytest-isolate: the plugin '*conftest.py' declares {missing} writable for "
                                 "isolated tests (pytest_isolate_writable), but it does not exist. Create it before "
                                 "the tests run, or fix the plugin."])
    # nothing ran
    assert "test_x" not in result.stdout.str()
