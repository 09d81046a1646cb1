"""The watcher commands: watch, watchers, unwatch."""

from __future__ import annotations

import argparse

from tlr.client.api import Client
from tlr.client.bodies import watcher_body
from tlr.client.job_commands import accepted
from tlr.client.output import OK, out, page_line, print_json, table, timestamp


def watch(args: argparse.Namespace, client: Client) -> int:
    answer = client.create_watcher(watcher_body(args))
    if args.json:
        print_json(answer)
    else:
        accepted(client, answer, "watch")
    return OK


def watchers(args: argparse.Namespace, client: Client) -> int:
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
