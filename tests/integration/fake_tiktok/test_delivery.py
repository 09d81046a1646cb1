"""The fake CDN's CDN-like deliveries: one ~1.4 KB write at a time, or 1 B-48 KB writes.

The FLV tests of test_flv.py run again here with ``segments`` delivery: the stream's bytes
leave in small pieces that cut through tags, and everything else (drops at an exact byte count,
pause, end, switch) behaves as with whole-tag writes.
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.fake_tiktok.helpers import (
    assert_monotonic,
    live_user,
    playing_url,
    read_flv,
    walk_tags,
)
from tests.integration.fake_tiktok.test_flv import (
    test_captured_stream_decodes_with_ffmpeg,
    test_drop_after_bytes,
    test_end_eof_finishes_the_body,
    test_end_reset_and_stall,
    test_flv_stream_structure_and_timestamps,
    test_pause_stalls_then_resume,
    test_switch_injects_new_sequence_header,
)
from tlr.fake_tiktok import FakeTikTok
from tlr.fake_tiktok.delivery import IRREGULAR_MAX, SEGMENT, parse_delivery

FAKE_TIKTOK_OPTIONS = {"speed": 20.0, "delivery": "segments"}

__all__ = [
    "test_captured_stream_decodes_with_ffmpeg",
    "test_drop_after_bytes",
    "test_end_eof_finishes_the_body",
    "test_end_reset_and_stall",
    "test_flv_stream_structure_and_timestamps",
    "test_pause_stalls_then_resume",
    "test_switch_injects_new_sequence_header",
]


async def test_segments_are_written_one_at_a_time(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    async with read_flv(client, playing_url(fake, handle.stream_id)) as reader:
        await reader.wait_until(lambda d: len(d) > 200_000)
    assert_monotonic(walk_tags(reader.data))
    assert fake.wire.largest <= SEGMENT
    # Every write carried at most one segment: at least as many writes as segments' worth.
    assert fake.wire.writes >= len(reader.data) // SEGMENT


@pytest.mark.parametrize("fake_tiktok", [{"speed": 20.0, "delivery": "irregular"}], indirect=True)
async def test_irregular_writes(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    async with read_flv(client, playing_url(fake, handle.stream_id)) as reader:
        await reader.wait_until(lambda d: len(d) > 500_000)
    assert_monotonic(walk_tags(reader.data))
    assert SEGMENT < fake.wire.largest <= IRREGULAR_MAX
    assert fake.wire.writes > len(reader.data) // IRREGULAR_MAX


def test_unknown_delivery_is_refused() -> None:
    with pytest.raises(ValueError, match="delivery must be one of"):
        parse_delivery("bursts")
