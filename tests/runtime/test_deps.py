"""Without python-prctl: the error says what is missing and how
to install it - a C compiler and the libcap headers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEPS = Path(__file__).resolve().parents[2] / "runtime" / "isolate_runtime" / "_deps.py"
#: What a python-prctl whose libcap went away says on import.
BROKEN = "libcap.so.2: cannot open shared object file: No such file or directory"
EXPECTED = (f"isolate_runtime cannot import python-prctl ({BROKEN}); it sets each sandbox's capabilities, "
            "no_new_privs and parent-death signal. python-prctl is compiled when it is installed, which needs a C "
            "compiler and the libcap headers: on Debian/Ubuntu apt-get install gcc libcap-dev python3-dev, on "
            "Fedora dnf install gcc libcap-devel python3-devel; then pip install --force-reinstall --no-binary "
            "python-prctl python-prctl")


def _broken_prctl(tmp_path: Path) -> "dict[str, str]":
    (tmp_path / "prctl.py").write_text(f"raise ImportError({BROKEN!r})\n")
    return dict(os.environ, PYTHONPATH=str(tmp_path), PYTEST_ADDOPTS="")


def test_import_prctl_says_how_to_install_it(tmp_path: Path) -> None:
    # import_prctl on its own: the package's __init__ would import prctl first.
    code = (f"import importlib.util as u; s = u.spec_from_file_location('deps', {str(DEPS)!r}); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); m.import_prctl()")
    out = subprocess.run([sys.executable, "-c", code], env=_broken_prctl(tmp_path), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == f"ImportError: {EXPECTED}"
    assert "ImportError: " + BROKEN in out.stderr  # the cause stays in the traceback
    missing = subprocess.run([sys.executable, "-c", code.replace("m.import_prctl()", "")], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 0  # only calling it imports prctl


def test_importing_the_runtime_without_prctl_says_how_to_install_it(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import isolate_runtime"], env=_broken_prctl(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.stderr.splitlines()[-1] == f"ImportError: {EXPECTED}"
