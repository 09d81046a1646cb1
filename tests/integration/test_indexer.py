"""The indexer on a real nats-server: events in, files.query and files.rebuild out, retention."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.subscription import Subscription
from nats.micro.request import ERROR_CODE_HEADER
from prometheus_client import REGISTRY

from services.indexer import retention
from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from shared import files
from shared.bus import Bus
from shared.events import (
    FileDeleted,
    RecordedFile,
    RecordingFinished,
    RecordingOptions,
    UploadDone,
    UploadedFile,
    utc_now,
)
from shared.job_store import JobStore
from shared.jobs import Claim, JobRequest, Outcome, SegmentEntry
from shared.subjects import INDEXER, subject_for
from tests.helpers import eventually, job_store
from tlr.nats_server import NatsServer

ROOM_A = "7000000000000000001"
ROOM_B = "7000000000000000002"
DAY = 86_400.0

Indexer = Callable[..., AbstractAsyncContextManager[IndexerService]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


@pytest.fixture
def indexer(bus: Bus, nats_server: NatsServer, tmp_path: Path, root: Path) -> Indexer:
    """Start an IndexerService; settings may be overridden (e.g. index_db, retention)."""

    def start(**overrides: Any) -> IndexerService:
        fields: dict[str, Any] = {
            "nats_url": nats_server.client_url,
            "instance_id": "indexer-t",
            "recordings_dir": root,
            "index_db": tmp_path / "index.sqlite3",
            "retention_interval": 3600,
            **overrides,
        }
        return IndexerService(bus, IndexerSettings(**fields))

    return start


@pytest.fixture
async def deleted(bus: Bus) -> AsyncIterator[Subscription]:
    """Every file.deleted published from now on."""
    sub = await bus.nc.subscribe(subject_for(FileDeleted))
    yield sub
    await sub.unsubscribe()


def put(root: Path, rel: str, *, size: int = 1000, age: float = 3600.0) -> str:
    """A file of ``size`` random bytes last written ``age`` seconds ago."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return rel


def finished(root: Path, job_id: str, room: str | None, paths: list[str], **kw: Any) -> Any:
    recorded = [
        RecordedFile(path=p, size=(root / p).stat().st_size if (root / p).exists() else 7)
        for p in paths
    ]
    return RecordingFinished(job_id=job_id, room_id=room, files=recorded, **kw)


async def query(bus: Bus, **filters: Any) -> files.FilePage:
    reply = await bus.nc.request(
        files.QUERY, msgspec.json.encode(files.FileQuery(**filters)), timeout=5
    )
    assert not (reply.headers or {}).get(ERROR_CODE_HEADER), reply.headers
    return msgspec.json.decode(reply.data, type=files.FilePage)


async def indexed(bus: Bus, count: int, **filters: Any) -> files.FilePage:
    async def there() -> bool:
        return (await query(bus, **filters)).total == count

    await eventually(there, timeout=15)
    return await query(bus, page_size=500, **filters)


async def by_path(bus: Bus) -> dict[str, files.IndexedFile]:
    return {f.path: f for f in (await query(bus, page_size=500)).items}


async def next_deleted(sub: Subscription, n: int) -> list[FileDeleted]:
    return [
        msgspec.json.decode((await sub.next_msg(timeout=10)).data, type=FileDeleted)
        for _ in range(n)
    ]


async def first_pass_done(service: IndexerService) -> None:
    async def done() -> bool:
        return service.retention.passes >= 1

    await eventually(done, timeout=15)


async def test_events_fill_the_index_and_queries_answer(
    bus: Bus, indexer: Indexer, root: Path
) -> None:
    a1 = put(root, f"{ROOM_A}/2026/03/01/a1.mp4", size=1234, age=300)
    a2 = put(root, f"{ROOM_A}/2026/03/01/a2.mp4", size=2000, age=200)
    gone = f"{ROOM_A}/2026/03/01/gone.mp4"  # reported, but not on this disk
    b1 = put(root, f"{ROOM_B}/b1.mp4", age=100)
    async with indexer() as service:
        # The start scan would drop the row of ``gone`` (no such file) if it ran after it.
        await first_pass_done(service)
        job_a = finished(
            root,
            "job-a",
            ROOM_A,
            [a1, a2, gone, "../outside.mp4", "/etc/passwd"],
            url="https://www.tiktok.com/@amy/live",
            title="Amy live",
            watcher_key="@amy",
            started_at=utc_now(),
            upload_s3=True,
        )
        await bus.publish(job_a)
        await bus.publish(finished(root, "job-b", ROOM_B, [b1], unique_id="bob", url="@bob"))
        page = await indexed(bus, 4)
        assert [f.path for f in page.items] == [gone, b1, a2, a1]  # newest first
        rows = await by_path(bus)
        first = rows[a1]
        assert (first.name, first.size, first.room_id) == ("a1.mp4", 1234, ROOM_A)
        assert first.mtime.timestamp() == pytest.approx((root / a1).stat().st_mtime, abs=1e-5)
        assert (first.user, first.url, first.title) == ("amy", job_a.url, "Amy live")
        assert (first.job_id, first.watcher_key, first.upload_wanted) == ("job-a", "@amy", True)
        assert first.started_at == job_a.started_at
        assert (first.s3, first.local) == (None, True)
        assert (rows[gone].size, rows[gone].mtime) == (7, job_a.ended_at)
        assert rows[b1].user == "bob"

        assert [f.path for f in (await query(bus, room_id=ROOM_B)).items] == [b1]
        assert (await query(bus, user="amy")).total == 3
        assert (await query(bus, url="@bob")).total == 1
        assert (await query(bus, job_id="job-a")).total == 3
        window = await query(bus, since=rows[a2].mtime, until=rows[b1].mtime)
        assert [f.path for f in window.items] == [b1, a2]
        assert [f.path for f in (await query(bus, page=2, page_size=3)).items] == [a1]

        # upload.done: S3 copies; the uploader removed a2's local copy.
        await bus.publish(
            UploadDone(
                job_id="job-a",
                files=[
                    UploadedFile(path=a1, bucket="rec", key=f"p/{a1}", size=1234, etag="e1"),
                    UploadedFile(
                        path=a2, bucket="rec", key=f"p/{a2}", size=2000, local_deleted=True
                    ),
                ],
            )
        )

        async def uploaded() -> bool:
            rows = await by_path(bus)
            return rows[a1].s3 is not None and not rows[a2].local

        await eventually(uploaded, timeout=15)
        rows = await by_path(bus)
        assert rows[a1].s3 == files.S3Location(bucket="rec", key=f"p/{a1}", etag="e1")
        assert rows[a1].local
        assert rows[a2].s3 == files.S3Location(bucket="rec", key=f"p/{a2}")

        # The uploader announces a removal before the upload itself: the row stays.
        await bus.publish(FileDeleted(path=b1, reason="uploaded", job_id="job-b"))
        await bus.publish(
            UploadDone(
                job_id="job-b",
                files=[
                    UploadedFile(path=b1, bucket="rec", key="b1", size=1000, local_deleted=True)
                ],
            )
        )

        async def b1_uploaded() -> bool:
            return (await by_path(bus))[b1].s3 is not None

        await eventually(b1_uploaded, timeout=15)
        row = (await by_path(bus))[b1]
        assert (row.local, row.user, row.room_id, row.job_id) == (False, "bob", ROOM_B, "job-b")

        # The same recording.finished again (a redelivery): nothing lost, nothing doubled.
        await bus.publish(job_a)
        # file.deleted: a1 has an S3 copy (kept, not local); gone has none (dropped).
        await bus.publish(FileDeleted(path=a1, reason="uploaded"))
        await bus.publish(FileDeleted(path=gone, reason="retention"))
        page = await indexed(bus, 3)
        rows = {f.path: f for f in page.items}
        assert set(rows) == {a1, a2, b1}
        assert (rows[a1].local, rows[a1].s3 is not None, rows[a1].title) == (
            False,
            True,
            "Amy live",
        )
        assert not rows[a2].local


async def test_bad_queries_answer_400(bus: Bus, indexer: Indexer) -> None:
    async with indexer():
        for body in (
            {"page": 0},
            {"page_size": 0},
            {"page_size": files.MAX_PAGE_SIZE + 1},
            {"page": "two"},
            {"since": "yesterday"},
        ):
            reply = await bus.nc.request(files.QUERY, msgspec.json.encode(body), timeout=5)
            assert (reply.headers or {}).get(ERROR_CODE_HEADER) == "400", body
        reply = await bus.nc.request(files.QUERY, b"not json", timeout=5)
        assert (reply.headers or {}).get(ERROR_CODE_HEADER) == "400"
        # No body at all is the first page of everything.
        reply = await bus.nc.request(files.QUERY, b"", timeout=5)
        assert msgspec.json.decode(reply.data, type=files.FilePage).total == 0


async def test_retention_by_age_and_room_quota_oldest_first(
    bus: Bus, indexer: Indexer, root: Path, deleted: Subscription
) -> None:
    async with indexer(retention_days=1, quota_bytes_per_room=2500) as service:
        await first_pass_done(service)
        waiting = put(root, f"{ROOM_A}/waiting.mp4", age=20 * DAY)  # upload asked, not done
        old = put(root, f"{ROOM_A}/old.mp4", age=10 * DAY)
        a1 = put(root, f"{ROOM_A}/a1.mp4", age=3 * 3600)
        a2 = put(root, f"{ROOM_A}/a2.mp4", age=2 * 3600)
        a3 = put(root, f"{ROOM_A}/a3.mp4", age=1 * 3600)
        b1 = put(root, f"{ROOM_B}/b1.mp4", age=5 * 3600)
        await bus.publish(finished(root, "job-up", ROOM_A, [waiting], upload_s3=True))
        await bus.publish(finished(root, "job-a", ROOM_A, [old, a1, a2, a3]))
        await bus.publish(finished(root, "job-b", ROOM_B, [b1]))
        await indexed(bus, 6)

        assert await service.retention.run_pass() == {"retention": 1, "quota": 2}
        events = await next_deleted(deleted, 3)
        # Old age first; then room A (4000 bytes, of which 1000 must stay) down to 2000.
        assert [(e.path, e.reason) for e in events] == [
            (old, "retention"),
            (a1, "quota"),
            (a2, "quota"),
        ]
        assert (events[0].job_id, events[0].room_id, events[0].size) == ("job-a", ROOM_A, 1000)
        for path in (old, a1, a2):
            assert not (root / path).exists()
        for path in (waiting, a3, b1):
            assert (root / path).exists()
        assert set(await by_path(bus)) == {waiting, a3, b1}

        # Nothing more to do; once the upload is done, the waiting file may go.
        assert await service.retention.run_pass() == {}
        await bus.publish(
            UploadDone(
                job_id="job-up",
                files=[UploadedFile(path=waiting, bucket="rec", key="k", size=1000)],
            )
        )

        async def safe_in_s3() -> bool:
            return (await by_path(bus))[waiting].s3 is not None

        await eventually(safe_in_s3, timeout=15)
        assert await service.retention.run_pass() == {"retention": 1}
        (event,) = await next_deleted(deleted, 1)
        assert (event.path, event.reason) == (waiting, "retention")
        rows = await by_path(bus)
        assert not rows[waiting].local  # the S3 copy is still listed
        assert (root / a3).exists()


async def test_disk_floor_deletes_all_it_may_oldest_first(
    bus: Bus, indexer: Indexer, root: Path, deleted: Subscription
) -> None:
    floor = shutil.disk_usage(root).total + 1  # more than the disk can ever have free
    async with indexer(disk_free_min_bytes=floor, disk_free_warn_bytes=floor) as service:
        await first_pass_done(service)
        waiting = put(root, f"{ROOM_A}/waiting.mp4", age=9 * DAY)
        f_old = put(root, f"{ROOM_A}/old.mp4", age=8 * DAY)
        f_s3 = put(root, f"{ROOM_B}/s3.mp4", age=7 * DAY)
        f_new = put(root, f"{ROOM_B}/new.mp4", age=6 * DAY)
        fresh = put(root, f"{ROOM_B}/fresh.mp4", age=5)  # just written: guarded
        await bus.publish(finished(root, "job-up", ROOM_A, [waiting], upload_s3=True))
        await bus.publish(finished(root, "job-1", None, [f_old, f_s3, f_new, fresh]))
        await bus.publish(
            UploadDone(
                job_id="job-1", files=[UploadedFile(path=f_s3, bucket="b", key="k", size=1000)]
            )
        )

        async def ready() -> bool:
            rows = await by_path(bus)
            return len(rows) == 5 and rows[f_s3].s3 is not None

        await eventually(ready, timeout=15)
        recording = put(root, f"{ROOM_B}/live.flv", age=0)  # being recorded: not indexed

        assert await service.retention.run_pass() == {"disk_floor": 3}
        events = await next_deleted(deleted, 3)
        # Safe in S3 first, then oldest first.
        assert [(e.path, e.reason) for e in events] == [
            (f_s3, "disk_floor"),
            (f_old, "disk_floor"),
            (f_new, "disk_floor"),
        ]
        for path in (waiting, fresh, recording):
            assert (root / path).exists()
        rows = await by_path(bus)
        assert set(rows) == {waiting, f_s3, fresh}
        assert not rows[f_s3].local
    assert REGISTRY.get_sample_value("tlr_disk_low") == 1
    free = REGISTRY.get_sample_value("tlr_disk_bytes_free")
    assert free is not None
    assert 0 < free < floor


async def test_first_pass_waits_for_pending_events(
    bus: Bus,
    indexer: Indexer,
    root: Path,
    deleted: Subscription,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retention, "CATCH_UP_RETRY", 0.05)
    # Written and announced while no indexer ran: at start the index is empty, so a scan
    # finds both files (without their metadata) before the events say one awaits upload.
    waiting = put(root, f"{ROOM_A}/2026/01/01/waiting.mp4", age=9 * DAY)
    old = put(root, f"{ROOM_A}/2026/01/01/old.mp4", age=8 * DAY)
    await bus.publish(finished(root, "job-up", ROOM_A, [waiting], upload_s3=True))
    await bus.publish(finished(root, "job-old", ROOM_A, [old]))
    # Hold both events (delivered, not acked) so the indexer starts behind them.
    await bus.provision(durables=(INDEXER,))
    holder = await bus.js.pull_subscribe_bind(INDEXER.name, stream=INDEXER.stream)
    held: list[Any] = []
    while len(held) < 2:
        held += await holder.fetch(2 - len(held), timeout=5)
    async with indexer(retention_days=1) as service:
        await indexed(bus, 2)  # the start scan

        async def holding_back() -> bool:
            return service.retention.waiting_for_events

        await eventually(holding_back, timeout=15)
        assert service.retention.passes == 0
        for msg in held:
            await msg.nak()
        (event,) = await next_deleted(deleted, 1)
        assert (event.path, event.reason, event.job_id) == (old, "retention", "job-old")
        await first_pass_done(service)
        assert service.retention.last_deleted == {"retention": 1}
        rows = await by_path(bus)
        assert set(rows) == {waiting}
        assert rows[waiting].upload_wanted
        assert (root / waiting).exists()
    await holder.unsubscribe()


async def test_rebuild_finds_files_written_while_down(
    bus: Bus, indexer: Indexer, root: Path, tmp_path: Path
) -> None:
    async with indexer(index_db=tmp_path / "first.sqlite3") as service:
        await first_pass_done(service)
    mp4 = put(root, f"{ROOM_A}/2026/03/01/20260301_100000_live.mp4", size=500)
    failed_remux = put(root, f"{ROOM_A}/2026/03/01/20260301_110000_live.flv", age=600)
    put(root, f"{ROOM_A}/2026/03/01/20260301_120000_live.flv", age=600)  # remuxed: .mp4 wins
    remuxed = put(root, f"{ROOM_A}/2026/03/01/20260301_120000_live.mp4")
    put(root, f"{ROOM_B}/2026/03/01/20260301_130000_live.flv", age=1)  # being recorded
    put(root, f"{ROOM_B}/2026/03/01/20260301_130000_live.mp4.tmp", age=1)  # being remuxed
    put(root, f"{ROOM_B}/.hidden.mp4")
    put(root, ".trash/deleted.mp4")
    custom = put(root, "amy/live.mp4")  # another template: no room id
    os.symlink(root / mp4, root / "link.mp4")

    async with indexer(index_db=tmp_path / "second.sqlite3"):
        page = await indexed(bus, 4)
    rows = {f.path: f for f in page.items}
    assert set(rows) == {mp4, failed_remux, remuxed, custom}
    assert (rows[mp4].room_id, rows[mp4].name, rows[mp4].size) == (
        ROOM_A,
        "20260301_100000_live.mp4",
        500,
    )
    assert rows[custom].room_id is None
    assert rows[mp4].mtime.timestamp() == pytest.approx((root / mp4).stat().st_mtime, abs=1e-5)


async def test_rebuild_on_demand(bus: Bus, indexer: Indexer, root: Path) -> None:
    kept = put(root, f"{ROOM_A}/kept.mp4")
    grown = put(root, f"{ROOM_A}/grown.mp4")
    lost = put(root, f"{ROOM_A}/lost.mp4")
    in_s3 = put(root, f"{ROOM_B}/in_s3.mp4")
    async with indexer() as service:
        await first_pass_done(service)  # the start scan indexed all four already
        await bus.publish(finished(root, "job-a", ROOM_A, [kept, grown, lost], title="t"))
        await bus.publish(
            UploadDone(
                job_id="job-b", files=[UploadedFile(path=in_s3, bucket="b", key="k", size=1000)]
            )
        )

        async def settled() -> bool:
            rows = await by_path(bus)
            return rows[kept].title == "t" and rows[in_s3].s3 is not None

        await eventually(settled, timeout=15)
        added = put(root, f"{ROOM_B}/added.mp4")
        put(root, grown, size=5000)
        (root / lost).unlink()
        (root / in_s3).unlink()

        reply = await bus.nc.request(files.REBUILD, b"", timeout=30)
        result = msgspec.json.decode(reply.data, type=files.RebuildReply)
        assert result == files.RebuildReply(scanned=3, added=1, updated=1, removed=2)
        rows = await by_path(bus)
        assert set(rows) == {kept, grown, added, in_s3}
        assert (rows[grown].size, rows[grown].title, rows[grown].job_id) == (5000, "t", "job-a")
        assert (rows[in_s3].local, rows[in_s3].s3 is not None) == (False, True)
        assert rows[added].room_id == ROOM_B

        again = await bus.nc.request(files.REBUILD, b"", timeout=30)
        assert msgspec.json.decode(again.data, type=files.RebuildReply) == files.RebuildReply(
            scanned=3, added=0, updated=0, removed=0
        )


async def test_a_standby_indexes_when_the_leader_stops(
    bus: Bus, indexer: Indexer, root: Path
) -> None:
    # Two indexers on one INDEX_DB and RECORDINGS_DIR: one leads (indexes, deletes), the other
    # answers queries from the shared index and waits for the lease.
    one = put(root, f"{ROOM_A}/one.mp4", age=300)
    a, b = indexer(instance_id="indexer-1"), indexer(instance_id="indexer-2")
    running = [await a.__aenter__(), await b.__aenter__()]
    try:

        async def one_leader() -> bool:
            return a.leader != b.leader

        await eventually(one_leader, timeout=15)
        leader, standby = (a, b) if a.leader else (b, a)
        await bus.publish(finished(root, "job-1", ROOM_A, [one]))
        await indexed(bus, 1)
        assert [f.path for f in (await standby.store.query(files.FileQuery())).items] == [one]
        # Retention (the only deleter of recordings) runs on the leader alone.
        await first_pass_done(leader)
        assert (standby.leader, standby.retention.passes) == (False, 0)

        # The leader goes away (a rolling update, a crash): the standby takes the lease.
        running.remove(leader)
        await leader.__aexit__(None, None, None)

        async def took_over() -> bool:
            return standby.leader

        await eventually(took_over, timeout=15)
        two = put(root, f"{ROOM_A}/two.mp4", age=200)
        await bus.publish(finished(root, "job-2", ROOM_A, [two]))
        page = await indexed(bus, 2)
        assert [f.path for f in page.items] == [two, one]
    finally:
        for service in running:
            await service.__aexit__(None, None, None)


async def recorded(
    store: JobStore,
    job_id: str,
    room: str,
    path: str,
    *,
    upload: bool,
    done: bool,
    owner: str | None = None,
) -> None:
    """``job_id`` (of ``owner``) in KV ``jobs`` as a recorder leaves it: ``path`` finalised,
    maybe finished."""
    options = RecordingOptions(upload_s3=upload)
    await store.submit(JobRequest(job_id=job_id, room_id=room, options=options, owner=owner))
    claim = Claim(recorder_id="rec-1", room_id=room, title=None, unique_id=None, attempt=1)
    await store.claim(job_id, 1, claim)
    await store.segment_opened(job_id, 1, SegmentEntry(path=path))
    await store.segment_finalised(job_id, 1, SegmentEntry(path=path, size=1000, state="final"))
    if done:
        await store.finish(job_id, Outcome(state="SUCCESS"), token=1)


async def test_a_rebuild_keeps_files_their_jobs_still_need(
    bus: Bus, indexer: Indexer, root: Path, deleted: Subscription
) -> None:
    """A lost INDEX_DB, then a rebuild on demand: files the index learns from disk alone keep
    their job's claim on them (an upload owed, a recording running) through retention."""
    store = await job_store(bus)
    owed = put(root, f"{ROOM_A}/2026/01/01/owed.mp4", age=9 * DAY)
    live = put(root, f"{ROOM_B}/2026/01/01/live.mp4", age=9 * DAY)
    stray = put(root, f"{ROOM_B}/2026/01/01/stray.mp4", age=9 * DAY)  # no job knows it
    await recorded(store, "job-owed", ROOM_A, owed, upload=True, done=True)
    await store.upload_ended(
        "job-owed", 1, "RETRY", uploader_id="up-1", attempt=1, error=("S3_UNAVAILABLE", "down")
    )
    await recorded(store, "job-live", ROOM_B, live, upload=False, done=False)

    async with indexer(retention_days=1) as service:  # an empty index: the start scan
        await first_pass_done(service)
        (event,) = await next_deleted(deleted, 1)
        assert event.path == stray
        reply = await bus.nc.request(files.REBUILD, b"", timeout=30)
        assert msgspec.json.decode(reply.data, type=files.RebuildReply).scanned == 2
        assert await service.retention.run_pass() == {}
        assert (root / owed).exists()
        assert (root / live).exists()
        rows = await by_path(bus)
        assert (rows[owed].job_id, rows[owed].upload_wanted) == ("job-owed", True)
        assert (rows[live].job_id, rows[live].upload_wanted) == ("job-live", False)

        # The recording ends (no upload asked) and the upload lands: both may go now.
        await store.finish("job-live", Outcome(state="SUCCESS"), token=1)
        await bus.publish(
            UploadDone(
                job_id="job-owed",
                files=[UploadedFile(path=owed, bucket="rec", key=owed, size=1000)],
            )
        )

        async def uploaded() -> bool:
            return (await by_path(bus))[owed].s3 is not None

        await eventually(uploaded, timeout=15)
        assert await service.retention.run_pass() == {"retention": 2}
    assert not (root / owed).exists()
    assert not (root / live).exists()


async def test_a_files_owner_is_its_jobs_and_a_rebuild_finds_it_again(
    bus: Bus, indexer: Indexer, root: Path, tmp_path: Path
) -> None:
    store = await job_store(bus)
    mine = put(root, f"{ROOM_A}/2026/01/01/mine.mp4")
    old = put(root, f"{ROOM_B}/2026/01/01/old.mp4")  # its job's document is gone
    await recorded(store, "job-mine", ROOM_A, mine, upload=False, done=True, owner="alice")
    async with indexer(index_db=tmp_path / "first.sqlite3") as service:
        await first_pass_done(service)
        await bus.publish(finished(root, "job-mine", ROOM_A, [mine]))
        await bus.publish(finished(root, "job-old", ROOM_B, [old]))
        (row,) = (await indexed(bus, 1, owner="alice")).items
        assert (row.path, row.job_id, row.owner) == (mine, "job-mine", "alice")

        async def old_indexed() -> bool:
            return (await by_path(bus))[old].job_id == "job-old"

        await eventually(old_indexed, timeout=15)
        assert (await by_path(bus))[old].owner is None  # an admin's only
        assert (await query(bus, owner="bob")).total == 0

    # A lost INDEX_DB: the rebuild finds the file's job through the room, and so its owner.
    async with indexer(index_db=tmp_path / "second.sqlite3"):
        (row,) = (await indexed(bus, 1, owner="alice")).items
        assert (row.path, row.job_id, row.owner) == (mine, "job-mine", "alice")
        assert (await by_path(bus))[old].owner is None
