"""The JSON bodies of POST /recordings and POST /watchers, built from a command's arguments."""

from __future__ import annotations

import argparse
from typing import Any


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


def watcher_body(args: argparse.Namespace, *, with_target: bool = True) -> dict[str, Any]:
    """The body of ``tlr watch``; without ``with_target``, only its interval and options."""
    body: dict[str, Any] = target(args.target) if with_target else {}
    if args.poll_interval is not None:
        body["poll_interval"] = args.poll_interval
    options = _options(args)
    if args.output_template:  # a watcher keeps its template among its options
        options["output_template"] = args.output_template
    if options:
        body["options"] = options
    return body
