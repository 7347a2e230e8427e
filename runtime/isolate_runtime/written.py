"""What the payload wrote outside its writable paths: listed by the caller,
from the sandbox's upper layers, after the payload is gone.

The payload never gets a say in this list: a test that could empty it could
hide what it wrote.  The caller holds the upper layers' tmpfs and the sandbox's
root directory through fds the runtime opened before the payload existed,
together with how many inodes and blocks each held then: unchanged counts
mean nothing was written, and no directory is read at all.

The trees were made by a hostile payload, so the walk never follows a
symbolic link (every directory is opened with ``O_NOFOLLOW`` relative to
its parent's fd), and it is bounded in entries and depth: a payload that
creates a million files costs the caller :data:`LIMIT` entries.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable, Collection, List, Optional, Sequence, Tuple

#: Most paths listed for one sandbox.
LIMIT = 1000
#: Deepest directory level looked into.
MAX_DEPTH = 64

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Layers:
    """The caller's handles on one sandbox's writable layers."""

    #: fd of the upper layers' tmpfs (subdirectories ``u<i>``), or -1.
    upper_fd: int = -1
    #: fd of the sandbox's root directory, or -1.
    root_fd: int = -1
    #: (inodes, blocks) in use in each when the payload started; -1: unknown.
    upper_before: Tuple[int, int] = (-1, -1)
    root_before: Tuple[int, int] = (-1, -1)

    def close(self) -> None:
        for fd in (self.upper_fd, self.root_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.upper_fd = self.root_fd = -1


def _usage(fd: int) -> Tuple[int, int]:
    st = os.fstatvfs(fd)
    return st.f_files - st.f_ffree, st.f_blocks - st.f_bfree


def _changed(fd: int, before: Tuple[int, int]) -> bool:
    if fd < 0:
        return False
    if before[0] < 0:
        return True
    try:
        return _usage(fd) != before
    except OSError:
        return True


def show(name: str) -> str:
    """A path as shown to users: undecodable bytes and control characters
    escaped (a file name may hold a newline or a terminal escape)."""
    if name.isprintable():
        return name
    return repr(name)[1:-1]


def listing(layers: Layers, overlays: Sequence[str], known_top: Collection[str],
            reported: Optional[Collection[str]] = None, limit: int = LIMIT) -> List[str]:
    """Paths created, changed or deleted under the overlay targets
    ``overlays`` (upper directory ``u<i>`` for ``overlays[i]``), and new
    top-level names of the root that are not in ``known_top``.  Only the
    overlays in ``reported`` (default: all) are listed."""
    out: List[str] = []
    if _changed(layers.upper_fd, layers.upper_before):
        wanted = set(reported) if reported is not None else None
        for i, target in enumerate(overlays):
            if wanted is not None and target not in wanted:
                continue
            try:
                top = os.open(f"u{i}", _DIR_FLAGS, dir_fd=layers.upper_fd)
            except OSError:
                continue
            try:
                _walk(top, target.rstrip("/"), out, limit, 0)
            finally:
                os.close(top)
            if len(out) >= limit:
                return out[:limit]
    if _changed(layers.root_fd, layers.root_before):
        new = _first(layers.root_fd, limit - len(out), lambda name: "/" + name not in known_top)
        out.extend(show("/" + entry.name) for entry in new or ())
    return out[:limit]


def _first(dir_fd: int, most: int,
           wanted: Callable[[str], bool] = lambda name: True) -> Optional[List["os.DirEntry[str]"]]:
    """At most ``most`` of the entries of ``dir_fd`` whose names are
    ``wanted``, sorted by name.  The directory is read only until that many
    are found (a payload may have made millions of entries, and holding them
    all would cost the caller their memory), so which ones are listed
    depends on the directory's order, and only they are sorted.  None:
    the directory cannot be read."""
    found: List["os.DirEntry[str]"] = []
    if most <= 0:
        return found
    try:
        entries = os.scandir(dir_fd)
    except OSError:
        return None
    try:
        with entries:
            for entry in entries:
                if wanted(entry.name):
                    found.append(entry)
                    if len(found) >= most:
                        break
    except OSError:  # what was read before stays listed
        pass
    return sorted(found, key=lambda e: e.name)


def _walk(dir_fd: int, base: str, out: List[str], limit: int, depth: int) -> None:
    """Files (and empty directories) below ``dir_fd``, as paths under ``base``."""
    entries = _first(dir_fd, limit - len(out))
    if entries is None:
        return
    if not entries and depth > 0:
        out.append(show(base))
        return
    for entry in entries:
        if len(out) >= limit:
            return
        path = f"{base}/{entry.name}"
        try:
            is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
        except OSError:
            continue
        if not is_dir or depth >= MAX_DEPTH:
            out.append(show(path))
            continue
        try:
            sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            out.append(show(path))
            continue
        try:
            _walk(sub, path, out, limit, depth + 1)
        finally:
            os.close(sub)


def receive(upper_fd: Optional[int], root_fd: Optional[int], figures: Sequence[int]) -> Layers:
    """The :class:`Layers` from a READY message."""
    return Layers(upper_fd if upper_fd is not None else -1, root_fd if root_fd is not None else -1,
                  (figures[0], figures[1]), (figures[2], figures[3]))
