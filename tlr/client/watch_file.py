"""The watchers of `tlr watch --from-file`: one target a line, a CSV or a JSON export.

A file that starts with ``{`` or ``[`` is JSON (what ``tlr watchers --export --format json``
writes: ``{"items": [...]}``, or a bare list of POST /watchers bodies); one whose first line
is a header naming ``room_id`` or ``url`` is CSV (what ``--format csv`` writes); anything else
has one room id, @user or URL per line (blank lines and ``#`` comments skipped). Values are
passed on as written: the gateway checks each item and says which one it refuses.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Any

from tlr.client.bodies import target

OPTION_COLUMNS = ("quality", "cookies", "output_template")
TRUE = frozenset({"true", "1", "yes"})


class WatchFileError(ValueError):
    """The file cannot be read as any of the three forms."""


@dataclass(frozen=True)
class Item:
    """One watcher of the file, and where it is (a line, or its place in a JSON list)."""

    where: str
    body: dict[str, Any]


def read_items(text: str, defaults: dict[str, Any]) -> list[Item]:
    """The watchers ``text`` lists, each with ``defaults`` (poll_interval, options from the
    command line) where it sets none of its own."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        items = _json_items(stripped)
    else:
        lines = text.splitlines()
        first = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
        header = {cell.strip() for cell in first.split(",")}
        items = _csv_items(lines) if header & {"room_id", "url"} else _line_items(lines)
    return [Item(i.where, _with_defaults(i.body, defaults)) for i in items]


def _json_items(text: str) -> list[Item]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        msg = f"not valid JSON: {exc}"
        raise WatchFileError(msg) from None
    items = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        msg = 'JSON must be {"items": [...]} or a list of POST /watchers bodies'
        raise WatchFileError(msg)
    return [Item(f"item {n}", dict(body)) for n, body in enumerate(items)]


def _csv_items(lines: list[str]) -> list[Item]:
    out = []
    reader = csv.DictReader(lines)
    for row in reader:
        cells = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not any(cells.values()):
            continue
        body: dict[str, Any] = {}
        for name in ("room_id", "url"):
            if cells.get(name):
                body[name] = cells[name]
        if cells.get("poll_interval"):
            interval = cells["poll_interval"]
            body["poll_interval"] = int(interval) if interval.isdigit() else interval
        options: dict[str, Any] = {name: cells[name] for name in OPTION_COLUMNS if cells.get(name)}
        if cells.get("upload_s3"):
            options["upload_s3"] = cells["upload_s3"].lower() in TRUE
        if options:
            body["options"] = options
        out.append(Item(f"line {reader.line_num}", body))
    return out


def _line_items(lines: list[str]) -> list[Item]:
    return [
        Item(f"line {n}", dict(target(line.strip())))
        for n, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _with_defaults(body: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    merged = dict(body)
    if "poll_interval" in defaults:
        merged.setdefault("poll_interval", defaults["poll_interval"])
    options = defaults.get("options", {})
    if options:
        given = merged.get("options")
        merged["options"] = {**options, **given} if isinstance(given, dict) else given or options
    return merged
