"""The release artifacts (issue #17), built as a release would build them
(``python -m build``: the sdist, then the wheel from the sdist): the MIT
LICENSE in both, and the test suite in the sdist."""
from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from _pytest.tmpdir import TempPathFactory

from .conftest import skip_unless

PROJECT = Path(__file__).resolve().parents[1]
#: What a checkout has that a release must not be built from.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.so",
                                    ".unprivileged-run*", ".coverage*")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: TempPathFactory) -> Iterator[Dict[str, Path]]:
    try:
        import build  # noqa: F401
    except ImportError:
        skip_unless(False, "the 'build' package is not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("release")
    src = tmp / "src"
    shutil.copytree(PROJECT, src, ignore=NOT_SOURCE)
    out = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    (wheel,) = (tmp / "dist").glob("*.whl")
    yield {"sdist": sdist, "wheel": wheel, "tmp": tmp}


def _sdist_names(sdist: Path) -> List[str]:
    with tarfile.open(sdist) as tar:
        return [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]


def test_the_sdist_has_the_license_and_the_test_suite(built: Dict[str, Path]) -> None:
    names = _sdist_names(built["sdist"])
    for name in ("LICENSE", "README.md", "CHANGELOG", "tox.ini", "setup.py", "pyproject.toml",
                 "runtime/isolate_runtime/_fastspawn.c", "tests/conftest.py", "tests/runtime/test_cgroups.py",
                 "tests/plugin/data/junit-10.xsd", "docs/index.rst", "docs/conf.py"):
        assert name in names, name
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".so"))]
    with tarfile.open(built["sdist"]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/LICENSE"))
        f = tar.extractfile(member)
        assert f is not None
        license_text = f.read().decode()
    assert license_text == (PROJECT / "LICENSE").read_text()
    assert license_text.startswith("The MIT License (MIT)")


def test_the_wheel_has_the_license_in_its_metadata(built: Dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = whl.namelist()
        (info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        assert f"{info}/licenses/LICENSE" in names, names
        assert whl.read(f"{info}/licenses/LICENSE").decode() == (PROJECT / "LICENSE").read_text()
        metadata = email.parser.Parser().parsestr(whl.read(f"{info}/METADATA").decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
