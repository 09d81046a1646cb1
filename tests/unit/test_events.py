"""Events are declared once: they round-trip, tolerate new fields, and name their subjects."""

from __future__ import annotations

import msgspec
import pytest

from shared import events as ev
from shared.subjects import EVENTS, subject_for

SAMPLES: list[ev.Event] = [
    ev.WatchRequested(task_id="t1", key="@alice", url="https://www.tiktok.com/@alice/live"),
    ev.WatchDeleted(key="@alice"),
    ev.WatchPaused(key="@alice"),
    ev.WatchResumed(key="@alice"),
    ev.WatchUpdated(key="@alice", task_id="t1", poll_interval=30, paused=True),
    ev.EgressAdded(name="eu-1", proxy="sealed:v1:abc", requests_per_min=90.0),
    ev.EgressRemoved(name="eu-1"),
    ev.EgressFailed(name="eu-1", error_code="WAF_BLOCKED", job_id="j2"),
    ev.RecordingRequested(job_id="j1", room_id="7503448765740976902", duration=60),
    ev.RoomLive(job_id="j2", room_id="7503448765740976902", watcher_key="@alice"),
    ev.RecordingStarted(job_id="j2", room_id="7503448765740976902", recorder_id="r1", part=1),
    ev.RecordingFinished(
        job_id="j2",
        files=[ev.RecordedFile(path="a/b.mp4", size=10, duration_s=1.5)],
        error_code=None,
    ),
    ev.UploadDone(
        job_id="j2", files=[ev.UploadedFile(path="a/b.mp4", bucket="b", key="k", size=1)]
    ),
    ev.FileDeleted(path="a/b.mp4", reason="retention"),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type_name())
def test_round_trip(event: ev.Event) -> None:
    assert ev.decode(ev.encode(event)) == event


def test_every_event_type_has_a_sample_and_a_subject_in_the_stream() -> None:
    assert {type(e) for e in SAMPLES} == set(ev.EVENT_TYPES)
    assert sorted(EVENTS.subjects or []) == sorted(subject_for(t) for t in ev.EVENT_TYPES)


def test_wire_form_carries_type_version_ids_and_time() -> None:
    wire = msgspec.json.decode(ev.encode(ev.WatchDeleted(key="k")))
    assert wire["type"] == "watch.deleted"
    assert wire["v"] == ev.SCHEMA_VERSION
    assert wire["event_id"]
    assert wire["correlation_id"]
    assert wire["occurred_at"].endswith("Z")


def test_a_newer_producer_with_extra_fields_still_decodes() -> None:
    wire = msgspec.json.decode(ev.encode(ev.RoomLive(job_id="j", room_id="1", watcher_key="w")))
    wire["v"] = 2
    wire["added_in_v2"] = {"anything": [1, 2]}
    decoded = ev.decode(msgspec.json.encode(wire))
    assert isinstance(decoded, ev.RoomLive)
    assert decoded.job_id == "j"
    assert decoded.v == 2


def test_an_older_producer_without_new_optional_fields_still_decodes() -> None:
    wire = {"type": "recording.finished", "job_id": "j"}
    decoded = ev.decode(msgspec.json.encode(wire))
    assert isinstance(decoded, ev.RecordingFinished)
    assert decoded.files == []
    assert decoded.event_id  # filled by its default


@pytest.mark.parametrize(
    "data",
    [
        b'{"type": "no.such.event"}',
        b'{"type": "room.live"}',  # required fields missing
        b'{"type": "watch.deleted", "key": 5}',  # wrong type
        b"not json",
    ],
)
def test_bad_messages_are_rejected(data: bytes) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        ev.decode(data)


def test_producer_can_choose_a_deterministic_event_id_for_dedupe() -> None:
    a = ev.RoomLive(event_id="live:1:s1", job_id="j", room_id="1", watcher_key="w")
    assert a.event_id == "live:1:s1"
