"""The release artifacts, built as a release would build them
(``python -m build``: the sdist, then the wheel from the sdist): the MIT
LICENSE in both, the test suite in the sdist, and, for a build without a C
compiler, a wheel that says why its C accelerator is missing."""
from __future__ import annotations

import email.parser
import os
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
                                    ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.so", "_fastspawn-build.json",
                                    ".unprivileged-run*", ".coverage*")
#: A compiler that is not there: the build must go on without the accelerator.
NO_COMPILER = "/nonexistent/cc"

pytestmark = pytest.mark.slow

#: ``python -m <argv[1]> <argv[2:]...>`` as if the unpacked wheel were the
#: only installation: an editable install of this checkout (the suite's own)
#: adds an import hook that would still find the checkout's compiled module.
AS_INSTALLED = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
module, sys.argv = sys.argv[1], sys.argv[1:]
if module == "where":
    import isolate_runtime, isolate_runtime.probe, pytest_isolate
    print(isolate_runtime.__file__, pytest_isolate.__file__)
else:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: TempPathFactory) -> Iterator[Dict[str, Path]]:
    try:
        import build  # noqa: F401
    except ImportError:
        skip_unless(False, "the 'build' package is not installed (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("release")
    src = tmp / "src"
    shutil.copytree(PROJECT, src, ignore=NOT_SOURCE)
    env = dict(os.environ, CC=NO_COMPILER)
    out = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp / "dist"), str(src)],
                         env=env, capture_output=True, text=True, timeout=600)
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


def test_a_wheel_built_without_a_compiler_says_why_it_has_no_accelerator(built: Dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = whl.namelist()
        assert not [n for n in names if n.startswith("isolate_runtime/_fastspawn") and n.endswith(".so")], names
        assert whl.read("isolate_runtime/_fastspawn-build.json").decode().strip() == (
            f'{{"built": false, "reason": "no C compiler ({NO_COMPILER} not found)"}}')
        site = built["tmp"] / "site"
        whl.extractall(site)
    # (run from the unpacked wheel: a script's own directory comes first on sys.path)
    env = dict(os.environ, PYTHONPATH=str(site), PYTEST_ADDOPTS="")
    env.pop("ISOLATE_RUNTIME_SPAWN", None)
    where = subprocess.run([sys.executable, "-c", AS_INSTALLED, "where"],
                           env=env, cwd=site, capture_output=True, text=True, timeout=60)
    assert where.stdout.split() == [str(site / "isolate_runtime" / "__init__.py"),
                                    str(site / "pytest_isolate" / "__init__.py")], where.stderr
    expected = [f"C accel  not used: not built: no C compiler ({NO_COMPILER} not found); sandboxes are set up "
                "in Python",
                "             fix: install a C compiler and the Python headers (Debian/Ubuntu: apt-get install gcc "
                "python3-dev), then reinstall pytest-isolate from source (pip install --force-reinstall --no-deps "
                "--no-binary pytest-isolate pytest-isolate; in a checkout: pip install -e .)"]
    for module, args in (("isolate_runtime", ["probe"]), ("pytest_isolate", [])):
        out = subprocess.run([sys.executable, "-c", AS_INSTALLED, module, *args], env=env, cwd=site,
                             capture_output=True, text=True, timeout=120)
        lines = out.stdout.splitlines()
        assert lines[lines.index(expected[0]):][:2] == expected, out.stdout + out.stderr
