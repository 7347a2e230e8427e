"""What pytest-isolate needs of pytest's private parts, in one place.

Each entry says which private name it uses, why, and what happens when a
pytest version lacks it.
"""
from __future__ import annotations

import os
from typing import Any, Callable


def harden_rm_rf() -> None:
    """pytest removes old temporary directories with ``rm_rf``; when an
    entry cannot be removed it chmods the entry and its parents, following
    symbolic links (``_pytest.pathlib.on_rm_rf_error``).  Below basetemp a
    sandboxed test may have planted a link to any file of the user's: the
    handler here removes a link itself, never the file it points at, and
    hands everything else to pytest's.  Without the private name: nothing
    changes."""
    try:
        from _pytest import pathlib
    except ImportError:  # pragma: no cover
        return
    original: Any = getattr(pathlib, "on_rm_rf_error", None)
    if original is None or getattr(original, "isolate_hardened", False):
        return
    pathlib.on_rm_rf_error = _hardened(original)


def _hardened(original: Callable[..., bool]) -> Callable[..., bool]:
    def on_rm_rf_error(func: Any, path: str, excinfo: Any, *, start_path: Any) -> bool:
        if os.path.islink(path):
            parent = os.path.dirname(path)
            try:
                if not os.path.islink(parent):
                    mode = os.stat(parent, follow_symlinks=False).st_mode
                    os.chmod(parent, mode | 0o700)
                os.unlink(path)
            except OSError:
                return False
            return True
        return original(func, path, excinfo, start_path=start_path)

    on_rm_rf_error.isolate_hardened = True  # type: ignore[attr-defined]
    return on_rm_rf_error
