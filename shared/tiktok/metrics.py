"""Prometheus counters of TikTok requests, labelled from small fixed sets (no ids, no users)."""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter

from shared.metrics import PREFIX

Endpoint = Literal[
    "check_alive", "room_info", "user_room", "live_page", "profile_page", "short_link", "signer"
]
ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    "check_alive",
    "room_info",
    "user_room",
    "live_page",
    "profile_page",
    "short_link",
    "signer",
)
OUTCOME_OK: Final = "ok"

# outcome: "ok" or the lower-cased ErrorCode of the TikTokError (waf_blocked, ...).
TIKTOK_REQUESTS = Counter(
    f"{PREFIX}_tiktok_requests_total",
    "Requests to TikTok by endpoint and outcome (ok or the lower-cased error code)",
    ["endpoint", "outcome"],
)


def count_request(endpoint: Endpoint, outcome: str) -> None:
    TIKTOK_REQUESTS.labels(endpoint=endpoint, outcome=outcome).inc()
