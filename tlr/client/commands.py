"""The client sub-commands of `tlr` (record, watch, watchers, unwatch, jobs, cancel, files).

Exit codes: 0 success; 1 the API refused or failed (its error_code on stderr), or a followed
job ended FAILURE/CANCELLED; 2 usage (bad arguments, no API key); 3 the API is unreachable;
130 interrupted. The commands themselves: tlr.client.job_commands, tlr.client.watcher_commands.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from shared.tiktok.quality import QUALITIES
from tlr.client import download, job_commands, watcher_commands
from tlr.client.api import ApiError, Client, Unreachable
from tlr.client.output import API_ERROR, INTERRUPTED, UNREACHABLE, USAGE, err

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


# --- wiring --------------------------------------------------------------------------------


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """The key and URL resolved, the client opened, and every failure made an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            key = api_key(args.api_key)
        except NoApiKey as exc:
            err(f"tlr: {exc}")
            return USAGE
        try:
            with Client(api_url(args.api), key, timeout=args.timeout) as client:
                return handler(args, client)
        except ApiError as exc:
            err(_describe(exc))
            return API_ERROR
        except Unreachable as exc:
            err(f"tlr: {exc}\n  is the gateway running? Start the stack with `make run`, or")
            err("  point --api (or TLR_API) at it")
            return UNREACHABLE
        except KeyboardInterrupt:
            err("tlr: interrupted (a job keeps running; `tlr cancel ID` stops it)")
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


def _recording_options(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument(
        "target",
        metavar="URL",
        nargs="?" if optional else None,
        help="@user, a TikTok live/profile URL, or a room id",
    )
    parser.add_argument("--quality", choices=QUALITIES, help="preferred quality (default: best)")
    parser.add_argument("--upload-s3", action="store_true", help="upload the files to S3")
    parser.add_argument("--cookies", metavar="FILE", help="cookie file inside COOKIES_DIR")
    parser.add_argument("--output-template", metavar="T", help="file name under RECORDINGS_DIR")


JOB_STATUSES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "CANCELLED")


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
    record.set_defaults(func=_run(job_commands.record))

    watch = subparsers.add_parser(
        "watch", parents=common, help="record every live of an account (POST /watchers)"
    )
    _recording_options(watch, optional=True)
    watch.add_argument(
        "--poll-interval", type=_positive, metavar="S", help="seconds between checks (>= 10)"
    )
    watch.add_argument(
        "--from-file",
        metavar="FILE",
        help="watch every target of FILE (one a line, or a CSV/JSON `tlr watchers --export`); "
        "the options above apply to those that set none (POST /watchers/bulk)",
    )
    watch.set_defaults(func=_run(watcher_commands.watch))

    watchers = subparsers.add_parser(
        "watchers", parents=common, help="list watchers (GET /watchers)"
    )
    _paging(watchers, 50)
    watchers.add_argument(
        "--export", action="store_true", help="print every watcher, for `tlr watch --from-file`"
    )
    watchers.add_argument("--format", choices=("csv", "json"), default="csv", help="of --export")
    watchers.set_defaults(func=_run(watcher_commands.watchers))

    unwatch = subparsers.add_parser(
        "unwatch", parents=common, help="delete a watcher (DELETE /watchers/{key})"
    )
    unwatch.add_argument("key", help="room id, @user or the watcher's URL")
    unwatch.set_defaults(func=_run(watcher_commands.unwatch))

    jobs = subparsers.add_parser(
        "jobs",
        parents=common,
        help="your jobs, newest first (GET /jobs); with an ID its status (GET /jobs/{id}), "
        "--follow until it ends",
    )
    jobs.add_argument("task_id", metavar="ID", nargs="?")
    jobs.add_argument(
        "--follow", action="store_true", help="poll until it ends (exit 0 SUCCESS, else 1)"
    )
    _follow_options(jobs)
    jobs.add_argument(
        "--status",
        action="append",
        choices=JOB_STATUSES,
        help="only jobs in this status (repeat it for any of several)",
    )
    jobs.add_argument("--kind", choices=("recording", "watch"))
    jobs.add_argument("--room", metavar="ROOM_ID")
    jobs.add_argument("--user", metavar="@USER")
    jobs.add_argument("--since", metavar="WHEN", help="asked at or after; ISO 8601 (UTC)")
    jobs.add_argument("--until", metavar="WHEN", help="asked at or before; ISO 8601 (UTC)")
    jobs.add_argument("--page-size", type=_positive, default=50)
    jobs.add_argument("--cursor", help="the next page, as the previous one printed it")
    jobs.set_defaults(func=_run(job_commands.jobs))

    cancel = subparsers.add_parser(
        "cancel", parents=common, help="cancel a job; its files are finalized (DELETE /jobs/{id})"
    )
    cancel.add_argument("task_id", metavar="ID")
    cancel.set_defaults(func=_run(job_commands.cancel))

    files = subparsers.add_parser(
        "files", parents=common, help="recorded files, newest first (GET /files)"
    )
    files.add_argument("--room-id")
    files.add_argument("--url", help="@user, a profile/live URL, or another URL")
    files.add_argument("--job-id")
    files.add_argument("--from", dest="since", metavar="WHEN", help="ISO 8601; no offset = UTC")
    files.add_argument("--to", dest="until", metavar="WHEN", help="ISO 8601; no offset = UTC")
    _paging(files, 50)
    files.set_defaults(func=_run(job_commands.files))
    files_commands = files.add_subparsers(dest="files_command", metavar="{get}")
    get = files_commands.add_parser(
        "get",
        parents=common,
        help="download a file with a progress bar (GET /files/{id}/content); a partial "
        "PATH resumes where it stops",
    )
    get.add_argument("file_id", metavar="ID", type=_positive, help="the id in `tlr files --json`")
    get.add_argument("-o", "--output", required=True, type=Path, metavar="PATH")
    get.set_defaults(func=_run(download.get_file))


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
