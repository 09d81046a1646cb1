"""How a run of the upstream CLI ended, from its exit status AND its log lines.

The upstream exits 0 on most failures (``main.py`` logs every exception and returns), so the
status alone says little: its log lines, as its ``utils/enums.py`` words them (5eea05a), name
the cause. Messages are ours, never its lines (which may quote a proxy URL or a cookie).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import ErrorCode

# (pattern, code, message), in priority order; matched against every line it wrote.
_KNOWN: tuple[tuple[re.Pattern[str], ErrorCode, str], ...] = tuple(
    (re.compile(p, re.I), code, message)
    for p, code, message in (
        (r"FFmpeg binary is not installed", ErrorCode.FFMPEG_MISSING, "ffmpeg is not installed"),
        (r"blocked by TikTok WAF", ErrorCode.WAF_BLOCKED, "TikTok's WAF blocked the CLI"),
        (
            r"Captcha required or country blocked",
            ErrorCode.COUNTRY_BLOCKED,
            "TikTok asks for a login from this country",
        ),
        (r"Live is private, login required", ErrorCode.AGE_RESTRICTED, "the live needs a login"),
        (
            r"Account is private|account is private",
            ErrorCode.AGE_RESTRICTED,
            "the account is private",
        ),
        (
            r"Username / RoomID not found|Error extracting RoomID",
            ErrorCode.USER_NOT_FOUND,
            "TikTok knows no such user or room",
        ),
        (
            r"not hosting a live stream|no longer live|Unable to retrieve live streaming url",
            ErrorCode.LIVE_OFFLINE,
            "the live is not on",
        ),
        (
            r"Network hiccup|ConnectionError|Connection broken|timed out|Timeout|"
            r"Failed to (?:establish|connect)|Connection refused|Max retries exceeded",
            ErrorCode.NETWORK_TIMEOUT,
            "the CLI could not reach TikTok",
        ),
    )
)
# Lines of a failure we do not know by name: its error prefix ("[!] "), a traceback.
_FAILED = re.compile(r"^\[!\]|^Traceback|Generic Error|Application Error|Unexpected error")
# Its own FLV-to-MP4 conversion at the end: we split and remux its FLV ourselves.
_CONVERSION = re.compile(r"ffmpeg conversion failed|Converting .* to MP4|Finished converting")


@dataclass(frozen=True)
class CliEnd:
    """The error a run ended with (None: it ended well) and a message for the job."""

    code: ErrorCode | None
    message: str | None = None


def classify(returncode: int, lines: list[str], *, media: bool) -> CliEnd:
    """How a run that exited by itself (not killed by us) ended.

    A non-zero status is RECORDER_EXIT_NONZERO, or the cause its lines name (FFMPEG_MISSING).
    With status 0 the lines decide; "no longer live" after media is the live's normal end.
    """
    known = _known(lines)
    if returncode != 0:
        if known is not None and known.code == ErrorCode.FFMPEG_MISSING:
            return known
        return CliEnd(ErrorCode.RECORDER_EXIT_NONZERO, f"the upstream CLI exited {returncode}")
    if known is not None:
        if media and known.code == ErrorCode.LIVE_OFFLINE:
            return CliEnd(None)
        return known
    if any(_FAILED.search(line) and not _CONVERSION.search(line) for line in lines):
        return CliEnd(
            ErrorCode.RECORDER_EXIT_NONZERO,
            "the upstream CLI failed (exit status 0); the recorder's log has its lines",
        )
    return CliEnd(None if media else ErrorCode.LIVE_OFFLINE, None if media else "nothing recorded")


def _known(lines: list[str]) -> CliEnd | None:
    """The first cause in _KNOWN's order that any line names (the live's end outranks the
    network hiccups it retried before it)."""
    relevant = [line for line in lines if not _CONVERSION.search(line)]
    for pattern, code, message in _KNOWN:
        if any(pattern.search(line) for line in relevant):
            return CliEnd(code, message)
    return None
