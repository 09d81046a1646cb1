"""The job and file commands: record, jobs (a list, or one job, --follow), cancel, files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from tlr.client.api import Client
from tlr.client.bodies import recording_body
from tlr.client.output import (
    API_ERROR,
    OK,
    USAGE,
    err,
    fields,
    out,
    page_line,
    print_json,
    table,
    timestamp,
    tty,
)
from tlr.client.progress import (
    TERMINAL,
    PlainView,
    RichView,
    Snapshot,
    View,
    follow,
    human_bytes,
    human_duration,
)


def accepted(client: Client, answer: dict[str, Any], what: str) -> None:
    task_id = str(answer.get("task_id", ""))
    fields(
        [
            ("task_id", task_id),
            ("status", answer.get("status")),
            ("job", f"{client.job_url(task_id)}  (GET with X-API-Key)"),
            ("follow", f"tlr jobs {task_id} --follow"),
        ]
    )
    if what == "watch":
        out("the watcher appears in `tlr watchers` once the scheduler has it")


def record(args: argparse.Namespace, client: Client) -> int:
    answer = client.create_recording(recording_body(args))
    if not args.follow:
        if args.json:
            print_json(answer)
        else:
            accepted(client, answer, "record")
        return OK
    if not args.json:
        accepted(client, answer, "record")
    return _follow(args, client, str(answer["task_id"]))


def _show_job(job: dict[str, Any]) -> None:
    snap = Snapshot.of(job)
    upload = job.get("upload") or {}
    watcher = job.get("watcher") or {}
    file_lines = [
        f"{f.get('path')} ({f.get('state')}, {human_bytes(int(f.get('size') or 0))}"
        + (f", {human_duration(f['duration_s'])})" if f.get("duration_s") is not None else ")")
        for f in (job.get("progress") or {}).get("files", [])
    ]
    error = None
    if job.get("error_code"):
        error = f"{job['error_code']}: {job.get('error_message') or ''}".rstrip(": ")
        if job.get("correlation_id"):
            error += f" (correlation id {job['correlation_id']})"
    fields(
        [
            ("task_id", job.get("task_id")),
            ("kind", job.get("kind")),
            ("status", job.get("status")),
            ("room_id", job.get("room_id")),
            ("url", job.get("url")),
            ("title", job.get("title")),
            ("progress", snap.figures() if job.get("kind") != "watch" else None),
            ("error", error),
            ("upload", _upload_line(upload) if upload else None),
            ("watcher", f"{watcher.get('key')} ({watcher.get('status')})" if watcher else None),
            ("jobs", ", ".join(job.get("jobs") or [])),
            ("files", file_lines),
        ]
    )


def _upload_line(upload: dict[str, Any]) -> str:
    line = (
        f"{upload.get('state')}  {upload.get('files_done', 0)} files  "
        f"{human_bytes(int(upload.get('bytes_done') or 0))} of "
        f"{human_bytes(int(upload.get('bytes_total') or 0))}"
    )
    if upload.get("error_code"):
        line += f"  {upload['error_code']}"
    return line


def jobs(args: argparse.Namespace, client: Client) -> int:
    if args.task_id is None:
        if args.follow:
            err("--follow needs a job ID")
            return USAGE
        return _list_jobs(args, client)
    if args.follow:
        return _follow(args, client, args.task_id)
    job = client.get_job(args.task_id)
    if args.json:
        print_json(job)
    else:
        _show_job(job)
    return OK


def _list_jobs(args: argparse.Namespace, client: Client) -> int:
    params: dict[str, str | int | list[str]] = {"page_size": args.page_size}
    for name, value in (
        ("status", args.status),
        ("kind", args.kind),
        ("room", args.room),
        ("user", args.user),
        ("since", args.since),
        ("until", args.until),
        ("cursor", args.cursor),
    ):
        if value is not None:
            params[name] = value
    answer = client.list_jobs(params)
    if args.json:
        print_json(answer)
        return OK
    rows = [
        [
            timestamp(j.get("created_at")),
            str(j.get("status", "")),
            str(j.get("kind", "")),
            str(j.get("user") or j.get("room_id") or "-"),
            str(j.get("error_code") or "-"),
            str(j.get("task_id", "")),
        ]
        for j in answer.get("items", [])
    ]
    table(["ASKED (UTC)", "STATUS", "KIND", "USER/ROOM", "ERROR", "ID"], rows)
    cursor = answer.get("next_cursor")
    out(f"more: tlr jobs --cursor {cursor} (same filters)" if cursor else "no more jobs")
    return OK


def _follow(args: argparse.Namespace, client: Client, task_id: str) -> int:
    view: View
    if args.json:
        view = _Silent()
    elif tty():
        view = RichView(Console(), task_id[:8])
    else:
        view = PlainView(sys.stdout)
    job = follow(lambda: client.get_job(task_id), view, interval=args.interval, pace=client.pace)
    if args.json:
        print_json(job)
    else:
        _show_job(job)
    return OK if job.get("status") == "SUCCESS" else API_ERROR


class _Silent:
    """--json with --follow: only the final answer is printed."""

    def update(self, _snap: Snapshot) -> None:
        return None

    def note(self, text: str) -> None:
        err(text)

    def close(self) -> None:
        return None


def cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.cancel_job(args.task_id)
    if args.json:
        print_json(job)
    else:
        state = job.get("status")
        ending = "" if state in TERMINAL else " (the recording finalizes its files, then ends)"
        out(f"{args.task_id}: {state}{ending}")
    return OK


def files(args: argparse.Namespace, client: Client) -> int:
    params: dict[str, str | int] = {"page": args.page, "page_size": args.page_size}
    for name, value in (
        ("room_id", args.room_id),
        ("url", args.url),
        ("job_id", args.job_id),
        ("from", args.since),
        ("to", args.until),
    ):
        if value is not None:
            params[name] = value
    answer = client.list_files(params)
    if args.json:
        print_json(answer)
        return OK
    rows = [
        [
            timestamp(f.get("mtime")),
            human_bytes(int(f.get("size") or 0)),
            human_duration(f.get("duration_s")),
            str(f.get("user") or f.get("room_id") or "-"),
            "s3" if f.get("s3") else "-",
            "yes" if f.get("local", True) else "no",
            str(f.get("path", "")),
        ]
        for f in answer.get("items", [])
    ]
    table(["WRITTEN (UTC)", "SIZE", "DURATION", "USER/ROOM", "S3", "LOCAL", "PATH"], rows)
    out(page_line(answer, "file"))
    return OK
