"""Builds the optional C accelerator (Linux x86-64); everything else is in pyproject.toml.

The extension is optional: without a compiler the runtime falls back to
forking twice.  pip shows an optional extension's build failure only with
``-v``, so the outcome is recorded next to the extension, in
``_fastspawn-build.json``, and ``python -m isolate_runtime probe`` (and the
pytest header) say whether the accelerator is in use and, if not, why.
"""
import json
import os
import platform
import shutil
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: Read by isolate_runtime.probe (keep the two names in step).
RECORD = "_fastspawn-build.json"


def _why(builder: build_ext, error: BaseException) -> str:
    compiler = list(getattr(builder.compiler, "compiler_so", None) or [])
    if compiler and shutil.which(compiler[0]) is None:
        return f"no C compiler ({compiler[0]} not found)"
    include = sysconfig.get_paths().get("include") or ""
    if include and not os.path.exists(os.path.join(include, "Python.h")):
        return f"no Python headers (no Python.h in {include})"
    return f"the C compiler failed ({error}); pip install -v shows its output"


class RecordingBuildExt(build_ext):
    """``build_ext`` that writes down whether each extension was built."""

    def build_extension(self, ext: Extension) -> None:
        record = os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), RECORD)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        try:
            super().build_extension(ext)
        except Exception as e:  # optional=True: setuptools warns and goes on
            _write(record, {"built": False, "reason": _why(self, e)})
            raise
        _write(record, {"built": True})

    def copy_extensions_to_source(self) -> None:
        # an editable install builds elsewhere and copies the extension into
        # the checkout: the record goes with it
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            package = ext.name.rpartition(".")[0]
            built = os.path.join(self.build_lib, *package.split("."), RECORD)
            if os.path.exists(built):
                self.copy_file(built, os.path.join(build_py.get_package_dir(package), RECORD))


def _write(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f)
        f.write("\n")


ext_modules = []
if sys.platform.startswith("linux") and platform.machine() == "x86_64":
    # optional: without a compiler the runtime falls back to forking twice.
    ext_modules.append(Extension("isolate_runtime._fastspawn", ["runtime/isolate_runtime/_fastspawn.c"],
                                 optional=True, extra_compile_args=["-O2", "-fno-stack-protector"]))

setup(ext_modules=ext_modules, cmdclass={"build_ext": RecordingBuildExt})
