"""Third-party modules the runtime cannot work without, imported with an
error that says how to get them.

python-prctl is compiled when it is installed: without a C compiler and
the libcap headers ``pip install`` fails in it ("You need to install libcap
development headers to build this module"), and a build whose libcap is
gone later fails on import.  Either way the user should read what to do,
not only ``No module named 'prctl'``.

No imports from this package: the module must load before the rest of the
runtime can (and its test loads it on its own).
"""
from __future__ import annotations

from types import ModuleType

INSTALL_PRCTL = ("python-prctl is compiled when it is installed, which needs a C compiler and the libcap "
                 "headers: on Debian/Ubuntu apt-get install gcc libcap-dev python3-dev, on Fedora dnf install gcc "
                 "libcap-devel python3-devel; then pip install --force-reinstall --no-binary python-prctl "
                 "python-prctl")
MSG_PRCTL = ("isolate_runtime cannot import python-prctl ({error}); it sets each sandbox's capabilities, "
             "no_new_privs and parent-death signal. " + INSTALL_PRCTL)


def import_prctl() -> ModuleType:
    """``import prctl``, or an ImportError that says how to install it."""
    try:
        import prctl
    except ImportError as e:
        raise ImportError(MSG_PRCTL.format(error=e), name="prctl") from e
    module: ModuleType = prctl
    return module
