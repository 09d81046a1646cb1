"""The recorder's decisions on recording work, over the real job store and in-memory fakes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
import pytest
from structlog.testing import capture_logs

from services.recorder.deps import Job, RecorderDeps, Work
from services.recorder.endings import ENDING_DEADLINE, Endings
from services.recorder.handlers import FIRST_REFUSAL, on_recording_work
from services.recorder.media import SessionPlan
from services.recorder.outcome import MAX_RETRIES
from services.recorder.recording import DISK_FULL_RETRY, LeaseNotFresh
from services.recorder.session_types import SessionResult
from services.recorder.settings import RecorderSettings
from services.recorder.startup import StartUps
from shared.consumer import Delivery
from shared.errors import ErrorCode, NotMine, RetryLater
from shared.events import (
    EgressFailed,
    Event,
    RecordingFinished,
    RecordingOptions,
    RecordingRequested,
    RecordingStarted,
    RoomLive,
)
from shared.job_store import JobStore
from shared.jobs import Claim, JobRequest, Outcome, RecordingPart, SegmentEntry
from shared.lease import LEASE_DOUBT, Holder
from shared.subjects import LEASE_RENEW
from shared.tiktok import RoomInfo, StreamVariant, UserNotFound, WafBlocked
from shared.tiktok.guards import SESSION_REFUSALS
from tests.fakes.clock import ManualClock
from tests.fakes.documents import MemoryDocuments
from tests.fakes.egresses import FakeEgressPicker
from tests.fakes.leases import MemoryLeases
from tests.fakes.media import FakeMedia, Take
from tests.fakes.publisher import MemoryPublisher
from tests.fakes.tiktok import FakeTikTokClient, FakeTikTokPool
from tests.helpers import eventually

ROOM = "7503448765740976902"
JOB = "job1"
LEASE = f"room.{ROOM}"
TEMPLATE = "{room_id}/{job_id}_{part}.mp4"
OPTIONS = RecordingOptions(output_template=TEMPLATE)


class CountingPublisher(MemoryPublisher):
    """Also counts publish calls, duplicates included."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def publish(self, event: Event) -> object:
        self.calls += 1
        return await super().publish(event)


@dataclass
class World:
    """One recorder process with its fakes; ``deps`` is built from them as they are now."""

    root: Path
    store: JobStore = field(default_factory=lambda: JobStore(MemoryDocuments()))
    leases: MemoryLeases = field(default_factory=MemoryLeases)
    publisher: CountingPublisher = field(default_factory=CountingPublisher)
    pool: FakeTikTokPool = field(default_factory=FakeTikTokPool)
    media: FakeMedia = field(default_factory=FakeMedia)
    clock: ManualClock = field(default_factory=ManualClock)
    active: dict[str, Job] = field(default_factory=dict)
    endings: Endings = field(default_factory=Endings)
    deferred: dict[str, float] = field(default_factory=dict)
    withdrawn: bool = False  # no request document, as after a publish the gateway undid
    renew_every: float = 3600.0  # the Keeper stays out of the way unless a test wants it
    startups: StartUps = field(default_factory=StartUps)
    egresses: FakeEgressPicker = field(default_factory=FakeEgressPicker)  # no pool
    media_direct: bool = False  # EGRESS_MEDIA_DIRECT

    @property
    def tiktok(self) -> FakeTikTokClient:
        return self.pool.fake

    @property
    def deps(self) -> RecorderDeps:
        return RecorderDeps(
            recorder_id="rec-a",
            settings=RecorderSettings(
                recordings_dir=self.root, egress_media_direct=self.media_direct
            ),
            store=self.store,
            leases=self.leases,
            publisher=self.publisher,
            tiktok=self.pool,  # type: ignore[arg-type]  # the fake client, not a TikTokClient
            media=self.media,
            egresses=self.egresses,
            clock=self.clock,
            active=self.active,
            endings=self.endings,
            deferred=self.deferred,
            renew_every=self.renew_every,
            startups=self.startups,
        )

    async def run(self, event: Work | None = None, attempt: int = 1) -> None:
        event = event or requested()
        if await self.store.request(event.job_id) is None and not self.withdrawn:
            # As the gateway does before it publishes.
            await self.store.submit(JobRequest(job_id=event.job_id, room_id=event.room_id))
        await on_recording_work(event, delivery(attempt), self.deps)

    async def run_after_first_refusal(self, event: Work | None = None) -> None:
        """A job another recorder was recording: the first delivery waits FIRST_REFUSAL for
        that holder to take its lease again; the next one, that much later, goes on."""
        with pytest.raises(RetryLater, match="its own first") as wait:
            await self.run(event)
        assert wait.value.delay == FIRST_REFUSAL
        self.clock.now += FIRST_REFUSAL
        await self.run(event, attempt=2)

    async def job(self) -> RecordingPart:
        doc = await self.store.recording(JOB)
        assert doc is not None
        return doc

    def finished(self) -> list[RecordingFinished]:
        return [e for e in self.publisher.events if isinstance(e, RecordingFinished)]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(root=tmp_path)


def requested(**fields: object) -> RecordingRequested:
    values: dict[str, object] = {"job_id": JOB, "room_id": ROOM, "options": OPTIONS}
    return RecordingRequested(**(values | fields))  # type: ignore[arg-type]


async def _no_progress() -> None:
    return None


def delivery(attempt: int = 1) -> Delivery:
    return Delivery("recording.requested", attempt, attempt, _no_progress)


def listed(doc: RecordingPart | RecordingFinished) -> list[tuple[str, int]]:
    if isinstance(doc, RecordingFinished):
        return [(f.path, f.part) for f in doc.files]
    return [(s.path, s.part) for s in doc.segments]


def claim(recorder: str) -> Claim:
    return Claim(recorder, ROOM, "hello", "kim", attempt=1)


# --- decisions before any recording ------------------------------------------------------------


async def test_a_finished_job_is_announced_again_without_work(world: World) -> None:
    # Written SUCCESS, then the publish of recording.finished was lost (NATS away): the
    # redelivery must publish it, or the job is never uploaded nor indexed.
    await world.store.finish(JOB, Outcome("SUCCESS", room_id=ROOM))
    await world.run()
    assert (await world.job()).state == "SUCCESS"
    assert [e.job_id for e in world.finished()] == [JOB]
    assert world.pool.asked == []
    assert world.tiktok.calls == []
    assert world.leases.held == {}


async def test_a_withdrawn_job_is_not_recorded(world: World) -> None:
    world.withdrawn = True
    await world.run()
    assert await world.store.recording(JOB) is None
    assert world.tiktok.calls == []
    assert world.publisher.calls == 0


async def test_a_cancelled_request_finishes_cancelled_and_announces_it_once(world: World) -> None:
    await world.store.submit(JobRequest(job_id=JOB, room_id=ROOM))
    await world.store.request_cancel(JOB)
    await world.run()
    await world.run(attempt=2)  # a redelivery finds the job finished
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("CANCELLED", ErrorCode.CANCELLED)
    # Announced once: the redelivery publishes it again with the same id, which JetStream
    # (and the fake publisher) drops as a duplicate.
    assert [e.error_code for e in world.finished()] == [ErrorCode.CANCELLED]
    assert world.publisher.calls == 2
    assert world.tiktok.calls == []


async def test_a_proxy_that_cannot_be_unsealed_fails_the_job_without_asking_tiktok(
    world: World,
) -> None:
    world.pool.refuse_proxy("sealed:proxy")
    options = RecordingOptions(proxy="sealed:proxy", output_template=TEMPLATE)
    await world.run(requested(options=options))
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.VALIDATION_ERROR)
    assert doc.error_message is not None
    assert "cannot be used" in doc.error_message
    assert [e.error_code for e in world.finished()] == [ErrorCode.VALIDATION_ERROR]
    assert world.tiktok.calls == []
    assert world.leases.held == {}


async def test_a_retryable_tiktok_error_retries_then_fails_after_max_retries(
    world: World,
) -> None:
    url = "https://www.tiktok.com/@kim/live"
    world.tiktok.fail("resolve", WafBlocked(endpoint="live page", reason="empty body"))
    event = requested(room_id=None, url=url)
    for attempt in range(1, MAX_RETRIES):
        with pytest.raises(RetryLater) as retry:
            await world.run(event, attempt)
        assert retry.value.delay == 2.0**attempt
        doc = await world.job()
        assert (doc.state, doc.error_code) == ("RETRY", ErrorCode.WAF_BLOCKED)
        assert world.finished() == []
    await world.run(event, MAX_RETRIES)
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.WAF_BLOCKED)
    assert [e.error_code for e in world.finished()] == [ErrorCode.WAF_BLOCKED]
    assert world.tiktok.called("resolve") == [url] * MAX_RETRIES
    assert world.leases.held == {}


async def test_an_unknown_user_fails_at_once(world: World) -> None:
    url = "https://www.tiktok.com/@nobody/live"
    world.tiktok.fail("resolve", UserNotFound(target="@nobody"))
    await world.run(requested(room_id=None, url=url))
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.USER_NOT_FOUND)
    assert [e.error_code for e in world.finished()] == [ErrorCode.USER_NOT_FOUND]


async def test_a_room_recorded_by_another_unfinished_job_waits_for_it(world: World) -> None:
    world.tiktok.live(ROOM)
    await world.store.claim("other", 1, claim("rec-x"))
    with pytest.raises(RetryLater) as retry:
        await world.run()
    assert retry.value.delay == LEASE_RENEW
    assert await world.store.recording(JOB) is None
    assert world.leases.held == {}
    assert world.media.plans == []
    # Once the other job is over, the room is this job's.
    await world.store.finish("other", Outcome("SUCCESS", room_id=ROOM))
    await world.run(attempt=2)
    assert (await world.job()).state == "SUCCESS"


@pytest.mark.parametrize(
    ("purpose", "delay"),
    [("other-job", LEASE_RENEW), (JOB, 1.0)],
    ids=["another-job", "this-job-left-by-a-dead-recorder"],
)
async def test_a_room_leased_by_someone_else_waits(
    world: World, purpose: str, delay: float
) -> None:
    world.tiktok.live(ROOM)
    theirs = await world.leases.acquire(LEASE, Holder("rec-x", purpose))
    with pytest.raises(RetryLater) as retry:
        await world.run()
    assert retry.value.delay == delay
    assert await world.store.recording(JOB) is None
    assert world.leases.held == {LEASE: theirs}
    assert world.tiktok.called("confirm_live") == []


# --- a recording -------------------------------------------------------------------------------


async def test_a_recording_is_claimed_fenced_listed_and_succeeds(world: World) -> None:
    world.tiktok.live(ROOM, title="hello")
    world.media = FakeMedia([Take(1000, 2.0), Take(2000, 3.0)], pause_after_open=1)
    task = asyncio.create_task(world.run())
    await world.media.paused.wait()

    doc = await world.job()
    lease = world.leases.held[LEASE]
    assert (doc.state, doc.fence, doc.recorder_id, doc.room_id) == (
        "STARTED",
        lease.token,
        "rec-a",
        ROOM,
    )
    assert (doc.quality, doc.title) == ("origin", "hello")
    # The stream lookup names the host, so a refused room/info can fall back to the live page.
    assert world.tiktok.called("live_info") == [ROOM]
    assert world.tiktok.users[-1] == "kim"
    assert [(s.path, s.state) for s in doc.segments] == [
        (f"{ROOM}/{JOB}_0.mp4", "final"),
        (f"{ROOM}/{JOB}_1.flv", "recording"),  # listed before its first byte
    ]
    started = [e for e in world.publisher.events if isinstance(e, RecordingStarted)]
    assert [(e.job_id, e.recorder_id) for e in started] == [(JOB, "rec-a")]

    world.media.resume.set()
    await task
    doc = await world.job()
    assert (doc.state, doc.error_code, doc.bytes) == ("SUCCESS", None, 3000)
    files = [(f"{ROOM}/{JOB}_0.mp4", 0), (f"{ROOM}/{JOB}_1.mp4", 1)]
    assert listed(doc) == files
    [finished] = world.finished()
    assert listed(finished) == files
    assert [(f.size, f.remuxed) for f in finished.files] == [(1000, True), (2000, True)]
    assert world.leases.held == {}  # released


async def test_a_job_through_a_proxy_streams_over_the_proxys_client(world: World) -> None:
    world.tiktok.live(ROOM)
    options = RecordingOptions(proxy="sealed:proxy", output_template=TEMPLATE)
    await world.run(requested(options=options))
    assert (await world.job()).state == "SUCCESS"
    [plan] = world.media.plans
    assert plan.http is world.tiktok.http


# --- routes: the job's own proxy, an egress of the scheduler's pool, or direct ------------------

POOL = {"eu-1": "sealed:eu-1", "eu-2": "sealed:eu-2"}


async def test_a_job_without_a_proxy_goes_through_the_egress_the_scheduler_picks(
    world: World,
) -> None:
    world.egresses = FakeEgressPicker(POOL)
    world.tiktok.live(ROOM)
    await world.run()
    assert world.egresses.asked == [None]  # on demand: whichever is least loaded
    assert [o.proxy for o in world.pool.asked] == ["sealed:eu-1"]
    doc = await world.job()
    assert (doc.state, doc.egress) == ("SUCCESS", "eu-1")  # its name, never its URL
    [plan] = world.media.plans
    assert plan.http is world.tiktok.http  # the media too
    assert plan.options.proxy == "sealed:eu-1"


async def test_a_live_goes_through_the_egress_its_watcher_found_it_through(world: World) -> None:
    world.egresses = FakeEgressPicker(POOL)
    world.tiktok.live(ROOM)
    event = RoomLive(job_id=JOB, room_id=ROOM, watcher_key="@kim", options=OPTIONS, egress="eu-2")
    await world.run(event)
    assert world.egresses.asked == ["eu-2"]
    assert [o.proxy for o in world.pool.asked] == ["sealed:eu-2"]
    assert (await world.job()).egress == "eu-2"


async def test_a_jobs_own_proxy_wins_over_the_pool(world: World) -> None:
    world.egresses = FakeEgressPicker(POOL)
    world.tiktok.live(ROOM)
    options = RecordingOptions(proxy="sealed:own", output_template=TEMPLATE)
    event = RoomLive(job_id=JOB, room_id=ROOM, watcher_key="@kim", options=options, egress="eu-2")
    await world.run(event)
    assert world.egresses.asked == []
    assert [o.proxy for o in world.pool.asked] == ["sealed:own"]
    assert (await world.job()).egress is None
    [plan] = world.media.plans
    assert plan.http is world.tiktok.http


async def test_media_direct_keeps_the_lookups_on_the_egress_and_pulls_media_direct(
    world: World,
) -> None:
    world.egresses = FakeEgressPicker(POOL)
    world.media_direct = True
    world.tiktok.live(ROOM)
    await world.run()
    assert [o.proxy for o in world.pool.asked] == ["sealed:eu-1"]  # room lookups
    assert (await world.job()).egress == "eu-1"
    [plan] = world.media.plans
    assert plan.http is None  # the recorder's own (direct) HTTP client
    assert plan.options.proxy is None


async def test_a_pick_that_fails_records_direct_with_a_warning(world: World) -> None:
    world.egresses = FakeEgressPicker(POOL)
    world.egresses.failing = True
    world.tiktok.live(ROOM)
    with capture_logs() as logs:
        await world.run()
    doc = await world.job()
    assert (doc.state, doc.egress) == ("SUCCESS", None)
    assert [o.proxy for o in world.pool.asked] == [None]
    [warning] = [e for e in logs if e["event"] == "recorder.egress_pick_failed"]
    assert (warning["log_level"], warning["fallback"]) == ("warning", "direct")


async def test_a_pool_proxy_this_recorder_cannot_unseal_records_direct(world: World) -> None:
    world.egresses = FakeEgressPicker(POOL)
    world.pool.refuse_proxy("sealed:eu-1")
    world.tiktok.live(ROOM)
    await world.run()
    doc = await world.job()
    assert (doc.state, doc.egress) == ("SUCCESS", None)  # not the job's fault: not failed
    assert [o.proxy for o in world.pool.asked] == ["sealed:eu-1", None]


async def test_a_waf_page_through_a_pool_egress_is_reported_to_the_pool(world: World) -> None:
    world.egresses = FakeEgressPicker(POOL)
    world.tiktok.fail("resolve", WafBlocked(endpoint="live page", reason="empty body"))
    with pytest.raises(RetryLater):
        await world.run(requested(room_id=None, url="https://www.tiktok.com/@kim/live"))
    [report] = [e for e in world.publisher.events if isinstance(e, EgressFailed)]
    assert (report.name, report.error_code, report.job_id) == ("eu-1", "WAF_BLOCKED", JOB)


async def test_only_waf_answers_through_a_pool_egress_are_reported(world: World) -> None:
    url = "https://www.tiktok.com/@kim/live"
    world.tiktok.fail("resolve", WafBlocked(endpoint="live page", reason="empty body"), times=1)
    own = RecordingOptions(proxy="sealed:own", output_template=TEMPLATE)
    with pytest.raises(RetryLater):  # its own proxy: not the pool's business
        await world.run(requested(room_id=None, url=url, options=own))
    world.egresses = FakeEgressPicker(POOL)
    world.tiktok.fail("resolve", UserNotFound(target="@kim"))
    await world.run(requested(job_id="job2", room_id=None, url=url))  # TikTok's answer
    assert [e for e in world.publisher.events if isinstance(e, EgressFailed)] == []


async def test_a_cancel_while_recording_keeps_the_files_and_finishes_cancelled(
    world: World,
) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(), Take()], pause_after_open=0)
    task = asyncio.create_task(world.run())
    await world.media.paused.wait()
    world.active[JOB].halt("cancelled")  # what the service's watch of job.<id> does
    await task
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("CANCELLED", ErrorCode.CANCELLED)
    assert listed(doc) == [(f"{ROOM}/{JOB}_0.mp4", 0)]
    [finished] = world.finished()
    assert listed(finished) == [(f"{ROOM}/{JOB}_0.mp4", 0)]
    assert world.media.results[0].reason == "stopped"
    assert len(world.media.opened) == 1


# --- takeover ----------------------------------------------------------------------------------


async def left_by_a_dead_holder(world: World) -> SegmentEntry:
    """A recorder claimed the job, listed a raw file, and died (its lease lapsed)."""
    dead = await world.leases.acquire(LEASE, Holder("rec-dead", JOB))
    assert dead is not None
    await world.store.claim(JOB, dead.token, claim("rec-dead"))
    raw = SegmentEntry(path=f"{ROOM}/{JOB}_0.flv", part=0)
    await world.store.segment_opened(JOB, dead.token, raw)
    world.leases.expire(LEASE)
    return raw


async def test_a_takeover_finalises_the_dead_holders_file_and_records_on(world: World) -> None:
    raw = await left_by_a_dead_holder(world)
    done = f"{ROOM}/{JOB}_0.takeover-2.mp4"
    world.media.takeovers[raw.path] = SegmentEntry(path=done, part=0, size=500, state="final")
    world.tiktok.live(ROOM)
    await world.run_after_first_refusal()
    token = 2  # the new holder's lease: the dead one had 1
    assert world.media.taken == [(raw.path, token)]
    doc = await world.job()
    assert (doc.state, doc.fence, doc.recorder_id) == ("SUCCESS", token, "rec-a")
    # The taken-over file replaces the raw one; the new session's parts follow it.
    files = [(done, 0), (f"{ROOM}/{JOB}_1.mp4", 1)]
    assert listed(doc) == files
    [finished] = world.finished()
    assert listed(finished) == files


@pytest.mark.parametrize("file_behind", [True, False], ids=["remuxed", "no-file"])
async def test_a_takeover_when_the_live_has_ended(world: World, file_behind: bool) -> None:
    raw = await left_by_a_dead_holder(world)
    done = f"{ROOM}/{JOB}_0.takeover-2.mp4"
    if file_behind:
        world.media.takeovers[raw.path] = SegmentEntry(path=done, part=0, size=500, state="final")
    world.tiktok.live(ROOM)
    world.tiktok.end(ROOM)
    await world.run_after_first_refusal()
    doc = await world.job()
    [finished] = world.finished()
    assert world.media.plans == []  # nothing left to record
    if file_behind:
        # What was recorded before the job changed hands is the result.
        assert (doc.state, doc.error_code) == ("SUCCESS", None)
        assert listed(doc) == listed(finished) == [(done, 0)]
    else:
        # The listed file never got a byte: dropped, and the job recorded nothing.
        assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.LIVE_OFFLINE)
        assert listed(doc) == listed(finished) == []


async def test_a_holder_back_from_an_outage_takes_its_lease_again_before_anyone_else(
    world: World,
) -> None:
    # NATS was away longer than the lease: it lapsed, and the job's message is redelivered
    # here at the same moment its holder, recording on, tries to take its lease again.
    await left_by_a_dead_holder(world)
    world.tiktok.live(ROOM)
    with pytest.raises(RetryLater, match="its own first"):
        await world.run()
    assert world.leases.held == {}  # this process did not race it
    back = await world.leases.acquire(LEASE, Holder("rec-dead", JOB))
    assert back is not None
    world.clock.now += FIRST_REFUSAL
    with pytest.raises(RetryLater, match="leased by rec-dead"):
        await world.run(attempt=2)
    assert world.media.taken == []  # no take-over: the holder records on
    assert world.tiktok.calls == []
    assert world.leases.held == {LEASE: back}


# --- a holder that lost its lease ---------------------------------------------------------------


async def test_a_stale_holder_is_halted_and_leaves_the_job_to_the_newer_one(
    world: World,
) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(), Take()], pause_after_open=0)
    task = asyncio.create_task(world.run())
    await world.media.paused.wait()

    # Frozen past its TTL: the lease lapses, another recorder takes it and claims the job.
    world.leases.expire(LEASE)
    newer = await world.leases.acquire(LEASE, Holder("rec-b", JOB))
    assert newer is not None
    await world.store.claim(JOB, newer.token, claim("rec-b"))
    world.media.resume.set()

    with pytest.raises(NotMine):
        await task
    assert world.media.results[0].reason == "stopped"
    assert len(world.media.opened) == 1  # no new file once refused
    doc = await world.job()
    assert (doc.state, doc.fence, doc.recorder_id) == ("STARTED", newer.token, "rec-b")
    # Its raw file stays listed for the newer holder to take over; its remux is not listed.
    assert [(s.path, s.state) for s in doc.segments] == [(f"{ROOM}/{JOB}_0.flv", "recording")]
    assert world.finished() == []
    assert world.leases.held == {LEASE: newer}  # not released by the stale holder


async def test_a_lease_not_fresh_opens_no_file_and_hands_the_job_over(world: World) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(1000, 2.0), Take()], pause_after_open=0)
    task = asyncio.create_task(world.run())
    await world.media.paused.wait()

    world.clock.now += LEASE_DOUBT + 1  # no renewal for longer than the lease may live
    world.media.resume.set()

    with pytest.raises(RetryLater, match="handed over \\(lease_lost\\)") as retry:
        await task
    assert retry.value.delay == 0
    assert isinstance(world.media.open_error, LeaseNotFresh)
    assert len(world.media.opened) == 1
    doc = await world.job()
    # Not the end of the job: what was written is kept, another recorder continues.
    assert (doc.state, doc.bytes) == ("RETRY", 1000)
    assert listed(doc) == [(f"{ROOM}/{JOB}_0.mp4", 0)]
    assert world.finished() == []
    assert world.leases.held == {}


# --- faults ------------------------------------------------------------------------------------


class FlakyDocuments(MemoryDocuments):
    """Documents whose next write matching ``fail_when`` times out once (NATS away)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_when: Callable[[bytes], bool] | None = None

    async def update(self, key: str, data: bytes, revision: int) -> int:
        if self.fail_when is not None and self.fail_when(data):
            self.fail_when = None
            raise nats.errors.TimeoutError
        return await super().update(key, data, revision)


async def test_a_file_whose_listing_was_lost_to_a_nats_blip_is_listed_and_announced(
    world: World,
) -> None:
    docs = FlakyDocuments()
    world.store = JobStore(docs)
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(1000, 2.0), Take(2000, 3.0)], pause_after_open=1)
    task = asyncio.create_task(world.run())
    await world.media.paused.wait()
    # The write that lists the second file as final is lost while recording goes on.
    docs.fail_when = lambda data: b"_1.mp4" in data and b"final" in data and b"SUCCESS" not in data
    world.media.resume.set()
    await task
    assert docs.fail_when is None  # the fault did happen
    files = [(f"{ROOM}/{JOB}_0.mp4", 0), (f"{ROOM}/{JOB}_1.mp4", 1)]
    doc = await world.job()
    assert (doc.state, listed(doc)) == ("SUCCESS", files)
    [finished] = world.finished()
    assert listed(finished) == files


async def test_hand_overs_do_not_use_up_the_retry_budget(world: World) -> None:
    # The 5th delivery of a job that changed recorder four times: one WAF answer is a retry.
    url = "https://www.tiktok.com/@kim/live"
    world.tiktok.fail("resolve", WafBlocked(endpoint="live page", reason="empty body"))
    with pytest.raises(RetryLater):
        await world.run(requested(room_id=None, url=url), attempt=MAX_RETRIES)
    doc = await world.job()
    assert (doc.state, doc.failures) == ("RETRY", 1)
    assert world.finished() == []


async def test_a_bug_fails_the_job_after_the_budget_instead_of_for_ever(world: World) -> None:
    world.tiktok.fail("confirm_live", KeyError("room_id"))
    for attempt in range(1, MAX_RETRIES):
        with pytest.raises(KeyError):
            await world.run(attempt=attempt)
        assert (await world.job()).state == "RETRY"
    await world.run(attempt=MAX_RETRIES)
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.INTERNAL)
    assert [e.error_code for e in world.finished()] == [ErrorCode.INTERNAL]


async def test_a_full_disk_retries_the_job_and_recording_resumes(world: World) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(1000, 2.0)], ending="error", error_code=ErrorCode.DISK_FULL)
    with pytest.raises(RetryLater) as retry:
        await world.run()
    assert retry.value.delay == DISK_FULL_RETRY
    doc = await world.job()
    # Kept for another try, with what was recorded before the disk filled.
    assert (doc.state, doc.error_code, doc.failures) == ("RETRY", ErrorCode.DISK_FULL, 0)
    assert listed(doc) == [(f"{ROOM}/{JOB}_0.mp4", 0)]
    assert world.finished() == []
    assert world.leases.held == {}
    # Space is back: the next delivery records on, as part 1.
    world.media = FakeMedia([Take(2000, 3.0)])
    await world.run(attempt=2)
    doc = await world.job()
    assert (doc.state, listed(doc)) == (
        "SUCCESS",
        [(f"{ROOM}/{JOB}_0.mp4", 0), (f"{ROOM}/{JOB}_1.mp4", 1)],
    )


async def test_a_lease_that_lapsed_while_nats_was_away_is_taken_again_not_handed_over(
    world: World,
) -> None:
    # An election longer than the lease's TTL: the room's lease lapsed, no one else took it.
    world.renew_every = 0.001
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(1000, 2.0), Take(2000, 3.0)], pause_after_open=1)
    task = asyncio.create_task(world.run())
    await world.media.paused.wait()
    first = world.leases.held[LEASE]
    world.leases.expire(LEASE)

    async def retaken() -> bool:
        held = world.leases.held.get(LEASE)
        return held is not None and held is not first and (await world.job()).fence == held.token

    await eventually(retaken, timeout=5, interval=0.001)
    world.media.resume.set()
    await task
    doc = await world.job()
    assert (doc.state, doc.recorder_id) == ("SUCCESS", "rec-a")
    assert listed(doc) == [(f"{ROOM}/{JOB}_0.mp4", 0), (f"{ROOM}/{JOB}_1.mp4", 1)]
    assert world.leases.held == {}  # the lease taken again is released too


async def test_a_redelivery_to_the_process_recording_the_job_leaves_it_alone(
    world: World,
) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(1000, 2.0), Take(2000, 3.0)], pause_after_open=1)
    task = asyncio.create_task(world.run())
    await world.media.paused.wait()
    with pytest.raises(NotMine):
        await world.run(attempt=2)  # its heartbeats were lost: JetStream sent it again
    world.media.resume.set()
    await task
    doc = await world.job()
    assert (doc.state, doc.attempt) == ("SUCCESS", 1)
    assert len(world.finished()) == 1


async def test_a_file_left_raw_by_a_failed_remux_is_remuxed_on_the_next_try(world: World) -> None:
    # The disk filled: the open segment's remux failed, the job went back to RETRY.
    world.tiktok.live(ROOM)
    raw = SegmentEntry(path=f"{ROOM}/{JOB}_0.flv", part=0, size=900, state="raw")
    world.media = FakeMedia(
        [Take(900, 2.0, remuxed=False)], ending="error", error_code=ErrorCode.DISK_FULL
    )
    with pytest.raises(RetryLater):
        await world.run()
    assert [(s.path, s.state) for s in (await world.job()).segments] == [(raw.path, "raw")]
    # Space is back: the next try remuxes it before it records on.
    final = SegmentEntry(path=f"{ROOM}/{JOB}_0.mp4", part=0, size=800, state="final")
    world.media = FakeMedia([Take(2000, 3.0)])
    world.media.takeovers[raw.path] = final
    await world.run(attempt=2)
    doc = await world.job()
    assert [(s.path, s.state) for s in doc.segments] == [
        (final.path, "final"),
        (f"{ROOM}/{JOB}_1.mp4", "final"),
    ]


class HangingPublisher(CountingPublisher):
    """Its first recording.finished never gets an answer, and the first cancellation of that
    wait is swallowed: the race a NATS request can lose (issue 15, finding 13)."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging = asyncio.Event()
        self.swallowed = 0

    async def publish(self, event: Event) -> object:
        if isinstance(event, RecordingFinished) and not self.swallowed:
            self.hanging.set()
            forever = asyncio.Event()
            try:
                await forever.wait()
            except asyncio.CancelledError:
                self.swallowed += 1  # lost, as inside the request: go on waiting
            await forever.wait()
        return await super().publish(event)


async def test_a_job_stuck_after_its_session_ended_is_cancelled_and_redelivered(
    world: World,
) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(1000, 2.0)])
    world.publisher = HangingPublisher()
    world.endings = Endings(clock=world.clock)
    handler = asyncio.create_task(world.run())
    await world.publisher.hanging.wait()
    assert world.endings.check() == []  # within the deadline: left alone

    world.clock.now += ENDING_DEADLINE
    assert world.endings.check() == [JOB]  # its first cancellation is swallowed
    await eventually(lambda: _swallowed(world.publisher), timeout=5)
    assert not handler.done()
    assert world.endings.check() == [JOB]  # so the watchdog cancels again
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(handler, 5)  # the consumer hands the message back
    assert world.endings.check() == []
    assert world.leases.held == {}  # released on the way out

    await world.run(attempt=2)  # the redelivery announces what was written
    assert (await world.job()).state == "SUCCESS"
    [finished] = world.finished()
    assert listed(finished) == [(f"{ROOM}/{JOB}_0.mp4", 0)]


async def _swallowed(publisher: CountingPublisher) -> bool:
    assert isinstance(publisher, HangingPublisher)
    return publisher.swallowed == 1


# --- a burst of jobs ---------------------------------------------------------------------------


class GatedTikTok(FakeTikTokClient):
    """``confirm_live`` waits for ``gate``; ``inside`` and ``most`` count who is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.inside = 0
        self.most = 0

    async def confirm_live(self, room_id: str, unique_id: str | None = None) -> RoomInfo:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.gate.wait()
        finally:
            self.inside -= 1
        return await super().confirm_live(room_id, unique_id)


async def test_a_burst_of_jobs_starts_a_few_at_a_time_and_the_rest_wait_without_a_lease(
    world: World,
) -> None:
    world.startups = StartUps(limit=2)
    world.pool.fake = gated = GatedTikTok()
    world.media = FakeMedia([Take()], pause_after_open=0)  # sessions run until resumed
    rooms = [f"{ROOM[:-1]}{i}" for i in range(5)]
    for room in rooms:
        gated.live(room)
    jobs = [
        asyncio.create_task(world.run(requested(job_id=f"job{i}", room_id=room)))
        for i, room in enumerate(rooms)
    ]

    async def two_confirming() -> bool:
        return gated.inside == 2

    await eventually(two_confirming)
    for _ in range(20):  # whatever else could run, runs
        await asyncio.sleep(0)
    assert (world.startups.running, world.startups.waiting) == (2, 3)
    assert len(world.leases.held) == 2  # the waiting jobs hold no lease
    assert not world.active

    gated.gate.set()

    async def all_recording() -> bool:
        return len(world.active) == 5

    # A slot is given back when its session starts, not when the job ends: all five record.
    await eventually(all_recording)
    assert (world.startups.running, world.startups.waiting) == (0, 0)
    assert gated.most == 2
    world.media.resume.set()
    await asyncio.gather(*jobs)
    for i in range(5):
        doc = await world.store.recording(f"job{i}")
        assert doc is not None
        assert doc.state == "SUCCESS"
    assert world.leases.held == {}


async def test_a_start_up_that_fails_gives_its_slot_back(world: World) -> None:
    world.startups = StartUps(limit=1)
    world.tiktok.fail("confirm_live", WafBlocked(endpoint="room", reason="empty body"), times=1)
    world.tiktok.live(ROOM)
    with pytest.raises(RetryLater):
        await world.run()
    assert (world.startups.running, world.startups.waiting) == (0, 0)
    await world.run(attempt=2)  # the one slot is free again
    assert (await world.job()).state == "SUCCESS"


# --- egress (issue 17) -------------------------------------------------------------------------

CDN = "https://pull-flv-l1-va01.tiktokcdn.com/game/stream-1"


def streams(world: World, **urls: str) -> None:
    """The live room lists these stream URLs, by quality (best first)."""
    info = world.tiktok.live(ROOM)
    variants = {q: StreamVariant(q, url) for q, url in urls.items()}
    world.tiktok.rooms[ROOM] = dataclasses.replace(info, streams=variants)


async def test_stream_urls_off_the_allow_list_are_skipped_never_handed_to_the_session(
    world: World,
) -> None:
    streams(
        world,
        origin="http://127.0.0.1:6379/game/stream-1.flv",
        uhd="https://evil-tiktokcdn.com/game/stream-1_uhd5.flv",
        hd=f"{CDN}_hd5.flv",
    )
    await world.run()
    [found] = world.media.lookups
    assert [c.url for c in found.candidates] == [f"{CDN}_hd5.flv"]
    assert (await world.job()).state == "SUCCESS"


async def test_no_stream_url_on_the_allow_list_fails_the_job_with_its_own_code(
    world: World,
) -> None:
    streams(world, origin="http://169.254.169.254/latest/meta-data/", hd="http://10.0.0.8/x.flv")
    await world.run()
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.STREAM_HOST_NOT_ALLOWED)
    assert doc.error_message is not None
    assert "169.254" not in doc.error_message
    assert "10.0.0.8" not in doc.error_message
    assert world.media.lookups == []
    assert [e.error_code for e in world.finished()] == [ErrorCode.STREAM_HOST_NOT_ALLOWED]


class RefusingMedia(FakeMedia):
    """Every URL of the first lookup is refused when fetched (what the StreamGuard does to a
    redirect to a private address), then the session looks the stream up again."""

    async def record(self, plan: SessionPlan) -> SessionResult:
        found = await plan.lookup()
        refusals = SESSION_REFUSALS.get()
        assert refusals is not None  # the recorder counts this session's refusals
        refusals.count += len(found.candidates)
        return await super().record(plan)


async def test_every_stream_url_refused_when_fetched_fails_the_job(world: World) -> None:
    streams(world, origin=f"{CDN}.flv", hd=f"{CDN}_hd5.flv")
    world.media = RefusingMedia()
    await world.run()
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.STREAM_HOST_NOT_ALLOWED)
    assert SESSION_REFUSALS.get() is None  # set for the session only


async def test_a_session_failing_internally_shows_no_exception_text(world: World) -> None:
    world.tiktok.live(ROOM)
    banner = "RemoteProtocolError('SSH-2.0-OpenSSH_9.6 billing-db')"
    world.media = FakeMedia([], ending="error", error_code=ErrorCode.INTERNAL, error=banner)
    await world.run()
    doc = await world.job()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.INTERNAL)
    assert doc.error_message is not None
    assert "OpenSSH" not in doc.error_message


async def test_a_bug_shows_its_type_not_its_text(world: World) -> None:
    world.tiktok.fail("confirm_live", ValueError("invalid literal for int(): 'SSH-2.0-OpenSSH'"))
    with pytest.raises(ValueError, match="invalid literal"):
        await world.run()
    doc = await world.job()
    assert doc.error_message == "internal error (ValueError); the recorder's log has the details"
