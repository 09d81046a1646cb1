"""Retry delays: exponential, capped, and spread (full jitter) so processes do not retry in step."""

from __future__ import annotations

import random

import pytest

from services.uploader import files
from shared.consumer import retry_delay


@pytest.mark.parametrize("delivered", [1, 2, 3, 5, 8, 30])
def test_delays_stay_within_the_exponential_ceiling_and_the_cap(delivered: int) -> None:
    ceiling = min(60.0, 2.0 ** (delivered - 1))
    delays = [retry_delay(delivered) for _ in range(500)]
    assert all(0 <= d <= ceiling for d in delays)


def test_delays_after_an_outage_are_spread_not_in_lockstep() -> None:
    # A thousand processes whose 6th delivery fails at the same moment.
    delays = [retry_delay(6, base=1.0, cap=20.0) for _ in range(1000)]
    assert max(delays) <= 20.0
    assert len({round(d, 3) for d in delays}) > 900
    # Full jitter: spread over the whole [0, ceiling] range, not bunched at its top.
    assert min(delays) < 2.0
    assert max(delays) > 18.0
    assert 8.0 < sum(delays) / len(delays) < 12.0


def test_the_random_source_can_be_given() -> None:
    assert retry_delay(4, base=1.0, cap=60.0, rng=lambda: 0.5) == 4.0
    assert retry_delay(40, base=1.0, cap=60.0, rng=lambda: 1.0) == 60.0


def test_the_uploaders_pauses_between_tries_are_jittered_and_bounded() -> None:
    random.seed(7)
    pauses = [files.attempt_pause(3) for _ in range(500)]
    assert all(0 <= p <= files.ATTEMPT_BACKOFF * 4 for p in pauses)
    assert len({round(p, 4) for p in pauses}) > 400
