"""Builds the optional C accelerator (Linux x86-64); everything else is in pyproject.toml."""
import platform
import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux") and platform.machine() == "x86_64":
    # optional: without a compiler the runtime falls back to forking twice.
    ext_modules.append(Extension("isolate_runtime._fastspawn", ["runtime/isolate_runtime/_fastspawn.c"],
                                 optional=True, extra_compile_args=["-O2", "-fno-stack-protector"]))

setup(ext_modules=ext_modules)
