"""The job index's feed: the KV ``jobs`` stream read in order from where the index stopped.

No consumer: service users may not create one (shared/nats_auth.py), and the position kept
with the rows in SQLite is the one that matters. The feed reads the stream with batched
direct gets (``$JS.API.DIRECT.GET.KV_jobs``, ``next_by_subj``) from the stored sequence on,
every change of a job document in order, and applies each batch with the sequence it reached
in one transaction. A core subscription on the documents' subjects only rings a bell: the
feed reads at once instead of at its next poll (POLL_EVERY), so a new job is listed within
milliseconds. A restart (or a new leader) goes on from the stored sequence; a new or lost
INDEX_DB starts from the stream's first message; a stream that was recreated (its last
sequence behind ours) resets the index. Jobs the bucket's TTL removed are pruned by age.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.indexer import metrics
from services.indexer.jobs_index import Change, Gone, JobIndex, RecordingSeen, RequestSeen
from shared.bus import TRANSIENT
from shared.job_list import to_micros
from shared.jobs import JobRequest, RecordingPart
from shared.logging import get_logger
from shared.subjects import JOB_CHANGES, JOBS, JOBS_BUCKET
from shared.tiktok.targets import parse_target

log = get_logger(__name__)

STREAM = f"KV_{JOBS_BUCKET}"
_PREFIX = f"$KV.{JOBS_BUCKET}."
BATCH = 1000  # changes per direct get (and per transaction)
MAX_BYTES = 8 * 1024 * 1024  # ... and at most this much of them
READ_TIMEOUT = 5.0  # seconds for the next message of a batch
POLL_EVERY = 5.0  # seconds between reads when no bell rang (a lost core message)
PRUNE_EVERY = 3600.0
RETRY_AFTER = 1.0
TTL_US = int((JOBS.ttl or 0) * 1_000_000)
_DELETED = frozenset({"DEL", "PURGE"})

_request = msgspec.json.Decoder(JobRequest)
_recording = msgspec.json.Decoder(RecordingPart)


@dataclass(frozen=True, slots=True)
class Batch:
    """What one direct get returned: the messages, and how many match after the last."""

    messages: list[Msg]
    pending: int


class StreamRecreated(Exception):
    """The stream's last sequence is behind the index's position."""


async def read_after(nc: Client, seq: int, *, batch: int = BATCH) -> Batch:
    """Up to ``batch`` job-document messages of the stream after sequence ``seq``."""
    messages: list[Msg] = []
    end: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def collect(msg: Msg) -> None:
        # A callback, not next_msg(): a timer per message would cost more than the message.
        if (msg.headers or {}).get("Status") is None:
            messages.append(msg)
        elif not end.done():
            end.set_result(msg)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    try:
        request = {"seq": seq + 1, "next_by_subj": JOB_CHANGES, "batch": batch}
        request["max_bytes"] = MAX_BYTES
        await nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox)
        last = await asyncio.wait_for(end, READ_TIMEOUT)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    headers = last.headers or {}
    status = headers.get("Status")
    if status == "204":  # the end of the batch
        return Batch(messages, int(headers.get("Nats-Num-Pending", "0")))
    if status == "404":  # nothing after seq
        return Batch(messages, 0)
    msg = f"direct get on {STREAM}: {status} {headers.get('Description', '')}"
    raise nats.errors.Error(msg)


def change_of(msg: Msg) -> Change | None:
    """What a job-document message changes in the index (None: nothing it lists)."""
    headers = msg.headers or {}
    key = headers.get("Nats-Subject", "").removeprefix(_PREFIX)
    parts = key.split(".")
    if len(parts) not in (2, 3) or parts[0] != "job" or parts[2:] not in ([], ["rec"]):
        return None  # job.<id>.up: the upload says nothing a listing shows
    job_id, recording = parts[1], len(parts) == 3
    seq = int(headers["Nats-Sequence"])
    written = _server_time(headers.get("Nats-Time-Stamp", ""))
    if headers.get("KV-Operation") in _DELETED or not msg.data:
        return Gone(job_id, seq, written, recording=recording)
    try:
        if recording:
            rec = _recording.decode(msg.data)
            return RecordingSeen(
                job_id=job_id,
                seq=seq,
                written_us=written,
                state=rec.state,
                updated_us=to_micros(rec.updated_at),
                room_id=rec.room_id,
                user=rec.unique_id.lower() if rec.unique_id else None,
                title=rec.title,
                error_code=rec.error_code,
            )
        req = _request.decode(msg.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        # Never stop the feed on one bad document: GET /jobs/{id} shows what it can of it.
        log.warning("indexer.job_document_skipped", key=key, seq=seq, error=str(exc))
        return None
    return RequestSeen(
        job_id=job_id,
        seq=seq,
        written_us=written,
        kind=req.kind,
        created_us=to_micros(req.created_at),
        desired=req.desired,
        owner=req.owner,
        url=req.url,
        room_id=req.room_id,
        user=_user_of(req.url),
    )


def _user_of(url: str | None) -> str | None:
    """The host a job was asked by (@user, a profile or live URL), lower case."""
    if not url:
        return None
    try:
        target = parse_target(url)
    except ValueError:
        return None
    return target.value.lower() if target.kind == "user" else None


def _server_time(stamp: str) -> int:
    """Nats-Time-Stamp (RFC 3339, ns) as µs; now when absent or unreadable."""
    head, dot, tail = stamp.rstrip("Z").partition(".")
    try:
        when = datetime.fromisoformat(f"{head}.{tail[:6].ljust(6, '0')}+00:00" if dot else stamp)
        return to_micros(when)
    except ValueError:
        return int(time.time() * 1_000_000)


class JobFeed:
    """Applies the bucket's changes to ``index`` until ``stop`` (run by the leader only)."""

    def __init__(self, nc: Client, index: JobIndex, *, poll_every: float = POLL_EVERY) -> None:
        self.nc = nc
        self.index = index
        self.poll_every = poll_every
        self._bell = asyncio.Event()
        self._pruned_at = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        async def ring(_: Msg) -> None:
            self._bell.set()

        bell = await self.nc.subscribe(JOB_CHANGES, cb=ring)
        try:
            while not stop.is_set():
                self._bell.clear()
                try:
                    await self.catch_up(stop)
                    await self._prune_if_due()
                except (*TRANSIENT, nats.errors.Error) as exc:
                    log.warning("indexer.job_feed_retry", error=repr(exc))
                    await _wait(stop, RETRY_AFTER)
                    continue
                except Exception:
                    log.exception("indexer.job_feed_failed")
                    await _wait(stop, RETRY_AFTER)
                    continue
                await _wait(stop, self.poll_every, self._bell)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await bell.unsubscribe()

    async def catch_up(self, stop: asyncio.Event | None = None) -> int:
        """Apply every change after the stored position (until ``stop``: a lost lease ends a
        long catch-up between two batches); the number applied. The next batch is read while
        one is applied."""
        seq = await self.index.position()
        applied = 0
        reading = asyncio.ensure_future(read_after(self.nc, seq))
        try:
            while True:
                batch = await reading
                if not batch.messages:
                    if await self._recreated(seq):
                        await self.index.reset()
                        seq = 0
                        reading = asyncio.ensure_future(read_after(self.nc, seq))
                        continue
                    metrics.JOBS_INDEX_PENDING.set(0)
                    return applied
                seq = int((batch.messages[-1].headers or {})["Nats-Sequence"])
                if batch.pending:
                    reading = asyncio.ensure_future(read_after(self.nc, seq))
                changes = [c for c in map(change_of, batch.messages) if c is not None]
                await self.index.apply(changes, seq, batch.pending)
                applied += len(changes)
                metrics.JOBS_INDEX_APPLIED.inc(len(changes))
                metrics.JOBS_INDEX_PENDING.set(batch.pending)
                if not batch.pending or (stop is not None and stop.is_set()):
                    return applied
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, *TRANSIENT, nats.errors.Error):
                    await reading

    async def _recreated(self, seq: int) -> bool:
        """Nothing after ``seq``: fine, unless the stream ends before it (it was recreated)."""
        if seq == 0:
            return False
        info = await self.nc.jetstream().stream_info(STREAM)
        if info.state.last_seq >= seq:
            return False
        log.warning("indexer.job_index_reset", position=seq, stream_last=info.state.last_seq)
        return True

    async def _prune_if_due(self) -> None:
        now = time.monotonic()
        if not TTL_US or now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        pruned = await self.index.prune(int(time.time() * 1_000_000) - TTL_US)
        if pruned:
            log.info("indexer.job_index_pruned", jobs=pruned)


async def _wait(stop: asyncio.Event, timeout: float, bell: asyncio.Event | None = None) -> None:
    """Until ``stop`` (or ``bell``) is set, at most ``timeout`` seconds."""
    waits = [asyncio.ensure_future(stop.wait())]
    if bell is not None:
        waits.append(asyncio.ensure_future(bell.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
