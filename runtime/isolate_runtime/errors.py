"""One small, structured, picklable error family for the sandbox runtime.

Errors cross process boundaries (a setup failure in the sandboxed child is
reported to the parent), so every exception here keeps its fields in
``args`` and pickles without custom reducers.
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Optional


class SandboxError(Exception):
    """Base class of every error the runtime raises on purpose."""


class SpecError(SandboxError, ValueError):
    """A value in a :class:`~isolate_runtime.spec.SandboxSpec` is invalid.

    ``field`` names the spec field, ``value`` the offending value.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(field, value, reason)
        self.field = field
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid {self.field} {self.value!r}: {self.reason}"


class SetupError(SandboxError):
    """Building the sandbox failed at ``step`` (before the payload ran).

    ``errno`` is the OS error number (0 when the failure was not an OS
    error), ``detail`` what was attempted, ``hint`` what to do about it.
    """

    #: The failed call's place in the sandbox's program, when a call failed.
    index: Optional[int] = None

    def __init__(self, step: str, err: int, detail: str, hint: str = "") -> None:
        super().__init__(step, err, detail, hint)
        self.step = step
        self.errno = err
        self.detail = detail
        self.hint = hint

    @property
    def strerror(self) -> str:
        return os.strerror(self.errno) if self.errno else ""

    def __str__(self) -> str:
        msg = f"sandbox setup failed at {self.step}: {self.detail}"
        if self.errno:
            name = _errno.errorcode.get(self.errno, str(self.errno))
            msg += f": {self.strerror} ({name})"
        if self.hint:
            msg += f" — {self.hint}"
        return msg


class UnsupportedError(SandboxError):
    """A layer the spec requires is not available on this host."""

    def __init__(self, layer: str, reason: str, fix: str = "") -> None:
        super().__init__(layer, reason, fix)
        self.layer = layer
        self.reason = reason
        self.fix = fix

    def __str__(self) -> str:
        msg = f"required isolation layer {self.layer!r} is unavailable: {self.reason}"
        if self.fix:
            msg += f". Fix: {self.fix}"
        return msg


class PayloadLost(SandboxError):
    """The payload's result could not be sent or decoded (e.g. a return
    value that is not plain data)."""


class PayloadRaised(SandboxError):
    """What a callable payload raised, described as plain data: the
    exception object itself never crosses the sandbox boundary.

    ``type_name`` is the exception's qualified class name, ``module`` the
    module that defines it, ``message`` its ``str()``, ``traceback`` the
    formatted traceback as it was in the sandbox.
    """

    def __init__(self, type_name: str, module: str, message: str, traceback: str = "") -> None:
        super().__init__(type_name, module, message, traceback)
        self.type_name = type_name
        self.module = module
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def oserror_step(step: str, exc: OSError, detail: str, hint: Optional[str] = None) -> SetupError:
    """Translate an ``OSError`` at the boundary into a :class:`SetupError`."""
    return SetupError(step, exc.errno or 0, detail, hint or "")
