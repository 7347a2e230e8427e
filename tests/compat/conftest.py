"""Fixtures of the compatibility suite: see ``harness.py``.

Each inner project lives below ``/var/tmp`` (as the plugin tests' do), where
a sandbox lists what a test wrote (below ``/tmp`` only the working
directory's writes would be listed).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List

import pytest

from ..conftest import skip_unless
from ..plugin.conftest import caps, full_sandbox, tmp_path_factory
from .harness import Compat, plugin_modules

__all__ = ["caps", "full_sandbox", "tmp_path_factory", "need", "compat"]


def need(distribution: str) -> None:
    """A test extra (``pip install -e '.[test]'``); CI turns the skip into a failure."""
    skip_unless(bool(plugin_modules(distribution)) or importlib.util.find_spec(distribution) is not None,
                f"{distribution} is not installed (install the test extras)")


@pytest.fixture
def compat(tmp_path: Path, full_sandbox: None) -> Compat:
    return Compat(tmp_path)


#: Differences from plain pytest that are still open: each one is expected
#: to fail (strictly: a fix makes it pass, and its entry must then go).
KNOWN: Dict[str, str] = {}


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith("tests/compat/") and item.name in KNOWN:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"open difference: {KNOWN[item.name]}"))
