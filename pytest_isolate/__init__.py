"""pytest-isolate: run pytest tests in throwaway Linux sandboxes.

The pytest plugin lives in :mod:`pytest_isolate.plugin`; the sandbox runtime
is the separate, pytest-free package :mod:`isolate_runtime`.
"""
from __future__ import annotations

__version__ = "0.1.0.dev0"
