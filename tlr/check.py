"""``tlr check TARGET [--proxy URL] [--cookies FILE]``: the diagnosis, printed for a person.

Exit codes: 0 resolved (and a live room plays); 1 a step failed or no stream plays; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.config import Settings
from shared.logging import redact_text
from shared.tiktok import diagnose
from shared.tiktok.client import TikTokClient
from shared.tiktok.cookies import CookiesError, load_cookies
from shared.tiktok.factory import client_from_settings, signer_from_settings
from shared.tiktok.http import Trace

OK, FAILED, USAGE = 0, 1, 2


def _cookies(name: str) -> dict[str, str]:
    """A cookies file anywhere the operator names (this runs on their own machine)."""
    path = Path(name).expanduser().resolve()
    return load_cookies(path.name, path.parent)


async def main_check(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        cookies = _cookies(args.cookies) if args.cookies else None
    except CookiesError as exc:
        sys.stderr.write(f"tlr check: {exc}\n")
        return USAGE
    signer = signer_from_settings(settings)

    def make(trace: Trace) -> TikTokClient:
        return client_from_settings(
            settings, proxy=args.proxy, cookies=cookies, signer=signer, trace=trace
        )

    try:
        report = await diagnose.check(args.target, make, probe=not args.no_probe)
    except ValueError as exc:
        sys.stderr.write(f"tlr check: {redact_text(str(exc))}\n")
        return USAGE
    finally:
        if signer is not None:
            await signer.aclose()
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        via = f"via proxy {redact_text(args.proxy)}" if args.proxy else "direct"
        if settings.tiktok_impersonate:
            via += f", www as {settings.tiktok_impersonate}"
        if signer is not None:
            via += ", api-live signed"
        sys.stdout.write("\n".join(diagnose.render(report, via=via)) + "\n")
    return OK if report.ok else FAILED
