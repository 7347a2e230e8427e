"""End-to-end tests of the pytest plugin (pytester, subprocess mode).

What a sandboxed test writes below ``/tmp`` (pytester's default place) is
taken for temporary files and not listed among its discarded writes.  These
tests put their generated projects under ``/var/tmp`` instead, where the
sandbox treats them as it treats a real checkout.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from _pytest.tmpdir import TempPathFactory

from ..conftest import skip_unless

PROJECTS = Path(os.environ.get("PYTEST_ISOLATE_TEST_PROJECTS", "/var/tmp")) / f"pytest-isolate-tests-{os.getpid()}"


@pytest.fixture(scope="session")
def tmp_path_factory(request: pytest.FixtureRequest) -> Iterator[TempPathFactory]:
    factory = TempPathFactory.from_config(request.config, _ispytest=True)
    factory._given_basetemp = PROJECTS
    yield factory
    shutil.rmtree(PROJECTS, ignore_errors=True)


@pytest.fixture(scope="session")
def caps() -> object:
    import isolate_runtime

    return isolate_runtime.probe()


@pytest.fixture
def full_sandbox(caps: object) -> None:
    """Skip (or fail under PYTEST_ISOLATE_MUST_WORK=1) without every layer."""
    missing = [layer.name for layer in caps.missing()]  # type: ignore[attr-defined]
    skip_unless(not missing, f"this host lacks isolation layers: {', '.join(missing)}")
