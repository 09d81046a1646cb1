"""The example subscriber of docs/events.md, run against a real nats-server."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from shared.bus import Bus
from shared.events import Event, RecordedFile, RecordingFinished, RoomLive
from shared.subjects import EVENTS_STREAM
from tests.helpers import eventually
from tlr.nats_server import NatsServer

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "subscriber.py"
DURABLE = "example-it"


def load_example() -> ModuleType:
    """docs/ is not a package: load the file the way `python docs/examples/subscriber.py` does."""
    spec = importlib.util.spec_from_file_location("subscriber_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def receive(example: ModuleType, url: str, wanted: int) -> list[Event]:
    """Run the example until it has handed ``wanted`` events to its handler (printed too)."""
    received: list[Event] = []
    stop = asyncio.Event()

    async def handle(event: Event) -> None:
        await example.print_event(event)
        received.append(event)
        if len(received) == wanted:
            stop.set()

    await asyncio.wait_for(
        example.run(url, ["recording.finished"], handle, stop, durable=DURABLE, from_start=True),
        timeout=20,
    )
    return received


async def test_example_prints_and_acks_the_events_it_subscribed_to(
    nats_server: NatsServer, bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example()
    finished = RecordingFinished(
        job_id="job-1", room_id="75", files=[RecordedFile(path="75/a.mp4", size=3)]
    )
    await bus.publish(RoomLive(job_id="job-1", room_id="75", watcher_key="@ann"))  # filtered out
    # Not an event at all: the example drops it instead of getting stuck on it.
    await bus.js.publish("recording.finished", b"not json", stream=EVENTS_STREAM)
    await bus.publish(finished)

    assert await receive(example, nats_server.client_url, 1) == [finished]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["type"], p["job_id"], p["event_id"]) for p in printed] == [
        ("recording.finished", "job-1", finished.event_id)
    ]

    async def all_acked() -> bool:
        # The bad message terminated, the event acked: nothing left for the server to redeliver.
        info = await bus.js.consumer_info(EVENTS_STREAM, DURABLE)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(all_acked)

    # A restart of a durable subscriber resumes after what it acked: only the new event.
    later = RecordingFinished(job_id="job-2")
    await bus.publish(later)
    assert await receive(example, nats_server.client_url, 1) == [later]
