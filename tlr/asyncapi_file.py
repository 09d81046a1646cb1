"""``tlr asyncapi [--check]``: the event catalogue written to, or checked against, its file."""

from __future__ import annotations

from pathlib import Path

from shared import asyncapi
from tlr import generated_files

DOC_PATH = Path("docs/asyncapi.json")


def write(path: Path = DOC_PATH) -> None:
    generated_files.write_text(path, asyncapi.render())


def stale(path: Path = DOC_PATH) -> bool:
    """True when ``path`` is missing or differs from what the code generates."""
    return generated_files.is_stale(path, asyncapi.render())


def main_asyncapi(check: bool, path: Path = DOC_PATH) -> int:
    """``tlr asyncapi [--check]``: write the document, or exit 1 when the file is stale."""
    return generated_files.check_or_write(
        path, asyncapi.render(), check=check, command="tlr asyncapi"
    )
