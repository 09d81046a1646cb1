"""A process started with fewer NATS_REPLICAS never shrinks a cluster's replicated streams."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from shared.bus import Bus
from shared.subjects import EVENTS_STREAM, STREAMS
from tlr.nats_server import NatsCluster


async def test_provisioning_with_replicas_1_keeps_r3_streams_r3(tmp_path: Path) -> None:
    async with NatsCluster(tmp_path / "cluster") as cluster:
        r3 = await Bus.connect(cluster.client_urls, service="test", replicas=3)
        assert r3 is not None
        await r3.provision()
        # A stream's config changes (as after an upgrade), provisioned by a default process.
        others = [s for s in STREAMS if s.name != EVENTS_STREAM]
        events = next(s for s in STREAMS if s.name == EVENTS_STREAM)
        r1 = await Bus.connect(cluster.client_urls, service="test", replicas=1)
        assert r1 is not None
        try:
            await r1.provision(streams=[replace(events, description="changed"), *others])
            info = await r1.js.stream_info(EVENTS_STREAM)
            assert info.config.num_replicas == 3
            assert info.config.description == "changed"  # the change itself went through
            for name in ("KV_jobs", "KV_claims"):
                assert (await r1.js.stream_info(name)).config.num_replicas == 3
        finally:
            await r1.close()
            await r3.close()
