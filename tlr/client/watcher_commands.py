"""The watcher commands: watch (one, or a file of them), watchers (a page, an export), unwatch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tlr.client.api import Client
from tlr.client.bodies import watcher_body
from tlr.client.job_commands import accepted
from tlr.client.output import (
    API_ERROR,
    OK,
    USAGE,
    err,
    out,
    page_line,
    print_json,
    table,
    timestamp,
)
from tlr.client.watch_file import WatchFileError, read_items

BULK_MAX = 1_000  # items per POST /watchers/bulk


def watch(args: argparse.Namespace, client: Client) -> int:
    if args.from_file is not None:
        return _watch_file(args, client)
    if args.target is None:
        err("tlr watch: give a target (@user, URL or room id) or --from-file FILE")
        return USAGE
    answer = client.create_watcher(watcher_body(args))
    if args.json:
        print_json(answer)
    else:
        accepted(client, answer, "watch")
    return OK


def _watch_file(args: argparse.Namespace, client: Client) -> int:
    """Every watcher of the file, 1,000 per request; each refused one named with its line."""
    try:
        text = Path(args.from_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err(f"tlr watch: cannot read {args.from_file}: {exc}")
        return USAGE
    defaults = watcher_body(args, with_target=False)
    try:
        items = read_items(text, defaults)
    except WatchFileError as exc:
        err(f"tlr watch: {args.from_file}: {exc}")
        return USAGE
    if not items:
        err(f"tlr watch: {args.from_file} lists no watcher")
        return USAGE
    results: list[dict[str, Any]] = []
    for start in range(0, len(items), BULK_MAX):
        chunk = items[start : start + BULK_MAX]
        answer = client.create_watchers([i.body for i in chunk])
        for result in answer.get("results", []):
            index = int(result.get("index", 0))
            results.append({**result, "index": start + index, "where": chunk[index].where})
    failed = [r for r in results if r.get("status") != 202]
    if args.json:
        print_json({"results": results, "created": len(results) - len(failed)})
    else:
        for r in failed:
            err(
                f"{r['where']}: {r.get('key') or '-'}: {r.get('error_code')}: "
                f"{r.get('error_message')}"
            )
        out(f"{len(results) - len(failed)} watchers made, {len(failed)} refused")
    return API_ERROR if failed else OK


def watchers(args: argparse.Namespace, client: Client) -> int:
    if args.export:
        text = client.export_watchers(args.format)
        out(text.rstrip("\n"))
        return OK
    answer = client.list_watchers(args.page, args.page_size)
    if args.json:
        print_json(answer)
        return OK
    rows = [
        [
            str(w.get("key", "")),
            str(w.get("status", "")),
            str(w.get("live_state", "")),
            f"{w.get('poll_interval', '')}s",
            timestamp(w.get("last_run_at")),
            str(w.get("last_outcome") or "-"),
            str(w.get("current_job_id") or "-"),
            str(w.get("task_id", "")),
        ]
        for w in answer.get("items", [])
    ]
    headers = ["KEY", "STATUS", "LIVE", "POLL", "LAST CHECK", "OUTCOME", "RECORDING", "TASK"]
    table(headers, rows)
    out(page_line(answer, "watcher"))
    return OK


def unwatch(args: argparse.Namespace, client: Client) -> int:
    answer = client.delete_watcher(args.key)
    if args.json:
        print_json(answer)
    else:
        out(f"watcher {args.key} is being deleted; its recording in progress stops")
    return OK
