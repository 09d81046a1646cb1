"""What a recorder decides for one unit of recording work (room.live or recording.requested).

Plain async functions over a frozen deps object of small Protocols: no NATS here. The flow:
a start-up slot (``startup.py``, MAX_STARTUPS at once) -> finished or cancelled already? ->
its route (own proxy, a pool egress, or direct: ``egress_route.py``) -> resolve the room ->
take its lease -> take over what a dead holder left -> confirm it is live -> claim the job
(fenced by the lease's token) -> record (``recording.py``; the slot is given back once the
session runs) -> write the outcome and publish recording.finished.
"""

from __future__ import annotations

import asyncio
import contextlib

from services.recorder.deps import RecorderDeps, Work
from services.recorder.egress_route import Route, choose_route, report_failure
from services.recorder.outcome import fail_or_retry, failed_unexpectedly, finish
from services.recorder.recording import record
from services.recorder.startup import Slot
from shared.bus import TRANSIENT
from shared.consumer import Delivery
from shared.errors import ErrorCode, HandlerError, NotMine, RetryLater
from shared.events import RoomLive
from shared.job_store import JobFinished, StaleHolder
from shared.jobs import TERMINAL, Outcome
from shared.lease import Holder
from shared.logging import get_logger
from shared.secrets import SecretError
from shared.subjects import LEASE_RENEW, LEASE_RETRY
from shared.tiktok import CookiesError, LiveOffline, TikTokError
from shared.tiktok.client import TikTokClient

log = get_logger(__name__)

# A holder back from a NATS outage retries its lease every LEASE_RETRY s: two tries.
FIRST_REFUSAL = 2 * LEASE_RETRY


async def on_recording_work(event: Work, delivery: Delivery, deps: RecorderDeps) -> None:
    """Record the job; returning acks it, RetryLater hands it to whichever recorder is free,
    NotMine leaves it to the newer holder that took it over."""
    try:
        await _work(event, delivery, deps)
    except (HandlerError, asyncio.CancelledError, *TRANSIENT):
        raise  # steered acks, shutdown, NATS away: not a failure of the job
    except Exception as exc:
        await failed_unexpectedly(deps, event, exc)
    finally:
        deps.endings.settled(event.job_id)


async def _work(event: Work, delivery: Delivery, deps: RecorderDeps) -> None:
    job_id = event.job_id
    if job_id in deps.active:
        # Delivered again (its heartbeats were lost while NATS was away) to the process that
        # records it: the recording goes on; a second one here would only fight it.
        msg = f"job {job_id} is being recorded by this process"
        raise NotMine(msg)
    # A burst of jobs ramps: no KV read, lookup or lease before this process has a slot.
    async with deps.startups.slot() as slot:
        await _start(event, delivery, deps, slot)


async def _start(event: Work, delivery: Delivery, deps: RecorderDeps, slot: Slot) -> None:
    job_id = event.job_id
    if job_id in deps.active:  # another delivery of it started while this one waited
        msg = f"job {job_id} is being recorded by this process"
        raise NotMine(msg)
    done = await deps.store.recording(job_id)
    if done is not None and done.state in TERMINAL:
        # A redelivery: recording.finished again (same id, JetStream drops a duplicate), in
        # case the first publish was lost after the job was written finished.
        log.info("recorder.already_finished", job_id=job_id, state=done.state)
        await finish(deps, event, Outcome(done.state, done.error_code, done.error_message))
        return
    request = await deps.store.request(job_id)
    if request is None:
        # Withdrawn: the gateway could not publish it and told its client so (a 503).
        log.warning("recorder.job_withdrawn", job_id=job_id)
        return
    if request.desired == "cancel":
        await finish(deps, event, Outcome("CANCELLED", ErrorCode.CANCELLED, "cancelled"))
        return
    if done is not None and done.state == "STARTED" and done.recorder_id != deps.recorder_id:
        _first_refusal(deps, job_id, done.recorder_id)
    route = await choose_route(deps, event)
    with contextlib.ExitStack() as held:  # the client stays open while the job uses it
        try:
            client, route = _open_client(deps, held, route, job_id)
        except (CookiesError, SecretError, ValueError) as exc:
            # The job's own options cannot work here (cookie file, proxy): retrying won't help.
            await finish(deps, event, Outcome("FAILURE", ErrorCode.VALIDATION_ERROR, str(exc)))
            return
        await _with_client(event, delivery, deps, client, route, slot)


def _open_client(
    deps: RecorderDeps, held: contextlib.ExitStack, route: Route, job_id: str
) -> tuple[TikTokClient, Route]:
    """The job's client, held open. A pool egress's proxy this process cannot use (another
    SECRET_KEY, a private address) is the recorder's configuration, not the job's fault: the
    job goes direct, like a failed pick. Raises what the job's own options raise."""
    if route.egress is not None:
        try:
            return held.enter_context(deps.tiktok.holding(route.options)), route
        except CookiesError:
            raise  # the job's cookies: the same without the egress
        except (SecretError, ValueError) as exc:
            log.error(
                "recorder.egress_unusable",
                job_id=job_id,
                egress=route.egress,
                error=str(exc),
                fallback="direct",
            )
            route = route.direct()
    return held.enter_context(deps.tiktok.holding(route.options)), route


async def _with_client(
    event: Work,
    delivery: Delivery,
    deps: RecorderDeps,
    client: TikTokClient,
    route: Route,
    slot: Slot,
) -> None:
    job_id = event.job_id
    unique_id = event.unique_id if isinstance(event, RoomLive) else None
    try:
        room_id = event.room_id
        if not room_id:
            ref = await client.resolve(event.url or "")
            room_id, unique_id = ref.room_id, ref.unique_id or unique_id
        if not room_id:
            raise LiveOffline(target=event.url or "")
    except TikTokError as exc:
        await report_failure(deps, route, event, exc)
        await fail_or_retry(deps, event, exc)
        return
    await _wait_for_room(deps, job_id, room_id)
    lease = await deps.leases.acquire(f"room.{room_id}", Holder(deps.recorder_id, job_id))
    if lease is None:
        holder = await deps.leases.holder(f"room.{room_id}")
        # Our own job's lease, left by a recorder that died: it lapses within the TTL.
        mine = holder is not None and holder.purpose == job_id
        msg = f"room {room_id} is leased by {holder.owner if holder else '?'}"
        raise RetryLater(msg, delay=1.0 if mine else LEASE_RENEW)
    try:
        await record(deps, event, delivery, client, route, room_id, unique_id, lease, slot)
    except StaleHolder as exc:
        # Frozen past the lease: a newer holder has the job (and its message). Hands off.
        log.warning("recorder.stale_holder", job_id=job_id, error=str(exc))
        raise NotMine(str(exc)) from exc
    except JobFinished as exc:
        log.info("recorder.finished_elsewhere", job_id=job_id, error=str(exc))
    finally:
        await lease.release()


def _first_refusal(deps: RecorderDeps, job_id: str, holder: str) -> None:
    """Another recorder was recording this job and never said it stopped: dead, frozen, or
    cut off by a NATS outage that just ended, its messages redelivered everywhere at once.
    Give it FIRST_REFUSAL s to take its lease again (no hand-over, nothing lost) before this
    process tries; a dead holder costs that much more of the live."""
    now = deps.clock()
    since = deps.deferred.get(job_id)
    if since is None or now - since > FIRST_REFUSAL * 10:  # new, or left from long ago
        for old in [j for j, t in deps.deferred.items() if now - t > FIRST_REFUSAL * 10]:
            del deps.deferred[old]
        deps.deferred[job_id] = now
        msg = f"job {job_id} was being recorded by {holder}: its lease is its own first"
        raise RetryLater(msg, delay=FIRST_REFUSAL)
    if now - since < FIRST_REFUSAL:
        msg = f"job {job_id}: {holder} may still take its lease again"
        raise RetryLater(msg, delay=FIRST_REFUSAL - (now - since))
    del deps.deferred[job_id]


async def _wait_for_room(deps: RecorderDeps, job_id: str, room_id: str) -> None:
    """The job already recording this room keeps it, even while it changes recorder."""
    owner = await deps.store.room_owner(room_id)
    if owner is None or owner == job_id:
        return
    other = await deps.store.recording(owner)
    if other is not None and other.state not in TERMINAL:
        msg = f"room {room_id} is recorded by job {owner}"
        raise RetryLater(msg, delay=LEASE_RENEW)
