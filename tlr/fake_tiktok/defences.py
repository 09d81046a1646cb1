"""TikTok's defences as state: open WAF challenges, the X-Bogus signing secret, and counters."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from shared.tiktok.waf import make_challenge, solved_prefix

WAF_COOKIE = "_wafchallengeid"
WAF_EXTRA_COOKIE = "waforiginalreid"
OPEN_CHALLENGES_LIMIT = 10_000  # bounded: clients that never answer must not grow memory
SIGNED_PATH = "/api-live/user/room/"
SIGNATURE_PARAM = "X-Bogus"
SIGNATURE_LEN = 28  # as long as a real X-Bogus value

SolutionVerdict = Literal["accepted", "spent", "none"]


@dataclass
class DefenceStats:
    """Counters behind GET /__fake/stats, so tests can assert how hard a client had to work."""

    waf_challenges_issued: int = 0
    waf_solutions_accepted: int = 0
    waf_solutions_rejected: int = 0
    """A correct solution of a challenge no longer open: reused, or forgotten (bound)."""
    access_denied: int = 0
    sign_calls: int = 0
    """Every POST /__fake/sign, failed ones (400, 503) included."""
    signatures_issued: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class WafChallenges:
    """Challenges issued and not yet answered; each is accepted once, like TikTok's Max-Age=1."""

    def __init__(self, limit: int = OPEN_CHALLENGES_LIMIT) -> None:
        self._open: OrderedDict[bytes, None] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._open)

    def issue(self, difficulty: int) -> str:
        """A new challenge (the page's paragraphs) whose answer is below `difficulty`."""
        prefix = os.urandom(16)
        self._open[prefix] = None
        while len(self._open) > self._limit:
            self._open.popitem(last=False)  # the oldest goes: its client waited too long
        token = secrets.token_hex(16)
        answer = secrets.randbelow(difficulty)
        return make_challenge(answer, prefix=prefix, extra_cookie=(WAF_EXTRA_COOKIE, token))

    def check(self, cookie_values: Iterable[str]) -> SolutionVerdict:
        """ "accepted" (and that challenge is spent) if a value solves a challenge still open;
        "spent" if one solves a challenge no longer open; else "none" (no solution at all)."""
        verdict: SolutionVerdict = "none"
        for value in cookie_values:
            prefix = solved_prefix(value)
            if prefix is None:
                continue
            if prefix in self._open:
                del self._open[prefix]
                return "accepted"
            verdict = "spent"
        return verdict

    def clear(self) -> None:
        self._open.clear()


def _unsigned_query(raw_query: str) -> str:
    # Decoded and re-encoded so that harmless encoding differences between the signer's input
    # and what the client finally sends do not matter; order and values do.
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if k != SIGNATURE_PARAM])


class ApiSigner:
    """Issues and checks api-live `X-Bogus` values: an HMAC of path + query, per-server secret."""

    def __init__(self) -> None:
        self._secret = os.urandom(32)

    def signature(self, raw_path: str, raw_query: str) -> str:
        message = f"{raw_path}?{_unsigned_query(raw_query)}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:SIGNATURE_LEN]

    def sign_url(self, url: str) -> str:
        """`url` plus `X-Bogus=<signature>`; ValueError if it is no unsigned api-live URL."""
        parts = urlsplit(url)
        if parts.path != SIGNED_PATH:
            msg = f"only {SIGNED_PATH} URLs are signed"
            raise ValueError(msg)
        if parts.fragment:
            msg = "url must not have a fragment"
            raise ValueError(msg)
        if any(k == SIGNATURE_PARAM for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
            msg = "url is already signed"
            raise ValueError(msg)
        separator = "" if url.endswith(("?", "&")) else "&" if "?" in url else "?"
        return f"{url}{separator}{SIGNATURE_PARAM}={self.signature(parts.path, parts.query)}"

    def verify(self, raw_path: str, raw_query: str) -> bool:
        given = [v for k, v in parse_qsl(raw_query, keep_blank_values=True) if k == SIGNATURE_PARAM]
        expected = self.signature(raw_path, raw_query)
        return len(given) == 1 and hmac.compare_digest(given[0], expected)
