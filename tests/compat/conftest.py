"""Fixtures of the compatibility suite (issue #14): see ``harness.py``.

Each inner project lives below ``/var/tmp`` (as the plugin tests' do): a
checkout there is seen copy-on-write by a sandbox, one below ``/tmp`` is
behind the sandbox's private ``/tmp``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

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
