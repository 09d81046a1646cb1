"""Files generated from the code and checked in (AsyncAPI, Postman): normalise, write, or say stale.

A generated file must change only when the contract does (an event, a route, a field), never
because a library upgrade renders the same contract differently: :func:`normalised` is applied
to every JSON document before it is written or compared.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any


def normalised(node: Any) -> Any:
    """``node`` (a JSON value) with every ``description`` dedented and stripped the same way.

    ``inspect.cleandoc`` is what Python itself applies to docstrings; msgspec before 0.23 kept
    their indentation and 0.23 drops it, so both give the same text once this has run.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else normalised(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [normalised(item) for item in node]
    return node


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
