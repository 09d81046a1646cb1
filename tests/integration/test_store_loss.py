"""A NATS server that lost its store (issue 15, item 9): the services provision it again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from shared.bus import Bus
from shared.consumer import Delivery
from shared.events import Event, FileDeleted
from shared.subjects import EVENTS_STREAM, INDEXER
from tests.helpers import eventually
from tests.integration.test_indexer import finished, indexed, put
from tlr.nats_server import NatsServer

ROOM = "7000000000000000001"
SERVER_CONF = Path(__file__).parents[2] / "nats" / "server.conf"


async def test_a_service_consumes_again_after_the_server_lost_its_store(
    bus: Bus, nats_server: NatsServer, tmp_path: Path
) -> None:
    root = tmp_path / "recordings"
    settings = IndexerSettings(
        nats_url=nats_server.client_url,
        instance_id="indexer-t",
        recordings_dir=root,
        index_db=tmp_path / "index.sqlite3",
        retention_interval=3600,
    )
    before = put(root, f"{ROOM}/before.mp4")
    async with IndexerService(bus, settings):
        await bus.publish(finished(root, "job-before", ROOM, [before]))
        await indexed(bus, 1)

        await nats_server.lose_store()  # same port: every client reconnects to an empty server

        # Nobody but the service provisions here: the stream, buckets and durable come back.
        await eventually(bus.resources_ready, timeout=15)

        async def durable_back() -> bool:
            try:
                await bus.js.consumer_info(EVENTS_STREAM, INDEXER.name)
            except Exception:
                return False
            return True

        await eventually(durable_back, timeout=15)
        after = put(root, f"{ROOM}/after.mp4")  # not there before: only its event indexes it
        await bus.publish(finished(root, "job-after", ROOM, [after]))
        page = await indexed(bus, 2)
        assert {f.path for f in page.items} == {before, after}


async def test_a_consumer_whose_durable_is_gone_provisions_it_again(bus: Bus) -> None:
    await bus.provision(durables=(INDEXER,))
    got: asyncio.Queue[Event] = asyncio.Queue()

    async def handler(event: Event, delivery: Delivery) -> None:  # noqa: ARG001
        await got.put(event)

    stop = asyncio.Event()
    running = asyncio.create_task(bus.consumer(INDEXER, handler).run(stop))
    try:
        await bus.publish(FileDeleted(path="a.mp4", reason="retention"))
        assert isinstance(await asyncio.wait_for(got.get(), 10), FileDeleted)

        # Deleted while the loop pulls (`nats consumer rm`, a store lost without a reconnect).
        await bus.js.delete_consumer(EVENTS_STREAM, INDEXER.name)
        await bus.publish(FileDeleted(path="b.mp4", reason="retention"))

        async def b_handled() -> None:
            # The new durable starts from the stream's first event: a.mp4 comes again first.
            while not isinstance(event := await got.get(), FileDeleted) or event.path != "b.mp4":
                pass

        await asyncio.wait_for(b_handled(), 15)
    finally:
        stop.set()
        await running


async def test_the_single_node_config_fsyncs_every_second(tmp_path: Path) -> None:
    # An R1 node has no replica: the default fsync every 2 min could lose minutes of acked writes.
    server = NatsServer(tmp_path / "nats", config=SERVER_CONF)
    async with server, httpx.AsyncClient(timeout=5) as client:
        varz = (await client.get(f"{server.monitor_url}/varz")).json()
    assert varz["jetstream"]["config"]["sync_interval"] == 1_000_000_000  # ns
