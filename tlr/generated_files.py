"""Checked-in generated files (AsyncAPI, Postman): write one, or say it is stale."""

from __future__ import annotations

import sys
from pathlib import Path


def is_stale(path: Path, text: str) -> bool:
    """True when ``path`` is missing or its content differs from ``text``."""
    try:
        return path.read_text(encoding="utf-8") != text
    except OSError:
        return True


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def check_or_write(path: Path, text: str, *, check: bool, command: str) -> int:
    """The body of ``tlr <command> [--check]``: 1 when checking a stale file, else 0."""
    if check:
        if is_stale(path, text):
            sys.stderr.write(f"{path} is out of date (run `{command}`)\n")
            return 1
        return 0
    sys.stdout.write(f"wrote {write_text(path, text)}\n")
    return 0
