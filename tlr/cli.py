"""The ``tlr`` command: ``tlr up`` (dev stack), ``tlr demo``, ``tlr nats-defs`` and the client."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import metadata
from pathlib import Path

from shared.logging import configure_logging
from tlr import nats_definitions
from tlr.client.commands import add_client_commands

DISTRIBUTION = "tiktok-live-recorder-service"


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, as uv installed it)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _up(_args: argparse.Namespace) -> int:
    from tlr.devstack import up

    configure_logging("tlr", "INFO", "console" if sys.stderr.isatty() else "json")
    return asyncio.run(up())


def _demo(args: argparse.Namespace) -> int:
    from tlr.demo import demo

    configure_logging("tlr", "WARNING", "console" if sys.stderr.isatty() else "json")
    return asyncio.run(demo(Path(args.dir), keep=args.keep))


def _check(args: argparse.Namespace) -> int:
    from tlr.check import main_check

    configure_logging("tlr", "WARNING", "console" if sys.stderr.isatty() else "json")
    return asyncio.run(main_check(args))


def _asyncapi(args: argparse.Namespace) -> int:
    from tlr.asyncapi_file import main_asyncapi

    return main_asyncapi(args.check, Path(args.path))


def _postman(args: argparse.Namespace) -> int:
    from tlr.client.postman import main_postman

    return main_postman(args.check, Path(args.path))


def _nats_defs(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if args.check:
        stale = nats_definitions.stale(root, args.replicas)
        if stale:
            sys.stderr.write(f"out of date (run `tlr nats-defs`): {', '.join(stale)}\n")
            return 1
        return 0
    for path in nats_definitions.write(root, args.replicas):
        sys.stdout.write(f"wrote {path}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start nats-server and the five services (Ctrl-C stops all)")
    up.set_defaults(func=_up)
    demo = sub.add_parser(
        "demo", help="record a fake live end to end (fake TikTok + S3 + stack), then report"
    )
    demo.add_argument("--dir", default="var/demo", help="working folder, wiped at each run")
    demo.add_argument("--keep", action="store_true", help="keep the stack running afterwards")
    demo.set_defaults(func=_demo)
    check = sub.add_parser(
        "check",
        help="resolve @user/URL/room id once from this host and show every TikTok step",
    )
    check.add_argument("target", help="@user, a TikTok URL, or a room id")
    check.add_argument("--proxy", help="go through this proxy (http, https, socks5)")
    check.add_argument("--cookies", help="a cookies file (Netscape or JSON) to send")
    check.add_argument("--no-probe", action="store_true", help="do not pull the stream URLs")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_check)
    spec = sub.add_parser(
        "asyncapi", help="write the AsyncAPI event catalogue (docs/asyncapi.json)"
    )
    spec.add_argument("--path", default="docs/asyncapi.json", help="target file")
    spec.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    spec.set_defaults(func=_asyncapi)
    defs = sub.add_parser("nats-defs", help="write the stream/consumer/KV files under nats/")
    defs.add_argument("--dir", default="nats", help="target folder (default: nats)")
    defs.add_argument("--replicas", type=int, default=1, help="replicas (3 in a cluster)")
    defs.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    defs.set_defaults(func=_nats_defs)
    postman = sub.add_parser("postman", help="write docs/postman/ from the OpenAPI document")
    postman.add_argument(
        "--path", default="docs/postman/tlr.postman_collection.json", help="target file"
    )
    postman.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    postman.set_defaults(func=_postman)
    add_client_commands(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
