"""Run the fake TikTok standalone: ``python -m tlr.fake_tiktok --port 8090 [--speed 1.0]``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from tlr.fake_tiktok.delivery import DELIVERIES
from tlr.fake_tiktok.media import DEFAULT_PROFILE, default_media_dir
from tlr.fake_tiktok.server import start_fake_tiktok
from tlr.fake_tiktok.state import KIND


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tlr.fake_tiktok", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--speed", type=float, default=1.0, help="media pacing factor")
    parser.add_argument(
        "--delivery",
        choices=DELIVERIES,
        default="chunks",
        help="how the CDN writes FLV: whole tags per tick (chunks), one ~1.4 KB TCP segment at"
        " a time (segments), or 1 B-48 KB writes (irregular); both paced in real time",
    )
    parser.add_argument("--media-dir", type=Path, default=default_media_dir())
    parser.add_argument(
        "--public-base-url",
        help="base URL put into stream URLs (default: the Host the client used)",
    )
    parser.add_argument("--user", action="append", default=[], help="create an offline user")
    parser.add_argument("--live", action="append", default=[], help="create a user who is live")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="profile for --live users")
    parser.add_argument(
        "--kind",
        action="store_true",
        help="start with TikTok's defences off (default: TikTok as it is in late 2026)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with start_fake_tiktok(
        media_dir=args.media_dir,
        speed=args.speed,
        host=args.host,
        port=args.port,
        public_base_url=args.public_base_url,
        delivery=args.delivery,
    ) as fake:
        if args.kind:
            await fake.set_scenario(**KIND)
        for name in args.user:
            await fake.create_user(name)
        for name in args.live:
            await fake.create_user(name)
            room_id, stream_id = await fake.go_live(name, profile=args.profile)
            sys.stderr.write(f"@{name} live: room_id={room_id} stream_id={stream_id}\n")
        # The base URL on stdout is the machine-readable part (a demo script can read one line).
        sys.stdout.write(f"{fake.base_url}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
