from __future__ import annotations

from typing import Any, Callable

import pytest
from isolate_runtime import SandboxResult, SandboxSpec, probe, run
from isolate_runtime.spec import CallablePayload

from ..conftest import skip_unless


@pytest.fixture(scope="session")
def full_isolation() -> None:
    missing = [f"{layer.name}: {layer.reason}" for layer in probe().missing()]
    skip_unless(not missing, "this host lacks isolation layers: " + "; ".join(missing))


@pytest.fixture
def sandbox(full_isolation: None) -> Callable[..., SandboxResult]:
    """``sandbox(fn, *args, **spec_fields)`` runs ``fn`` fully isolated."""

    def _run(fn: Callable[..., Any], *args: Any, **fields: Any) -> SandboxResult:
        return run(SandboxSpec(payload=CallablePayload(fn, tuple(args)), **fields))

    return _run
