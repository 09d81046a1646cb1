"""The job index over a real SQLite file: statuses as GET /jobs/{id} gives them, a change seen
again never undoing a newer one, deletes, TTL pruning, filters and cursor pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.indexer.jobs_index import Gone, JobIndex, RecordingSeen, RequestSeen
from shared.job_list import (
    JobQuery,
    Position,
    decode_cursor,
    encode_cursor,
    to_micros,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ROOM = "7000000000000000001"


def _request(job_id: str, seq: int, minute: int, **kw: object) -> RequestSeen:
    fields: dict[str, object] = {
        "kind": "recording",
        "desired": "run",
        "owner": "alice",
        "room_id": ROOM,
    }
    fields.update(kw)
    return RequestSeen(
        job_id=job_id,
        seq=seq,
        written_us=to_micros(T0) + seq,
        created_us=to_micros(T0 + timedelta(minutes=minute)),
        **fields,  # type: ignore[arg-type]
    )


def _recording(job_id: str, seq: int, state: str, **kw: object) -> RecordingSeen:
    return RecordingSeen(
        job_id=job_id,
        seq=seq,
        written_us=to_micros(T0) + seq,
        state=state,
        updated_us=to_micros(T0) + seq,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[JobIndex]:
    found = await JobIndex(tmp_path / "index.sqlite3").open()
    yield found
    await found.close()


async def _statuses(index: JobIndex, **query: object) -> dict[str, str]:
    page = await index.query(JobQuery(**query))  # type: ignore[arg-type]
    return {j.job_id: j.status for j in page.items}


async def test_statuses_follow_the_documents_as_the_status_route_assembles_them(
    index: JobIndex,
) -> None:
    await index.apply(
        [
            _request("pending", 1, 1),
            _request("cancelled", 2, 2, desired="cancel"),
            _request("failed", 3, 3),
            _recording("failed", 4, "FAILURE", error_code="LIVE_OFFLINE"),
            _request("watching", 5, 4, kind="watch"),
            _request("unwatched", 6, 5, kind="watch", desired="cancel"),
        ],
        seq=6,
        pending=0,
    )
    page = await index.query(JobQuery())
    assert [(j.job_id, j.status, j.error_code) for j in page.items] == [
        ("unwatched", "CANCELLED", "CANCELLED"),
        ("watching", "STARTED", None),
        ("failed", "FAILURE", "LIVE_OFFLINE"),
        ("cancelled", "CANCELLED", "CANCELLED"),
        ("pending", "PENDING", None),
    ]
    assert await index.position() == 6
    # Any of several statuses: merged newest first, and paged on.
    first = await index.query(JobQuery(statuses=["PENDING", "CANCELLED"], page_size=2))
    assert [j.job_id for j in first.items] == ["unwatched", "cancelled"]
    rest = await index.query(
        JobQuery(statuses=["PENDING", "CANCELLED"], page_size=2, after=first.next)
    )
    assert [j.job_id for j in rest.items] == ["pending"]
    assert rest.next is None


async def test_a_change_seen_again_never_undoes_a_newer_one(index: JobIndex) -> None:
    # The job updated twice (STARTED, then SUCCESS), then the first update applied again (a
    # former leader finishing its batch): the newer state stays.
    await index.apply([_request("j", 1, 1), _recording("j", 2, "STARTED")], seq=2, pending=0)
    await index.apply([_recording("j", 3, "SUCCESS", title="live")], seq=3, pending=0)
    await index.apply([_request("j", 1, 1, desired="cancel"), _recording("j", 2, "STARTED")], 2, 0)
    page = await index.query(JobQuery())
    assert [(j.job_id, j.status, j.title) for j in page.items] == [("j", "SUCCESS", "live")]
    assert await index.position() == 3  # the position never goes back either


async def test_a_recording_seen_before_its_request_is_listed_once_the_request_comes(
    index: JobIndex,
) -> None:
    await index.apply([_recording("j", 2, "STARTED", user="alice_live")], seq=2, pending=1)
    assert await _statuses(index) == {}
    await index.apply([_request("j", 3, 1, room_id=None)], seq=3, pending=0)
    assert await _statuses(index, user="alice_live") == {"j": "STARTED"}


async def test_deleted_requests_leave_the_list_and_expired_jobs_are_pruned(
    index: JobIndex,
) -> None:
    await index.apply(
        [_request("old", 1, 1), _request("withdrawn", 2, 2), _request("new", 30, 3)], 30, 0
    )
    await index.apply([Gone("withdrawn", 31, to_micros(T0) + 31)], seq=31, pending=0)
    await index.apply([_request("withdrawn", 2, 2)], seq=31, pending=0)  # an older copy
    assert await _statuses(index) == {"new": "PENDING", "old": "PENDING"}
    # The bucket's TTL removed what was last written before the cut-off.
    assert await index.prune(to_micros(T0) + 10) >= 1
    assert await _statuses(index) == {"new": "PENDING"}


async def test_filters_and_cursor_pages_cover_the_matches_once_newest_first(
    index: JobIndex,
) -> None:
    changes = []
    for i in range(7):
        changes.append(_request(f"a{i}", 2 * i + 1, minute=i, owner="alice"))
        changes.append(_request(f"b{i}", 2 * i + 2, minute=i, owner="bob", user="bob.live"))
    await index.apply(changes, seq=14, pending=0)

    seen: list[str] = []
    after = None
    for _ in range(10):
        page = await index.query(JobQuery(owner="alice", page_size=3, after=after))
        assert page.items
        seen += [j.job_id for j in page.items]
        after = page.next
        if after is None:
            break
    assert seen == [f"a{i}" for i in reversed(range(7))]

    bobs = await index.query(JobQuery(user="bob.live", since=T0 + timedelta(minutes=5)))
    assert [j.job_id for j in bobs.items] == ["b6", "b5"]
    until = await index.query(JobQuery(owner="bob", until=T0 + timedelta(minutes=1)))
    assert [j.job_id for j in until.items] == ["b1", "b0"]
    assert (await index.query(JobQuery(kind="watch"))).items == []
    assert (await index.query(JobQuery(statuses=["SUCCESS", "FAILURE"]))).items == []


def test_a_cursor_round_trips_and_anything_else_is_refused() -> None:
    position = Position(created_us=1_772_323_200_000_001, job_id="3f0c-9a")
    assert decode_cursor(encode_cursor(position)) == position
    for bad in ("", "x", "a" * 200, encode_cursor(position)[:-3], "ajE6MTo"):
        with pytest.raises(ValueError, match="cursor"):
            decode_cursor(bad)
