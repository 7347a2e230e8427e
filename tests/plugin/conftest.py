"""End-to-end tests of the pytest plugin (pytester, subprocess mode).

The sandbox gives every test a private ``/tmp``, so a project that lives under
``/tmp`` (pytester's default place) would be invisible inside it.  These tests
put their generated projects under ``/var/tmp`` instead, where the sandbox sees
the host's files copy-on-write, as it sees a real checkout.
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
