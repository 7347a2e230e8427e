"""Where the adapters may have pytest's process write: nowhere a sandbox
of the session may write too (a link planted there would be followed)."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import pytest


def sandbox_writable(item: pytest.Item) -> Tuple[str, ...]:
    """Every path a sandbox of the session may write (see
    ``IsolateSession.writable_anywhere``)."""
    from ..plugin import session_key

    session = item.config.stash.get(session_key, None)
    return session.writable_anywhere(item.session) if session is not None else ()


def writable_root(path: str, roots: Sequence[str]) -> Optional[str]:
    """The one of ``roots`` that ``path`` lies under, as written or with
    its links resolved (a link planted below a root leads anywhere, so the
    path as written counts too); None if it lies under none."""
    forms = {os.path.normpath(os.path.abspath(path)), os.path.realpath(path)}
    for root in roots:
        for r in {os.path.normpath(os.path.abspath(root)), os.path.realpath(root)}:
            if any(f == r or f.startswith(r.rstrip("/") + "/") for f in forms):
                return root
    return None
