"""The indexer's SQLite store: filters, totals, stable paging (both scan directions), upserts,
owners, and a file from before the owner column."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.indexer.store import IndexStore
from shared.files import FileQuery, IndexedFile, S3Location

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ROOMS = ("7000000000000000001", "7000000000000000002", "7000000000000000003")


def file(n: int, *, minutes: int, room: str | None = None, **extra: Any) -> IndexedFile:
    room = room if room is not None else ROOMS[n % len(ROOMS)]
    path = f"{room}/2026/03/01/f{n:05d}.mp4"
    fields: dict[str, Any] = {
        "name": f"f{n:05d}.mp4",
        "path": path,
        "size": 1000 + n,
        "mtime": T0 + timedelta(minutes=minutes),
        "room_id": room,
        "user": f"user{ROOMS.index(room)}" if room in ROOMS else None,
        "url": f"https://www.tiktok.com/@user{ROOMS.index(room)}/live" if room in ROOMS else None,
        "job_id": f"job-{n // 4}",
    }
    fields.update(extra)
    return IndexedFile(**fields)


def newest_first(files: list[IndexedFile]) -> list[str]:
    """The expected order: mtime descending, ties by insertion order descending (the id)."""
    order = sorted(enumerate(files), key=lambda p: (p[1].mtime, p[0]), reverse=True)
    return [f.path for _, f in order]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[IndexStore]:
    async with IndexStore(tmp_path / "index.sqlite3") as s:
        yield s


async def all_pages(store: IndexStore, page_size: int, **filters: Any) -> tuple[list[str], int]:
    seen: list[str] = []
    totals = set()
    page = 1
    while True:
        result = await store.query(FileQuery(page=page, page_size=page_size, **filters))
        totals.add(result.total)
        assert result.page == page
        assert result.page_size == page_size
        if not result.items:
            break
        seen += [f.path for f in result.items]
        page += 1
    assert len(totals) == 1
    return seen, totals.pop()


async def test_filters_and_totals(store: IndexStore) -> None:
    # Ten minutes apart, with a few mtimes shared by several files.
    files = [file(n, minutes=10 * (n // 2)) for n in range(30)]
    await store.bulk_insert(files)

    everything = await store.query(FileQuery(page_size=500))
    assert everything.total == 30
    assert [f.path for f in everything.items] == newest_first(files)

    cases: list[tuple[dict[str, Any], list[IndexedFile]]] = [
        ({"room_id": ROOMS[1]}, [f for f in files if f.room_id == ROOMS[1]]),
        ({"user": "user2"}, [f for f in files if f.user == "user2"]),
        ({"user": "@user2"}, [f for f in files if f.user == "user2"]),
        ({"url": files[0].url}, [f for f in files if f.url == files[0].url]),
        ({"job_id": "job-3"}, [f for f in files if f.job_id == "job-3"]),
        (
            {"since": T0 + timedelta(minutes=30), "until": T0 + timedelta(minutes=70)},
            [f for f in files if 30 <= (f.mtime - T0).total_seconds() / 60 <= 70],
        ),
        (
            # A window over most of the data: counted from outside it.
            {"since": T0 + timedelta(minutes=10)},
            [f for f in files if f.mtime >= T0 + timedelta(minutes=10)],
        ),
        (
            {"until": T0 + timedelta(minutes=130)},
            [f for f in files if f.mtime <= T0 + timedelta(minutes=130)],
        ),
        (
            {"room_id": ROOMS[0], "since": T0 + timedelta(minutes=20)},
            [f for f in files if f.room_id == ROOMS[0] and f.mtime >= T0 + timedelta(minutes=20)],
        ),
        (
            {"room_id": ROOMS[0], "user": "user1"},  # contradictory: nothing
            [],
        ),
        ({"room_id": "7999999999999999999"}, []),
        ({"since": T0 + timedelta(days=9)}, []),
        ({"since": T0 + timedelta(minutes=50), "until": T0 + timedelta(minutes=40)}, []),
    ]
    for filters, expected in cases:
        result = await store.query(FileQuery(page_size=500, **filters))
        assert result.total == len(expected), filters
        assert [f.path for f in result.items] == newest_first(expected), filters

    # A time without an offset is UTC.
    naive = await store.query(FileQuery(since=datetime(2026, 3, 1, 2, 20), page_size=500))
    assert naive.total == len([f for f in files if f.mtime >= T0 + timedelta(minutes=140)])


async def test_rows_round_trip(store: IndexStore) -> None:
    f = file(
        1,
        minutes=5,
        duration_s=12.5,
        title="Đêm nhạc 🎵",
        watcher_key="@user1",
        started_at=T0,
        upload_wanted=True,
        s3=S3Location(bucket="b", key="k/f.mp4", etag="e1"),
        local=False,
    )
    await store.bulk_insert([f])
    assert await store.get(f.path) == f
    # An answer carries the row's id (what GET /files/{id}/content asks for).
    assert (await store.query(FileQuery())).items == [msgspec.structs.replace(f, id=1)]
    assert await store.by_id(1) == msgspec.structs.replace(f, id=1)
    assert await store.by_id(2) is None


@pytest.mark.parametrize("page_size", [1, 3, 7, 50])
async def test_paging_is_stable_with_ties(store: IndexStore, page_size: int) -> None:
    rnd = random.Random(page_size)
    # Few distinct mtimes: most files tie with others, and only the id orders them.
    files = [file(n, minutes=rnd.randrange(6)) for n in range(101)]
    await store.bulk_insert(files)
    since = T0 + timedelta(minutes=2)
    cases: list[tuple[dict[str, Any], list[IndexedFile]]] = [
        ({}, files),
        ({"room_id": ROOMS[2]}, [f for f in files if f.room_id == ROOMS[2]]),
        ({"since": since}, [f for f in files if f.mtime >= since]),
        (
            {"since": T0 + timedelta(minutes=1), "until": T0 + timedelta(minutes=4)},
            [f for f in files if 1 <= (f.mtime - T0).total_seconds() / 60 <= 4],
        ),
        (
            {"room_id": ROOMS[0], "until": T0 + timedelta(minutes=3)},
            [f for f in files if f.room_id == ROOMS[0] and f.mtime <= T0 + timedelta(minutes=3)],
        ),
    ]
    for filters, matching in cases:
        seen, total = await all_pages(store, page_size, **filters)
        expected = newest_first(matching)
        assert total == len(expected)
        assert seen == expected, filters
        assert len(set(seen)) == len(seen)


async def test_deep_pages_come_from_the_far_end_and_match(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [file(n, minutes=n % 97) for n in range(1000)]
    for start in range(0, len(files), 250):
        await store.bulk_insert(files[start : start + 250])
    expected = newest_first(files)
    scans: list[str] = []
    fetch = store._fetch

    async def spy(sql: str, *args: Any, **kwargs: Any) -> list[Any]:
        scans.append(sql)
        return await fetch(sql, *args, **kwargs)

    monkeypatch.setattr(store, "_fetch", spy)
    for page in (1, 2, 10, 11, 12, 19, 20):
        scans.clear()
        result = await store.query(FileQuery(page=page, page_size=50))
        assert [f.path for f in result.items] == expected[(page - 1) * 50 : page * 50], page
        ascending = any("ORDER BY mtime ASC" in sql for sql in scans)
        assert ascending == (page > 11), page  # past the middle (offset > 500)
    # A last page that is not full, reached from the far end.
    result = await store.query(FileQuery(page=15, page_size=70))
    assert [f.path for f in result.items] == expected[980:]
    assert (await store.query(FileQuery(page=16, page_size=70))).items == []
    assert (await store.query(FileQuery(page=10**12, page_size=500))).total == 1000


async def test_totals_follow_writes(store: IndexStore) -> None:
    await store.bulk_insert([file(n, minutes=n) for n in range(10)])
    assert (await store.query(FileQuery(room_id=ROOMS[0]))).total == 4
    assert await store.count() == 10
    await store.upsert_finished([(file(30, minutes=1, room=ROOMS[0]), True)])
    assert (await store.query(FileQuery(room_id=ROOMS[0]))).total == 5
    assert await store.count() == 11
    await store.forget_local([file(30, minutes=1, room=ROOMS[0]).path])
    assert (await store.query(FileQuery(room_id=ROOMS[0]))).total == 4


async def test_bulk_load_into_an_empty_index(tmp_path: Path) -> None:
    db = tmp_path / "bulk.sqlite3"
    files = [file(n, minutes=n % 13) for n in range(3000)]
    async with IndexStore(db) as store:
        # The first chunk drops the indexes, so rows are counted as written; a repeated path
        # keeps its first row once the indexes are built (here, at close).
        assert await store.bulk_insert([*files[:1500], file(0, minutes=99)]) == 1501
        assert await store.bulk_insert(files[1000:]) == 2000
    async with IndexStore(db) as store:
        assert await store.count() == 3000
        assert (await store.get(files[0].path)) == files[0]
        seen, _ = await all_pages(store, 500, room_id=ROOMS[1])
        assert seen == newest_first([f for f in files if f.room_id == ROOMS[1]])
        # Indexes are back: a conflicting insert is detected again.
        assert await store.bulk_insert(files[:10]) == 0


async def test_event_upserts_keep_what_other_events_said(store: IndexStore) -> None:
    s3 = S3Location(bucket="b", key="k", etag="e")
    # upload.done first (out of order): the row exists with the S3 copy only.
    early = file(
        1, minutes=1, user=None, url=None, job_id="job-x", upload_wanted=True, s3=s3, local=False
    )
    await store.set_uploaded([(early, True)])
    finished = file(1, minutes=2, title="t", job_id="job-x", upload_wanted=True)
    # recording.finished, file not on disk: the uploader removed it; local stays False.
    await store.upsert_finished([(finished, False)])
    row = await store.get(finished.path)
    assert row is not None
    assert (row.s3, row.local, row.title, row.user) == (s3, False, "t", finished.user)
    assert row.mtime == early.mtime  # not on disk: size and mtime stay as they were
    # A redelivered event with fewer fields erases nothing.
    await store.upsert_finished([(file(1, minutes=2, title=None, user=None), True)])
    row = await store.get(finished.path)
    assert row is not None
    assert (row.title, row.user, row.local, row.upload_wanted) == ("t", finished.user, True, True)
    assert row.mtime == finished.mtime

    # file.deleted: with an S3 copy the row stays (local=False); without, it goes.
    await store.forget_local([finished.path])
    row = await store.get(finished.path)
    assert row is not None
    assert not row.local
    other = file(2, minutes=1)
    await store.upsert_finished([(other, True)])
    assert await store.forget_local([other.path, "never/indexed.mp4"]) == 1
    assert await store.get(other.path) is None


async def test_retention_candidates(store: IndexStore) -> None:
    s3 = S3Location(bucket="b", key="k")
    files = [
        file(0, minutes=0, room=ROOMS[0]),
        file(1, minutes=1, room=ROOMS[0], upload_wanted=True),  # waiting for its upload
        file(2, minutes=2, room=ROOMS[0], upload_wanted=True, s3=s3),
        file(3, minutes=3, room=ROOMS[1], s3=s3, local=False),  # only in S3
        file(4, minutes=4, room=ROOMS[1]),
        file(5, minutes=4, room=ROOMS[1]),
    ]
    await store.bulk_insert(files)

    async def paths(**kw: Any) -> list[str]:
        return [c.path for c in await store.candidates(**kw)]

    p = [f.path for f in files]
    assert await paths() == [p[0], p[2], p[4], p[5]]
    assert await paths(uploaded=True) == [p[2]]
    assert await paths(uploaded=False) == [p[0], p[4], p[5]]
    assert await paths(room_id=ROOMS[1]) == [p[4], p[5]]
    assert await paths(before_us=(await store.candidates())[2].mtime) == [p[0], p[2]]
    first = (await store.candidates(limit=2))[-1]
    assert await paths(after=(first.mtime, first.id)) == [p[4], p[5]]
    usage = dict(await store.room_usage())
    assert usage == {ROOMS[0]: 3003, ROOMS[1]: 2009}
    assert await store.room_usage(over=2500) == [(ROOMS[0], 3003)]


async def test_a_second_indexer_on_the_same_file_lists_what_the_first_indexed(
    tmp_path: Path,
) -> None:
    # A standby and the leader share INDEX_DB: a total the standby counted must not outlive
    # the leader's next write (found by the chaos scenario of leaders frozen).
    db = tmp_path / "index.sqlite3"
    async with IndexStore(db) as leader, IndexStore(db) as standby:
        await leader.bulk_insert([file(1, minutes=1), file(2, minutes=2)])
        assert (await standby.query(FileQuery())).total == 2  # counted, and cached
        await leader.bulk_insert([file(3, minutes=3)])
        page = await standby.query(FileQuery())
        assert page.total == 3
        assert [f.path for f in page.items] == [
            f.path for f in (file(3, minutes=3), file(2, minutes=2), file(1, minutes=1))
        ]


async def test_one_owners_files_filtered_counted_and_paged(store: IndexStore) -> None:
    owners = ("alice", "bob", None)  # None: from before ownership
    files = [file(n, minutes=n % 17, owner=owners[n % 3]) for n in range(60)]
    await store.bulk_insert(files)
    alices = [f for f in files if f.owner == "alice"]
    seen, totals = await all_pages(store, 7, owner="alice")
    assert (seen, totals) == (newest_first(alices), 20)
    # With another filter the owner still narrows the rows and the total.
    seen, totals = await all_pages(store, 3, owner="alice", room_id=ROOMS[0])
    expected = [f for f in alices if f.room_id == ROOMS[0]]
    assert (seen, totals) == (newest_first(expected), len(expected))
    assert (await store.query(FileQuery(owner="carol"))).total == 0
    assert (await store.query(FileQuery())).total == 60  # no owner asked: everyone's


async def test_an_owner_is_never_erased_and_fills_a_row_without_one(store: IndexStore) -> None:
    early = file(1, minutes=1, owner=None, s3=S3Location(bucket="b", key="k"))
    await store.set_uploaded([(early, False)])  # upload.done first, its job unknown then
    await store.upsert_finished([(file(1, minutes=1, owner="alice"), True)])
    row = await store.get(early.path)
    assert row is not None
    assert row.owner == "alice"
    await store.upsert_finished([(file(1, minutes=1, owner=None), True)])  # a redelivery
    await store.set_uploaded([(file(1, minutes=1, owner="bob"), False)])
    row = await store.get(early.path)
    assert row is not None
    assert row.owner == "alice"


async def test_an_index_from_before_owners_gets_the_column_its_rows_none(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    old_table = """CREATE TABLE files (
        id INTEGER PRIMARY KEY, path TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
        mtime INTEGER NOT NULL, duration_s REAL, room_id TEXT, user TEXT, url TEXT, title TEXT,
        job_id TEXT, watcher_key TEXT, started_at INTEGER,
        upload_wanted INTEGER NOT NULL DEFAULT 0, s3_bucket TEXT, s3_key TEXT, s3_etag TEXT,
        local INTEGER NOT NULL DEFAULT 1)"""
    with sqlite3.connect(db) as conn:
        conn.execute(old_table)
        conn.execute(
            "INSERT INTO files (path, name, size, mtime, room_id, job_id) "
            "VALUES ('r/old.mp4', 'old.mp4', 5, 1000, ?, 'job-old')",
            (ROOMS[0],),
        )
    async with IndexStore(db) as store:
        old = await store.get("r/old.mp4")
        assert old is not None
        assert (old.job_id, old.owner) == ("job-old", None)
        assert (await store.query(FileQuery(owner="alice"))).total == 0
        assert (await store.query(FileQuery())).total == 1
        await store.upsert_finished([(file(2, minutes=1, owner="alice"), True)])
        assert (await store.query(FileQuery(owner="alice"))).total == 1
    async with IndexStore(db) as store:  # opened again: nothing left to add
        assert await store.count() == 2
    with sqlite3.connect(db) as conn:
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(files)")}
    assert "files_owner" in indexes
