"""The checks of hostile data (``pytest_isolate.checks``) and the adapters'
refusals that need no sandbox."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import pytest
from isolate_runtime import ProtocolViolation

from pytest_isolate import checks


@pytest.mark.parametrize("check,value,reason", [
    (lambda v: checks.string(v, "a name"), 5, "a name is not a string"),
    (lambda v: checks.string(v, "a name", most=3), "abcd", "a name is longer than 3 characters"),
    (lambda v: checks.integer(v, "a count"), True, "a count is not an integer"),
    (lambda v: checks.integer(v, "a count", least=1), 0, r"a count is out of range \(0\)"),
    (lambda v: checks.integer(v, "a count", most=9), 10, r"a count is out of range \(10\)"),
    (lambda v: checks.number(v, "a time"), float("nan"), "a time is not a finite number >= 0"),
    (lambda v: checks.boolean(v, "a flag"), 1, "a flag is not true or false"),
    (lambda v: checks.listing(v, "items"), {}, "items is not a list"),
    (lambda v: checks.listing(v, "items", most=2), [1, 2, 3], "items has more than 2 entries"),
    (lambda v: checks.mapping(v, "an entry"), [], "an entry is not an object"),
    (lambda v: checks.strings(v, "names"), ["a", 1], "names is not a string"),
])
def test_each_check_says_what_is_wrong_with_what(check: Callable[[Any], Any], value: Any, reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=reason):
        check(value)


def test_checked_values_are_returned() -> None:
    assert checks.string("a", "x") == "a"
    assert checks.integer(3, "x", least=0, most=3) == 3
    assert checks.number(2, "x") == 2.0
    assert checks.boolean(False, "x") is False
    assert checks.listing([1], "x", most=1) == [1]
    assert checks.mapping({"k": 1}, "x") == {"k": 1}


@pytest.mark.parametrize("adapter,reason", [
    ("syrupy", "snapshot assertions, but syrupy's session is not running here"),
    ("benchmark", "benchmarks, but pytest-benchmark's session is not running here"),
])
def test_an_adapter_without_its_plugins_session_refuses_data(adapter: str, reason: str) -> None:
    """Data for a plugin whose session is not running in pytest (a test
    that sends it while the plugin is off) is refused, not merged."""
    pytest.importorskip({"syrupy": "syrupy", "benchmark": "pytest_benchmark"}[adapter])
    import importlib

    module: Any = importlib.import_module(f"pytest_isolate.adapters.{adapter}")
    config: Any = SimpleNamespace(option=SimpleNamespace(update_snapshots=False))
    item: Any = SimpleNamespace(config=config)
    with pytest.raises(ProtocolViolation, match=reason):
        module.Adapter(config).merge(item, {"assertions": []} if adapter == "syrupy" else [])
