"""A leader (scheduler, indexer) cut off from NATS pauses, and resumes without a hand-over when
its lease outlived the cut; a standby takes over only once the lease has lapsed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from shared import lease as leases
from shared.bus import Bus
from shared.subjects import LEASE_CALL_TIMEOUT
from tests.chaos.fault_proxy import FaultProxy
from tests.helpers import eventually
from tlr.nats_server import NatsServer

NAME = "leader.test"


@dataclass
class Role:
    """What a contender's ``act`` did: how often it started and stopped, and in what order."""

    name: str
    log: list[str]
    starts: int = 0
    stops: int = 0
    changes: list[bool] = field(default_factory=list)

    async def act(self, lost: asyncio.Event) -> None:
        self.starts += 1
        self.log.append(f"{self.name} start")
        await lost.wait()
        self.stops += 1
        self.log.append(f"{self.name} stop")

    @property
    def acting(self) -> bool:
        return self.starts > self.stops

    async def is_acting(self) -> bool:
        return self.acting

    async def is_idle(self) -> bool:
        return not self.acting


@contextlib.asynccontextmanager
async def contending(kv: KeyValue, role: Role) -> AsyncIterator[None]:
    stop = asyncio.Event()
    holder = leases.Holder(owner=role.name, purpose="test")
    task = asyncio.create_task(leases.lead(kv, NAME, holder, stop, role.act, role.changes.append))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def proxy(nats_server: NatsServer) -> AsyncIterator[FaultProxy]:
    started = await FaultProxy([(nats_server.host, nats_server.port)]).start()
    yield started
    await started.close()


async def buckets(bus: Bus, proxy: FaultProxy, ttl: float) -> tuple[KeyValue, KeyValue]:
    """The lease bucket as the leader sees it (through the proxy) and as the standby does."""
    direct = await bus.js.create_key_value(KeyValueConfig(bucket="leadtest", ttl=ttl, history=1))
    cut = await Bus.connect(proxy.urls, service="leader")
    assert cut is not None
    through = await cut.nc.jetstream(timeout=LEASE_CALL_TIMEOUT).key_value("leadtest")
    return through, direct


@pytest.mark.timeout(120)
async def test_a_leader_cut_off_for_less_than_its_lease_pauses_and_resumes(
    bus: Bus, proxy: FaultProxy
) -> None:
    log: list[str] = []
    leader, standby = Role("leader", log), Role("standby", log)
    through, direct = await buckets(bus, proxy, ttl=30)  # outlives the cut
    async with contending(through, leader):
        await eventually(leader.is_acting, timeout=10)
        async with contending(direct, standby):
            proxy.set_mode("blackhole")
            # In doubt after LEASE_DOUBT s: it stops acting, so a standby could safely come in.
            await eventually(leader.is_idle, timeout=15)
            proxy.set_mode("pass")
            await eventually(leader.is_acting, timeout=15)
            assert standby.starts == 0
            assert leader.starts == 2, log
            holder = await leases.current_holder(direct, NAME)
            assert holder is not None
            assert holder.owner == "leader"


@pytest.mark.timeout(120)
async def test_a_standby_takes_over_only_after_the_leader_stopped_and_the_leader_stays_down(
    bus: Bus, proxy: FaultProxy
) -> None:
    log: list[str] = []
    leader, standby = Role("leader", log), Role("standby", log)
    through, direct = await buckets(bus, proxy, ttl=8)  # the production TTL
    async with contending(through, leader):
        await eventually(leader.is_acting, timeout=10)
        async with contending(direct, standby):
            proxy.set_mode("blackhole")
            await eventually(standby.is_acting, timeout=30)
            assert log == ["leader start", "leader stop", "standby start"]
            proxy.set_mode("pass")
            # The leader's next renewal is refused and the lease is not free: it stays down
            # while the standby renews (two renewals land after the heal).
            entry = await direct.get(NAME)
            assert entry is not None

            async def renewed_twice() -> bool:
                return await _revision_past(direct, (entry.revision or 0) + 1)

            await eventually(renewed_twice, timeout=15, interval=0.5)
            assert not leader.acting
            assert log == ["leader start", "leader stop", "standby start"]


async def _revision_past(kv: KeyValue, revision: int | None) -> bool:
    assert revision is not None
    entry = await kv.get(NAME)
    return entry.revision is not None and entry.revision > revision


async def test_a_renewal_that_landed_with_its_answer_lost_keeps_the_lease(bus: Bus) -> None:
    """A frozen server runs the renewals queued in the socket when it wakes: the first lands,
    unanswered in time, and the next is refused. The lease is still ours, same token."""
    kv = await bus.claims()
    lease = await leases.acquire(kv, "room.1", leases.Holder("rec-a", "job-1"))
    assert lease is not None
    renewals = 0

    async def count() -> None:
        nonlocal renewals
        renewals += 1

    keeper = leases.Keeper(lease, every=0.05, on_renewed=count)
    async with keeper:
        await eventually(lambda: _at_least(renewals, 1), timeout=5)
        # Our own renewal, landed behind the keeper's back: its revision is now behind.
        await kv.update("room.1", msgspec.json.encode(lease.holder), last=lease.revision)
        seen = renewals
        await eventually(lambda: _at_least(renewals, seen + 2), timeout=5)
        assert not keeper.lost.is_set()
        assert keeper.lease is lease  # not taken again: the same holding, the same token
    await lease.release()
    assert await leases.current_holder(kv, "room.1") is None  # its CAS knew the revision


async def test_a_refused_renewal_when_someone_else_holds_it_is_lost(bus: Bus) -> None:
    kv = await bus.claims()
    lease = await leases.acquire(kv, "room.2", leases.Holder("rec-a", "job-1"))
    assert lease is not None
    async with leases.Keeper(lease, every=0.05) as keeper:
        await kv.put("room.2", msgspec.json.encode(leases.Holder("rec-b", "job-1")))
        await asyncio.wait_for(keeper.lost.wait(), 5)
    holder = await leases.current_holder(kv, "room.2")
    assert holder == leases.Holder("rec-b", "job-1")


async def _at_least(value: int, wanted: int) -> bool:
    return value >= wanted
