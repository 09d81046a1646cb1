"""Paths of recorded files: relative to RECORDINGS_DIR, never allowed to reach outside it."""

from __future__ import annotations

import posixpath
import stat
from pathlib import Path


def normalize(rel: str) -> str | None:
    """``rel`` as the index stores it (``a/b.mp4``), or None if it is absolute or escapes.

    Lexical only, so the key the recorder and the uploader use for a file stays the same
    whatever symlinks the disk has; :func:`inside` checks the disk.
    """
    if not rel or "\0" in rel or "\\" in rel or rel.startswith("/"):
        return None
    norm = posixpath.normpath(rel)
    if norm in (".", "..") or norm.startswith("../"):
        return None
    try:
        norm.encode()  # surrogate-escaped bytes cannot be stored in SQLite TEXT
    except UnicodeEncodeError:
        return None
    return norm


def inside(root: Path, rel: str) -> Path | None:
    """The absolute path of ``rel`` if its folder resolves inside ``root`` (blocking: stats).

    The folder is resolved, not the file, so a symlink named like a recording is itself the
    thing found (and unlinked), never the file it points to.
    """
    norm = normalize(rel)
    if norm is None:
        return None
    base = root.resolve()
    path = base / norm
    try:
        parent = path.parent.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return None
    if not parent.is_relative_to(base):
        return None
    return parent / path.name


def regular_file(path: Path) -> tuple[int, int] | None:
    """(size, mtime in µs) of a regular file (not following a symlink), else None. Blocking."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns // 1000
