"""Example integrator: read the recorder's events from JetStream, decode them, ack them.

    python docs/examples/subscriber.py --url nats://127.0.0.1:4222 recording.finished

Each event is printed as one JSON line. With ``--durable NAME`` the consumer lives on the
server: a restart resumes after the last acknowledged event, and nothing published while the
subscriber was down is missed (up to the stream's max age, 7 days). Without it, an ephemeral
consumer reads from now on and is removed a minute after the subscriber goes away.
``--from-start`` replays everything the stream still holds first.

Decoding uses the project's event types (``pip install -e .`` in the repository); a consumer
written in another language decodes the same JSON with the schemas of docs/asyncapi.json.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.events import Event, decode, encode

STREAM = "EVENTS"
ACK_WAIT = 30.0  # seconds a handler may take before the event is delivered again
RETRY_DELAY = 5.0  # seconds before a failed event is delivered again

Handler = Callable[[Event], Awaitable[None]]


async def run(
    url: str,
    subjects: Sequence[str],
    handle: Handler,
    stop: asyncio.Event,
    *,
    durable: str | None = None,
    from_start: bool = False,
    batch: int = 32,
) -> None:
    """Deliver every event on ``subjects`` to ``handle`` until ``stop`` is set.

    An event is acked once ``handle`` returns. When it raises, the event comes back after
    RETRY_DELAY (at-least-once: ``handle`` must be idempotent, e.g. keyed by ``event_id``).
    """
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(
            durable_name=durable,
            filter_subjects=list(subjects),
            deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            # An ephemeral consumer is deleted by the server this long after its last fetch.
            inactive_threshold=None if durable else 60.0,
        )
        info = await js.add_consumer(STREAM, config)
        sub = await js.pull_subscribe_bind(consumer=info.name, stream=STREAM)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except nats.errors.TimeoutError:
                continue  # nothing new; look at ``stop`` again
            for msg in msgs:
                try:
                    event = decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    # It will never decode: redelivering it would only block the others.
                    sys.stderr.write(f"dropping undecodable message on {msg.subject}: {exc}\n")
                    await msg.term()
                    continue
                try:
                    await handle(event)
                except Exception as exc:
                    sys.stderr.write(f"{event.event_id} failed, retried later: {exc!r}\n")
                    await msg.nak(delay=RETRY_DELAY)
                    continue
                await msg.ack()
    finally:
        await nc.drain()


async def print_event(event: Event) -> None:
    """One JSON line per event, exactly as it was published."""
    sys.stdout.write(encode(event).decode() + "\n")
    sys.stdout.flush()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("subjects", nargs="+", help="event subjects, e.g. recording.finished")
    parser.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server URL")
    parser.add_argument("--durable", help="name of a durable consumer (resumes after restarts)")
    parser.add_argument("--from-start", action="store_true", help="replay the stream first")
    args = parser.parse_args(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(
        args.url,
        args.subjects,
        print_event,
        stop,
        durable=args.durable,
        from_start=args.from_start,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
