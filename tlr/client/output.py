"""What the client commands print: lines, aligned fields, tables, JSON, and their exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# What each means: tlr.client.commands.
OK, API_ERROR, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


def tty() -> bool:
    return sys.stdout.isatty()


def print_json(body: object) -> None:
    out(json.dumps(body, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal; plain aligned columns for pipes (stable for scripts)."""
    if tty():
        grid = Table(*headers, box=None, header_style="bold")
        for row in rows:
            grid.add_row(*(Text(cell) for cell in row))  # data is never markup
        Console().print(grid)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    """``key: value`` lines, aligned; a list value continues on the following lines."""
    shown = [(k, v if isinstance(v, list) else [v]) for k, v in pairs if v not in (None, "", [])]
    width = max((len(k) for k, _ in shown), default=0) + 1
    for k, values in shown:
        for i, v in enumerate(values):
            out(f"{k + ':' if i == 0 else '':<{width}} {v}")


def timestamp(text: object) -> str:
    """An API time (ISO 8601, UTC) as ``2026-03-01 12:00:05``."""
    if not isinstance(text, str) or not text:
        return "-"
    return text.replace("T", " ")[:19]


def page_line(answer: dict[str, Any], noun: str) -> str:
    total = int(answer.get("total") or 0)
    size = max(1, int(answer.get("page_size") or 1))
    pages = max(1, -(-total // size))
    return f"page {answer.get('page', 1)} of {pages}, {total} {noun}{'s' if total != 1 else ''}"
