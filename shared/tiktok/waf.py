"""TikTok's SlardarWAF proof-of-work page: recognise it, read its challenge, solve it.

www pages (``/@user``, ``/@user/live``) often answer "Please wait..." with a challenge instead
of the page (upstream #312, yt-dlp #14287). The page carries::

    <p id="wci" class="NAME">          the cookie the answer goes into (``_wafchallengeid``)
    <p id="cs" class="B64">            base64 of JSON {"v": {"a": A, "c": C}, ...}
    <p id="rci" class="NAME2">         optional: a second cookie ...
    <p id="rs" class="VALUE">          ... and its value

The answer is the integer ``i`` below 10^6 with ``sha256(b64decode(A) + str(i)) ==
b64decode(C)``. It goes back into the JSON as ``d`` (base64 of its decimal string); the cookie
NAME is base64 of that JSON, and the page is fetched again. A solution is good for one request.

Solving costs up to a million SHA-256 rounds (~0.5 s of one core): callers run it in a thread
(:func:`solve_in_thread`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter, Histogram

from shared.metrics import PREFIX

MAX_ANSWER: Final = 1_000_000
_PARAGRAPH_RE = re.compile(r"<p\b[^>]*\bid=\"(?P<id>wci|cs|rci|rs)\"[^>]*>", re.I)
_CLASS_RE = re.compile(r"\bclass=\"(?P<value>[^\"]*)\"")
_COOKIE_NAME_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")

WAF_CHALLENGES = Counter(
    f"{PREFIX}_tiktok_waf_challenges_total",
    "WAF proof-of-work pages met on www, by outcome (solved, unsolvable, malformed)",
    ["outcome"],
)
WAF_SOLVE_SECONDS = Histogram(
    f"{PREFIX}_tiktok_waf_solve_seconds",
    "CPU-bound time to solve one WAF proof of work",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class ChallengeError(ValueError):
    """A challenge page whose challenge cannot be read, or has no answer below the bound."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """What one WAF page asks: the cookie to set, the JSON to complete, the hash to match."""

    cookie_name: str
    config: dict[str, Any]
    prefix: bytes
    expected: bytes
    extra_cookie: tuple[str, str] | None = None


def _paragraph_classes(page: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _PARAGRAPH_RE.finditer(page):
        value = _CLASS_RE.search(match.group(0))
        if value is not None:
            found.setdefault(match["id"].lower(), value["value"].strip())
    return found


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_" if "-" in text or "_" in text else None)


def parse_challenge(page: str) -> Challenge | None:
    """The challenge of a WAF page; None when ``page`` is no challenge page.

    Raises:
        ChallengeError: it is a challenge page, but its challenge is malformed.
    """
    classes = _paragraph_classes(page)
    if "wci" not in classes or "cs" not in classes:
        return None
    name = classes["wci"]
    if not _COOKIE_NAME_RE.fullmatch(name):
        msg = "challenge cookie name is not a token"
        raise ChallengeError(msg)
    try:
        config = json.loads(_b64decode(classes["cs"]))
        values = config["v"]
        prefix = _b64decode(values["a"])
        expected = _b64decode(values["c"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        msg = f"challenge config unreadable ({type(exc).__name__})"
        raise ChallengeError(msg) from None
    if not isinstance(config, dict) or len(expected) != hashlib.sha256().digest_size:
        msg = "challenge config has no SHA-256 target"
        raise ChallengeError(msg)
    extra = None
    if classes.get("rci") and "rs" in classes and _COOKIE_NAME_RE.fullmatch(classes["rci"]):
        extra = (classes["rci"], classes["rs"])
    return Challenge(name, config, prefix, expected, extra)


def find_answer(challenge: Challenge, limit: int = MAX_ANSWER) -> int:
    """The integer below ``limit`` the challenge asks for (ChallengeError if there is none)."""
    base = hashlib.sha256(challenge.prefix)  # hashing the prefix once, not a million times
    expected = challenge.expected
    for answer in range(limit):
        attempt = base.copy()
        attempt.update(str(answer).encode())
        if attempt.digest() == expected:
            return answer
    msg = f"no answer below {limit}"
    raise ChallengeError(msg)


def solution_cookies(challenge: Challenge, answer: int) -> dict[str, str]:
    """The cookies that carry ``answer`` back: NAME (and the optional second one)."""
    solved = dict(challenge.config)
    solved["d"] = base64.b64encode(str(answer).encode()).decode()
    text = json.dumps(solved, separators=(",", ":"))
    cookies = {challenge.cookie_name: base64.b64encode(text.encode()).decode()}
    if challenge.extra_cookie is not None:
        name, value = challenge.extra_cookie
        cookies[name] = value
    return cookies


def solve(challenge: Challenge, limit: int = MAX_ANSWER) -> dict[str, str]:
    """The solution cookies (CPU-bound: call it off the event loop), timed and counted."""
    started = time.process_time()
    try:
        answer = find_answer(challenge, limit)
    except ChallengeError:
        WAF_CHALLENGES.labels(outcome="unsolvable").inc()
        raise
    finally:
        WAF_SOLVE_SECONDS.observe(time.process_time() - started)
    WAF_CHALLENGES.labels(outcome="solved").inc()
    return solution_cookies(challenge, answer)


async def solve_in_thread(challenge: Challenge, limit: int = MAX_ANSWER) -> dict[str, str]:
    """:func:`solve` in a worker thread, so lease renewals and streams keep their loop.

    ``hashlib`` releases the GIL only for large inputs, so the loop still shares the CPU with
    the thread; the solve is bounded (``limit`` rounds, ~0.5 s) and happens at most once per
    www page fetch.
    """
    return await asyncio.to_thread(solve, challenge, limit)


def make_challenge(
    answer: int,
    *,
    prefix: bytes,
    cookie_name: str = "_wafchallengeid",
    extra_cookie: tuple[str, str] | None = None,
) -> str:
    """The HTML paragraphs of a challenge whose answer is ``answer``: what the fake TikTok
    serves, and what a test builds to check the solver against a known answer."""
    expected = hashlib.sha256(prefix + str(answer).encode()).digest()
    config = {
        "v": {
            "a": base64.b64encode(prefix).decode(),
            "c": base64.b64encode(expected).decode(),
        },
        "s": 0,
    }
    encoded = base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()
    html = f'<p id="wci" class="{cookie_name}"></p><p id="cs" class="{encoded}"></p>'
    if extra_cookie is not None:
        html += (
            f'<p id="rci" class="{extra_cookie[0]}"></p><p id="rs" class="{extra_cookie[1]}"></p>'
        )
    return html


def solved_prefix(value: str) -> bytes | None:
    """The challenge prefix (``a``) that the solution cookie ``value`` answers correctly, or
    None: the check the fake TikTok makes (it then accepts each issued prefix once)."""
    try:
        config = json.loads(_b64decode(value))
        prefix = _b64decode(config["v"]["a"])
        expected = _b64decode(config["v"]["c"])
        answer = int(_b64decode(config["d"]).decode())
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        return None
    if not 0 <= answer < MAX_ANSWER:
        return None
    if hashlib.sha256(prefix + str(answer).encode()).digest() != expected:
        return None
    return prefix
