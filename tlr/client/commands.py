"""The client sub-commands of `tlr` (record, watch, watchers, unwatch, jobs, cancel, files).

Exit codes: 0 success; 1 the API refused or failed (its error_code on stderr), or a followed
job ended FAILURE/CANCELLED; 2 usage (bad arguments, no API key); 3 the API is unreachable;
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shared.tiktok.quality import QUALITIES
from tlr.client.api import ApiError, Client, Unreachable
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

OK, API_ERROR, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_API = "http://127.0.0.1:8000"

Handler = Callable[[argparse.Namespace, Client], int]


class NoApiKey(Exception):
    """Neither --api-key, TLR_API_KEY nor the dev key file of `tlr up`."""


def api_url(flag: str | None) -> str:
    return flag or os.environ.get("TLR_API") or DEFAULT_API


def dev_key_file() -> Path:
    """Where `tlr up` keeps its dev key (TLR_VAR_DIR, default ./var)."""
    return Path(os.environ.get("TLR_VAR_DIR") or "var") / "dev-api-key"


def api_key(flag: str | None) -> str:
    """--api-key, else $TLR_API_KEY, else the key `tlr up` wrote."""
    key = flag or os.environ.get("TLR_API_KEY")
    if key:
        return key
    path = dev_key_file()
    try:
        key = path.read_text().strip()
    except OSError:
        key = ""
    if key:
        return key
    msg = (
        f"no API key: pass --api-key, set TLR_API_KEY, or start the dev stack with "
        f"`make run` (it writes {path})"
    )
    raise NoApiKey(msg)


# --- output ------------------------------------------------------------------------------


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _tty() -> bool:
    return sys.stdout.isatty()


def _json(body: object) -> None:
    _out(json.dumps(body, indent=2, ensure_ascii=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal; plain aligned columns for pipes (stable for scripts)."""
    if _tty():
        table = Table(*headers, box=None, header_style="bold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # data is never markup
        Console().print(table)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _fields(pairs: Sequence[tuple[str, object]]) -> None:
    """``key: value`` lines, aligned; a list value continues on the following lines."""
    shown = [(k, v if isinstance(v, list) else [v]) for k, v in pairs if v not in (None, "", [])]
    width = max((len(k) for k, _ in shown), default=0) + 1
    for k, values in shown:
        for i, v in enumerate(values):
            _out(f"{k + ':' if i == 0 else '':<{width}} {v}")


def _time(text: object) -> str:
    """An API time (ISO 8601, UTC) as ``2026-03-01 12:00:05``."""
    if not isinstance(text, str) or not text:
        return "-"
    return text.replace("T", " ")[:19]


# --- request bodies ----------------------------------------------------------------------


def target(value: str) -> dict[str, str]:
    """A room id (15-20 digits) goes as room_id; anything else (@user, a URL) as url."""
    is_room = value.isascii() and value.isdigit() and 15 <= len(value) <= 20
    return {"room_id": value} if is_room else {"url": value}


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.upload_s3:
        options["upload_s3"] = True
    if args.quality:
        options["quality"] = args.quality
    if args.cookies:
        options["cookies"] = args.cookies
    return options


def recording_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = target(args.target)
    if args.max_duration is not None:
        body["duration"] = args.max_duration
    if args.output_template:
        body["output_template"] = args.output_template
    if options := _options(args):
        body["options"] = options
    return body


def watcher_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = target(args.target)
    if args.poll_interval is not None:
        body["poll_interval"] = args.poll_interval
    options = _options(args)
    if args.output_template:  # a watcher keeps its template among its options
        options["output_template"] = args.output_template
    if options:
        body["options"] = options
    return body


# --- handlers ------------------------------------------------------------------------------


def _accepted(client: Client, answer: dict[str, Any], what: str) -> None:
    task_id = str(answer.get("task_id", ""))
    _fields(
        [
            ("task_id", task_id),
            ("status", answer.get("status")),
            ("job", f"{client.job_url(task_id)}  (GET with X-API-Key)"),
            ("follow", f"tlr jobs {task_id} --follow"),
        ]
    )
    if what == "watch":
        _out("the watcher appears in `tlr watchers` once the scheduler has it")


def _record(args: argparse.Namespace, client: Client) -> int:
    answer = client.create_recording(recording_body(args))
    if not args.follow:
        if args.json:
            _json(answer)
        else:
            _accepted(client, answer, "record")
        return OK
    if not args.json:
        _accepted(client, answer, "record")
    return _follow(args, client, str(answer["task_id"]))


def _watch(args: argparse.Namespace, client: Client) -> int:
    answer = client.create_watcher(watcher_body(args))
    if args.json:
        _json(answer)
    else:
        _accepted(client, answer, "watch")
    return OK


def _watchers(args: argparse.Namespace, client: Client) -> int:
    answer = client.list_watchers(args.page, args.page_size)
    if args.json:
        _json(answer)
        return OK
    rows = [
        [
            str(w.get("key", "")),
            str(w.get("status", "")),
            str(w.get("live_state", "")),
            f"{w.get('poll_interval', '')}s",
            _time(w.get("last_run_at")),
            str(w.get("last_outcome") or "-"),
            str(w.get("current_job_id") or "-"),
            str(w.get("task_id", "")),
        ]
        for w in answer.get("items", [])
    ]
    headers = ["KEY", "STATUS", "LIVE", "POLL", "LAST CHECK", "OUTCOME", "RECORDING", "TASK"]
    _table(headers, rows)
    _out(_page_line(answer, "watcher"))
    return OK


def _unwatch(args: argparse.Namespace, client: Client) -> int:
    answer = client.delete_watcher(args.key)
    if args.json:
        _json(answer)
    else:
        _out(f"watcher {args.key} is being deleted; its recording in progress stops")
    return OK


def _show_job(job: dict[str, Any]) -> None:
    snap = Snapshot.of(job)
    upload = job.get("upload") or {}
    watcher = job.get("watcher") or {}
    files = [
        f"{f.get('path')} ({f.get('state')}, {human_bytes(int(f.get('size') or 0))}"
        + (f", {human_duration(f['duration_s'])})" if f.get("duration_s") is not None else ")")
        for f in (job.get("progress") or {}).get("files", [])
    ]
    error = None
    if job.get("error_code"):
        error = f"{job['error_code']}: {job.get('error_message') or ''}".rstrip(": ")
        if job.get("correlation_id"):
            error += f" (correlation id {job['correlation_id']})"
    _fields(
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
            ("files", files),
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


def _jobs(args: argparse.Namespace, client: Client) -> int:
    if args.follow:
        return _follow(args, client, args.task_id)
    job = client.get_job(args.task_id)
    if args.json:
        _json(job)
    else:
        _show_job(job)
    return OK


def _follow(args: argparse.Namespace, client: Client, task_id: str) -> int:
    view: View
    if args.json:
        view = _Silent()
    elif _tty():
        view = RichView(Console(), task_id[:8])
    else:
        view = PlainView(sys.stdout)
    job = follow(lambda: client.get_job(task_id), view, interval=args.interval, pace=client.pace)
    if args.json:
        _json(job)
    else:
        _show_job(job)
    return OK if job.get("status") == "SUCCESS" else API_ERROR


class _Silent:
    """--json with --follow: only the final answer is printed."""

    def update(self, _snap: Snapshot) -> None:
        return None

    def note(self, text: str) -> None:
        _err(text)

    def close(self) -> None:
        return None


def _cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.cancel_job(args.task_id)
    if args.json:
        _json(job)
    else:
        state = job.get("status")
        ending = "" if state in TERMINAL else " (the recording finalizes its files, then ends)"
        _out(f"{args.task_id}: {state}{ending}")
    return OK


def _files(args: argparse.Namespace, client: Client) -> int:
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
        _json(answer)
        return OK
    rows = [
        [
            _time(f.get("mtime")),
            human_bytes(int(f.get("size") or 0)),
            human_duration(f.get("duration_s")),
            str(f.get("user") or f.get("room_id") or "-"),
            "s3" if f.get("s3") else "-",
            "yes" if f.get("local", True) else "no",
            str(f.get("path", "")),
        ]
        for f in answer.get("items", [])
    ]
    _table(["WRITTEN (UTC)", "SIZE", "DURATION", "USER/ROOM", "S3", "LOCAL", "PATH"], rows)
    _out(_page_line(answer, "file"))
    return OK


def _page_line(answer: dict[str, Any], noun: str) -> str:
    total = int(answer.get("total") or 0)
    size = max(1, int(answer.get("page_size") or 1))
    pages = max(1, -(-total // size))
    return f"page {answer.get('page', 1)} of {pages}, {total} {noun}{'s' if total != 1 else ''}"


# --- wiring --------------------------------------------------------------------------------


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """The key and URL resolved, the client opened, and every failure made an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            key = api_key(args.api_key)
        except NoApiKey as exc:
            _err(f"tlr: {exc}")
            return USAGE
        try:
            with Client(api_url(args.api), key, timeout=args.timeout) as client:
                return handler(args, client)
        except ApiError as exc:
            _err(_describe(exc))
            return API_ERROR
        except Unreachable as exc:
            _err(f"tlr: {exc}\n  is the gateway running? Start the stack with `make run`, or")
            _err("  point --api (or TLR_API) at it")
            return UNREACHABLE
        except KeyboardInterrupt:
            _err("tlr: interrupted (a job keeps running; `tlr cancel ID` stops it)")
            return INTERRUPTED

    return run


def _describe(exc: ApiError) -> str:
    text = f"tlr: error {exc.error_code} (HTTP {exc.status}): {exc.message}"
    if exc.correlation_id:
        text += f"\n  correlation id: {exc.correlation_id}"
    if exc.status == 429 and exc.retry_after is not None:
        text += f"\n  retry after {exc.retry_after:g} s"
    if exc.status == 401:
        text += "\n  pass --api-key or set TLR_API_KEY"
    return text


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = "must be at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("API")
    group.add_argument(
        "--api", metavar="URL", help=f"gateway URL (default: $TLR_API or {DEFAULT_API})"
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help="X-API-Key (default: $TLR_API_KEY, else the dev key `tlr up` wrote)",
    )
    group.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds per request"
    )
    group.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return common


def _recording_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="URL", help="@user, a TikTok live/profile URL, or a room id"
    )
    parser.add_argument("--quality", choices=QUALITIES, help="preferred quality (default: best)")
    parser.add_argument("--upload-s3", action="store_true", help="upload the files to S3")
    parser.add_argument("--cookies", metavar="FILE", help="cookie file inside COOKIES_DIR")
    parser.add_argument("--output-template", metavar="T", help="file name under RECORDINGS_DIR")


def _follow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between polls"
    )


def _paging(parser: argparse.ArgumentParser, default_size: int) -> None:
    parser.add_argument("--page", type=_positive, default=1)
    parser.add_argument("--page-size", type=_positive, default=default_size)


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client commands on ``tlr``'s sub-command parsers."""
    common = [_common()]

    record = subparsers.add_parser(
        "record", parents=common, help="record a live now (POST /recordings)"
    )
    _recording_options(record)
    record.add_argument(
        "--max-duration",
        "--duration",
        type=_positive,
        metavar="S",
        help="stop after S seconds (1-86400)",
    )
    record.add_argument("--follow", action="store_true", help="then follow the job")
    _follow_options(record)
    record.set_defaults(func=_run(_record))

    watch = subparsers.add_parser(
        "watch", parents=common, help="record every live of an account (POST /watchers)"
    )
    _recording_options(watch)
    watch.add_argument(
        "--poll-interval", type=_positive, metavar="S", help="seconds between checks (>= 10)"
    )
    watch.set_defaults(func=_run(_watch))

    watchers = subparsers.add_parser(
        "watchers", parents=common, help="list watchers (GET /watchers)"
    )
    _paging(watchers, 50)
    watchers.set_defaults(func=_run(_watchers))

    unwatch = subparsers.add_parser(
        "unwatch", parents=common, help="delete a watcher (DELETE /watchers/{key})"
    )
    unwatch.add_argument("key", help="room id, @user or the watcher's URL")
    unwatch.set_defaults(func=_run(_unwatch))

    jobs = subparsers.add_parser(
        "jobs", parents=common, help="a job's status (GET /jobs/{id}); --follow until it ends"
    )
    jobs.add_argument("task_id", metavar="ID")
    jobs.add_argument(
        "--follow", action="store_true", help="poll until it ends (exit 0 SUCCESS, else 1)"
    )
    _follow_options(jobs)
    jobs.set_defaults(func=_run(_jobs))

    cancel = subparsers.add_parser(
        "cancel", parents=common, help="cancel a job; its files are finalized (DELETE /jobs/{id})"
    )
    cancel.add_argument("task_id", metavar="ID")
    cancel.set_defaults(func=_run(_cancel))

    files = subparsers.add_parser(
        "files", parents=common, help="recorded files, newest first (GET /files)"
    )
    files.add_argument("--room-id")
    files.add_argument("--url", help="@user, a profile/live URL, or another URL")
    files.add_argument("--job-id")
    files.add_argument("--from", dest="since", metavar="WHEN", help="ISO 8601; no offset = UTC")
    files.add_argument("--to", dest="until", metavar="WHEN", help="ISO 8601; no offset = UTC")
    _paging(files, 50)
    files.set_defaults(func=_run(_files))


def main(argv: Sequence[str] | None = None) -> int:
    """The client commands alone (tests; ``python -m tlr.client``)."""
    parser = argparse.ArgumentParser(prog="tlr", description="A client of the REST API.")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    code: int = args.func(args)
    return code
