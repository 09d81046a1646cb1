"""Subjects, streams, durable consumers and KV buckets, each declared once.

Every event's subject is its msgspec tag (``watch.requested``, ``room.live``, ...), so subjects
are never typed by hand. The services provision these definitions at start, idempotently, and
``tlr nats-defs`` writes the same definitions to ``nats/`` for the ``nats`` CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shared.events import (
    EVENT_TYPES,
    EgressAdded,
    EgressFailed,
    EgressRemoved,
    Event,
    FileDeleted,
    RecordingFinished,
    RecordingRequested,
    RecordingStarted,
    RoomLive,
    UploadDone,
    WatchDeleted,
    WatchPaused,
    WatchRequested,
    WatchResumed,
    WatchUpdated,
)

DAY = 86_400


def subject_for(event_type: type[Event]) -> str:
    """The subject an event type is published on: its tag."""
    return event_type.type_name()


# --- streams ------------------------------------------------------------------------------------

EVENTS_STREAM = "EVENTS"

EVENTS = StreamConfig(
    name=EVENTS_STREAM,
    description="Every event of the service; replayable by integrations for max_age",
    subjects=[subject_for(t) for t in EVENT_TYPES],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    max_age=7 * DAY,
    # Must exceed a producer's restart time: a scheduler that crashed between publishing
    # room.live and saving its state republishes the same Nats-Msg-Id and is deduplicated.
    duplicate_window=600,
    discard=DiscardPolicy.OLD,
    num_replicas=1,
)

RATELIMIT_STREAM = "RATELIMIT"
RATELIMIT_SUBJECT_PREFIX = "ratelimit"

RATELIMIT = StreamConfig(
    name=RATELIMIT_STREAM,
    description="Gateway rate-limit counters (Nats-Incr), one subject per API key hash and window",
    subjects=[f"{RATELIMIT_SUBJECT_PREFIX}.>"],
    retention=RetentionPolicy.LIMITS,
    # Counters are worth nothing after a few minutes: losing them in a full NATS restart only
    # gives every key a fresh budget, so they stay off disk.
    storage=StorageType.MEMORY,
    allow_msg_counter=True,
    allow_direct=True,
    # A counter's value is in its newest message; older ones only take memory.
    max_msgs_per_subject=1,
    # Counter streams refuse per-message TTLs, so windows expire by age. A sliding window reads
    # the previous window's counter until the current one ends, so this must cover two periods
    # of the longest limit (1 min today).
    max_age=5 * 60,
    discard=DiscardPolicy.OLD,
    num_replicas=1,
)

NOTIFY_STREAM = "NOTIFY"
NOTIFY_SUBJECT_PREFIX = "notify"

NOTIFY = StreamConfig(
    name=NOTIFY_STREAM,
    description="Notifications to deliver: a copy of an event per subscription, on "
    "notify.<subscription>.<job>; removed once delivered or given up (dead letter)",
    subjects=[f"{NOTIFY_SUBJECT_PREFIX}.>"],
    # A work queue: a delivered notification is gone, so the oldest one left on a subject is
    # the next to deliver for that subscription and job (the notifier keeps their order so).
    retention=RetentionPolicy.WORK_QUEUE,
    storage=StorageType.FILE,
    max_age=7 * DAY,
    # The notifier fans an event out again after a crash; the copies it made already are
    # dropped by their Nats-Msg-Id (<event_id>.<subscription>).
    duplicate_window=600,
    discard=DiscardPolicy.OLD,
    num_replicas=1,
)

STREAMS: tuple[StreamConfig, ...] = (EVENTS, RATELIMIT, NOTIFY)


# --- KV buckets ---------------------------------------------------------------------------------

JOBS_BUCKET = "jobs"
CLAIMS_BUCKET = "claims"

# Every write of a job request document (``job.<id>``): a recorder watches it to hear a
# cancel of a job it records at once (core NATS, no consumer: a missed one is re-read).
JOB_REQUEST_CHANGES = f"$KV.{JOBS_BUCKET}.job.*"
# Every write of a job document (request, recording, upload): rings the indexer's job index
# feed, which then reads the stream itself (a missed one waits for its next poll).
JOB_CHANGES = f"$KV.{JOBS_BUCKET}.job.>"
JOBS = KeyValueConfig(
    bucket=JOBS_BUCKET,
    description="Job status documents; each service writes only its own part",
    history=20,
    direct=True,
    ttl=30 * DAY,
)
CLAIMS = KeyValueConfig(
    bucket=CLAIMS_BUCKET,
    description="Recorder leases on live rooms, renewed by CAS; expire when a recorder dies",
    history=1,
    direct=True,
    # A dead recorder's lease lapses this long after its last renewal (every LEASE_RENEW s);
    # with the recorders' ack_wait it bounds what a crash loses to ~10 s of the live.
    ttl=8,
)
LEASE_RENEW = 3.0
# A lease call (create, renew) that has no answer by then is treated as failed and tried again
# LEASE_RETRY s later: one lost request must not outlast the TTL (JetStream's default is 5 s).
LEASE_CALL_TIMEOUT = 2.0
LEASE_RETRY = 1.0

SUBSCRIPTIONS_BUCKET = "subscriptions"
SUBSCRIPTIONS = KeyValueConfig(
    bucket=SUBSCRIPTIONS_BUCKET,
    description="Notification subscriptions (sub.<id>) and failed attempts (try.<sub>.<seq>); "
    "the notifier is their only writer",
    history=1,
    direct=True,
)

BUCKETS: tuple[KeyValueConfig, ...] = (JOBS, CLAIMS, SUBSCRIPTIONS)


def kv_stream_config(kv: KeyValueConfig) -> StreamConfig:
    """The stream backing a KV bucket, built as nats-py's ``create_key_value`` builds it."""
    duplicate_window = 120.0
    if kv.ttl and kv.ttl < duplicate_window:
        duplicate_window = kv.ttl
    return StreamConfig(
        name=f"KV_{kv.bucket}",
        description=kv.description,
        subjects=[f"$KV.{kv.bucket}.>"],
        allow_direct=kv.direct,
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        duplicate_window=duplicate_window,
        max_age=kv.ttl,
        max_bytes=kv.max_bytes,
        max_consumers=-1,
        max_msg_size=kv.max_value_size,
        max_msgs=-1,
        max_msgs_per_subject=kv.history,
        num_replicas=kv.replicas,
        storage=kv.storage or StorageType.FILE,
    )


# --- durable consumers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Durable:
    """A durable pull consumer: the stream it reads and its server-side config."""

    stream: str
    config: ConsumerConfig

    @property
    def name(self) -> str:
        assert self.config.durable_name is not None
        return self.config.durable_name


def _durable(name: str, *events: type[Event], ack_wait: float, max_ack_pending: int) -> Durable:
    return Durable(
        EVENTS_STREAM,
        ConsumerConfig(
            durable_name=name,
            description=f"{name}: {', '.join(subject_for(e) for e in events)}",
            filter_subjects=[subject_for(e) for e in events],
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            # Never give up on a message: handlers nak with a growing delay and term poison.
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
        ),
    )


SCHEDULER = _durable(
    "scheduler",
    WatchRequested,
    WatchDeleted,
    WatchPaused,
    WatchResumed,
    WatchUpdated,
    EgressAdded,
    EgressRemoved,
    EgressFailed,
    ack_wait=30,
    max_ack_pending=1000,
)
# ONE durable shared by every recorder: room.live from the scheduler and on-demand requests.
RECORDERS = _durable("recorders", RoomLive, RecordingRequested, ack_wait=8, max_ack_pending=10_000)
UPLOADER = _durable("uploader", RecordingFinished, ack_wait=60, max_ack_pending=1000)
INDEXER = _durable(
    "indexer", RecordingFinished, UploadDone, FileDeleted, ack_wait=30, max_ack_pending=1000
)

# The notifier fans each event out to the subscriptions that want it, one at a time (in the
# order of the stream, so a job's notifications are queued in order)...
NOTIFIER = _durable(
    "notifier",
    RoomLive,
    RecordingStarted,
    RecordingFinished,
    UploadDone,
    FileDeleted,
    ack_wait=30,
    max_ack_pending=1,
)
# ... and delivers the copies, retried by redelivery (nak with a growing, jittered delay).
# Never max_deliver: a notification that cannot be delivered is given up by the notifier
# after NOTIFY_MAX_ATTEMPTS failed attempts (a dead letter) and removed, which lets the next
# one of its job go; one the server stopped redelivering would stay first in line forever.
NOTIFIER_DELIVERIES = Durable(
    NOTIFY_STREAM,
    ConsumerConfig(
        durable_name="notifier-deliveries",
        description="notifier-deliveries: notify.>",
        filter_subjects=[f"{NOTIFY_SUBJECT_PREFIX}.>"],
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=60,
        max_deliver=-1,
        max_ack_pending=1000,
    ),
)

DURABLES: tuple[Durable, ...] = (
    SCHEDULER,
    RECORDERS,
    UPLOADER,
    INDEXER,
    NOTIFIER,
    NOTIFIER_DELIVERIES,
)


def with_replicas(config: StreamConfig, replicas: int) -> StreamConfig:
    """The same stream with the deployment's replica count (1 locally, 3 in a cluster)."""
    return replace(config, num_replicas=replicas)
