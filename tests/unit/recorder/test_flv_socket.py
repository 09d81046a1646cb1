"""Coalescing pauses of the FLV pull's connections: one shared Resumer, not a timer per read.

A fake transport counts pause_reading/resume_reading; the Resumer's ticks are called with the
time they would have, so nothing here waits for a clock."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from services.recorder.flv_pull import FlvResponse
from services.recorder.flv_socket import (
    BUFFER,
    COALESCE_S,
    HIGH_WATER,
    MAX_PIECE,
    Connection,
    Stats,
    resumer,
)


class CountingTransport:
    def __init__(self) -> None:
        self.pauses = 0
        self.resumes = 0
        self.closing = False

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None:
        self.resumes += 1

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True


def opened(*, body: bool = True) -> tuple[Connection, CountingTransport]:
    conn = Connection(Stats())
    transport = CountingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.coalesce = body  # set once media flows (FlvResponse.steady)
    return conn, transport


def receive(conn: Connection, n: int = 1400, *, fill: bool = False) -> None:
    """A read of ``n`` bytes, or of all the room the connection offered (``fill``)."""
    room = conn.get_buffer(-1)
    size = len(room) if fill else n
    room[:size] = b"x" * size
    conn.buffer_updated(size)


@pytest.fixture
async def call_laters(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    loop = asyncio.get_running_loop()
    delays: list[float] = []
    real = loop.call_later

    def counting(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        delays.append(delay)
        return real(delay, callback, *args)

    monkeypatch.setattr(loop, "call_later", counting)
    return delays


async def test_many_paused_connections_share_one_timer_and_resume_when_due(
    call_laters: list[float],
) -> None:
    shared = resumer(asyncio.get_running_loop())
    before = shared.loop.time()
    conns = [opened() for _ in range(200)]
    for conn, _ in conns:
        receive(conn)
    assert [t.pauses for _, t in conns] == [1] * 200
    assert len(call_laters) == 1  # one timer for all of them, not 200
    assert len(shared) == 200

    assert shared.tick(before + COALESCE_S - 1e-6) == 0  # not yet COALESCE_S since any paused
    assert sum(t.resumes for _, t in conns) == 0
    assert shared.tick(shared.loop.time() + COALESCE_S) == 200
    assert [t.resumes for _, t in conns] == [1] * 200
    assert len(shared) == 0

    for conn, _ in conns:  # the next reads pause them again, still without a timer each
        receive(conn)
    assert [t.pauses for _, t in conns] == [2] * 200
    assert len(call_laters) <= 2
    for conn, _ in conns:
        conn.close()


async def test_the_head_and_a_read_that_filled_its_room_are_not_delayed() -> None:
    head, transport = opened(body=False)
    receive(head)
    assert transport.pauses == 0  # the head (and so the first body piece) is read at once
    full, transport = opened()
    receive(full, fill=True)  # more is waiting in the kernel: read it now
    assert transport.pauses == 0
    receive(full)
    assert transport.pauses == 1
    head.close()
    full.close()


async def test_a_consumer_behind_keeps_the_connection_paused_until_it_takes_data() -> None:
    shared = resumer(asyncio.get_running_loop())
    conn, transport = opened()
    while conn.end - conn.start < HIGH_WATER:
        receive(conn, fill=True)
    receive(conn)
    assert transport.pauses == 1
    shared.tick(shared.loop.time() + COALESCE_S)
    assert transport.resumes == 0  # HIGH_WATER unread: the tick leaves it paused
    conn.consume(conn.end - conn.start)
    conn.taken()
    assert transport.resumes == 1
    conn.close()


async def test_a_closed_connection_is_not_resumed() -> None:
    shared = resumer(asyncio.get_running_loop())
    conn, transport = opened()
    receive(conn)
    conn.close()
    shared.tick(shared.loop.time() + COALESCE_S)
    assert transport.resumes == 0
    assert len(shared) == 0


async def test_reads_that_fill_their_room_stop_at_high_water_until_the_consumer_reads() -> None:
    conn, transport = opened()
    reads = 0
    while transport.pauses == 0:
        receive(conn, fill=True)  # the kernel always has more: no coalescing pause
        reads += 1
        assert reads < 100
    assert HIGH_WATER <= conn.end - conn.start < 2 * HIGH_WATER  # bounded
    conn.consume(conn.end - conn.start)
    conn.taken()
    assert transport.resumes == 1
    conn.close()


async def test_reads_are_not_held_back_until_media_flows() -> None:
    """The CDN's first burst and the first keyframe are read as they arrive (a recording's
    first byte on disk is not delayed); reads coalesce once the caller says media flows."""
    conn, transport = opened(body=False)
    response = FlvResponse(200, [], conn, "close")
    for _ in range(5):
        receive(conn)
    assert transport.pauses == 0
    response.steady()
    receive(conn)
    assert transport.pauses == 1


async def test_a_backlog_is_taken_in_bounded_pieces_with_the_loop_run_between_them() -> None:
    """A stream far behind (a starved loop, a slow disk) must not hold the event loop while it
    parses all it has: with 1,000 such streams one pass took ~25 s and the leases lapsed."""
    conn, _ = opened()
    response = FlvResponse(200, [], conn, "close")
    while conn.end - conn.start < 3 * MAX_PIECE:
        receive(conn, fill=True)
    backlog = conn.end - conn.start
    conn.eof_received()
    others = 0

    async def other_task() -> None:
        nonlocal others
        while True:
            others += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    pieces: list[tuple[int, int]] = []  # (size, the other task's count when it came)
    async for piece in response.chunks():
        pieces.append((len(piece), others))
    ticker.cancel()
    assert sum(size for size, _ in pieces) == backlog
    assert len(pieces) >= 3
    assert all(size <= MAX_PIECE for size, _ in pieces)
    seen = [count for _, count in pieces]
    assert all(b > a for a, b in itertools.pairwise(seen))  # the loop ran between any two


async def test_a_connection_gives_back_its_grown_buffer_once_caught_up() -> None:
    """Behind, the buffer grows (bounded by HIGH_WATER); caught up, it shrinks again, so the
    memory of one bad minute is not kept for the rest of a live."""
    conn, _ = opened()
    while conn.end - conn.start < HIGH_WATER:
        receive(conn, fill=True)
    assert len(conn.get_buffer(-1)) + conn.end > 4 * BUFFER
    conn.consume(conn.end - conn.start)
    conn.taken()
    receive(conn)
    assert conn.end - conn.start == 1400
    assert conn.end + len(conn.get_buffer(-1)) == BUFFER
    conn.close()
