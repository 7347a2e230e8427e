"""First-party adapters: other plugins' session state, carried back from the sandbox.

A plugin that records session state while a test runs records it, for an
isolated test, in the sandbox's copy of its session, which is thrown away.
Each adapter here carries one plugin's state back on the route any plugin
can take (:mod:`pytest_isolate.hookspecs`): in the sandbox it notes where
the plugin's records stand before the test
(``pytest_isolate_child_setup``) and returns what the test added, as plain
data (``pytest_isolate_child_data``); in the pytest process it checks that
data as the hostile input it is and adds it to the plugin's own session
there (``pytest_isolate_merge_data``), so that what the plugin writes and
reports at the session's end is what it would have been in-process.  Files
are written by the plugin's own code in the pytest process, to paths
computed there: never a path the sandbox named, and no directory passed
through.

An adapter is imported and registered only when the plugin it adapts is
(by its module, whatever name it was registered under).
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Dict, Mapping, Optional

import pytest

#: The module of an adapted plugin -> the adapter's module here.
ADAPTERS: Dict[str, str] = {
    "syrupy": "syrupy",
    "pytest_benchmark.plugin": "benchmark",
    "_hypothesis_pytestplugin": "hypothesis",
}


def loaded(config: pytest.Config, module: str) -> bool:
    """Is the plugin of this module registered (under any name)?"""
    found = sys.modules.get(module)
    return found is not None and config.pluginmanager.is_registered(found)


class Adapter:
    """One plugin's state, carried back under ``name`` (its data's name)."""

    #: The name the adapter's data travels under.
    name = ""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    # In the sandbox.
    def start(self, item: pytest.Item) -> None:
        """Note where the plugin's records stand before the test."""

    def collect(self, item: pytest.Item) -> Optional[Any]:
        """What the test added to them, as plain data (None: nothing)."""
        return None

    # In the pytest process.
    def merge(self, item: pytest.Item, data: Any) -> None:
        """Check ``data`` (hostile) and add it to the plugin's session here."""

    @pytest.hookimpl
    def pytest_isolate_child_setup(self, item: pytest.Item) -> None:
        self.start(item)

    @pytest.hookimpl
    def pytest_isolate_child_data(self, item: pytest.Item) -> Optional[Mapping[str, object]]:
        data = self.collect(item)
        return None if data is None else {self.name: data}

    @pytest.hookimpl
    def pytest_isolate_merge_data(self, item: pytest.Item, name: str, data: object) -> None:
        if name == self.name:
            self.merge(item, data)


def register(config: pytest.Config) -> None:
    for module, adapter in ADAPTERS.items():
        if loaded(config, module):
            found: Any = importlib.import_module(f"{__name__}.{adapter}")
            config.pluginmanager.register(found.Adapter(config), f"isolate-adapter-{adapter}")


def unregister(config: pytest.Config) -> None:
    for adapter in ADAPTERS.values():
        plugin = config.pluginmanager.get_plugin(f"isolate-adapter-{adapter}")
        if plugin is not None:
            config.pluginmanager.unregister(plugin)
