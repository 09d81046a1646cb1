"""The Keeper steps down when its lease is refused or cannot be renewed for LEASE_DOUBT."""

from __future__ import annotations

import asyncio

from shared.lease import LEASE_DOUBT, Keeper
from tests.fakes.clock import ManualClock


class Lease:
    """A lease whose renewals answer as told: True, False, or raise (NATS away)."""

    name = "room.1"
    token = 7

    def __init__(self) -> None:
        self.answer: bool | Exception = True
        self.renewals: asyncio.Queue[None] = asyncio.Queue()

    async def renew(self) -> bool:
        self.renewals.put_nowait(None)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def reclaim(self) -> bool:
        return False  # refused means refused, unless a test says otherwise

    async def release(self) -> None:
        return None


async def test_a_refused_renewal_loses_the_lease() -> None:
    lease = Lease()
    async with Keeper(lease, every=0.001) as keeper:
        await asyncio.wait_for(_renewed(lease, 3), 5)
        assert keeper.fresh()
        lease.answer = False
        await asyncio.wait_for(keeper.lost.wait(), 5)
        assert not keeper.fresh()


async def test_renewals_failing_for_lease_doubt_step_down_but_a_blip_does_not() -> None:
    lease, clock = Lease(), ManualClock()
    async with Keeper(lease, clock=clock, every=0.001) as keeper:
        lease.answer = ConnectionError("nats away")
        await asyncio.wait_for(_renewed(lease, 5), 5)
        assert not keeper.lost.is_set()  # a blip: the TTL leaves room for the next try
        clock.now += LEASE_DOUBT
        await asyncio.wait_for(keeper.lost.wait(), 5)


async def test_a_process_frozen_past_lease_doubt_is_not_fresh_before_it_renews() -> None:
    lease, clock = Lease(), ManualClock()
    keeper = Keeper(lease, clock=clock)  # not started: nothing renews
    assert keeper.fresh()
    clock.now += LEASE_DOUBT + 0.1  # woken from a freeze
    assert not keeper.fresh()


async def test_a_late_renewal_that_succeeds_keeps_the_lease() -> None:
    lease, clock = Lease(), ManualClock()
    renewed = asyncio.Event()

    async def on_renewed() -> None:
        renewed.set()

    async with Keeper(lease, clock=clock, every=0.001, on_renewed=on_renewed) as keeper:
        clock.now += LEASE_DOUBT + 1  # late, but the server took it: no one held it meanwhile
        await asyncio.wait_for(renewed.wait(), 5)
        assert keeper.fresh()
        assert not keeper.lost.is_set()


async def _renewed(lease: Lease, times: int) -> None:
    for _ in range(times):
        await lease.renewals.get()


class Stubborn(Lease):
    """A renewal that swallows its cancellation (as a NATS request racing a reply can)."""

    async def renew(self) -> bool:
        self.renewals.put_nowait(None)
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # swallowed: the reply "arrived"
        return True


async def test_a_keeper_stops_even_when_a_renewal_swallows_its_cancel() -> None:
    lease = Stubborn()
    keeper = Keeper(lease, every=0.001)

    async def hold() -> None:
        async with keeper:
            await _renewed(lease, 2)

    await asyncio.wait_for(hold(), 5)  # leaving the block does not hang
    assert keeper.stopped  # and nothing renews any more


class Leases:
    """Where a lapsed lease may be taken again: free (a new token) or held by someone."""

    def __init__(self) -> None:
        self.free = True
        self.taken: list[Lease] = []

    async def retake(self) -> Lease | None:
        if not self.free:
            return None
        new = Lease()
        new.token = 8
        self.taken.append(new)
        return new


async def test_a_lapsed_lease_no_one_took_is_taken_again_with_a_new_token() -> None:
    lease, leases = Lease(), Leases()
    heard: asyncio.Queue[int] = asyncio.Queue()

    async def on_retaken(new: object) -> None:
        heard.put_nowait(getattr(new, "token", -1))

    lease.answer = False  # lapsed while NATS was away: the renewal is refused
    keeper = Keeper(lease, every=0.001, retake=leases.retake, on_retaken=on_retaken)
    async with keeper:
        assert await asyncio.wait_for(heard.get(), 5) == 8
        assert keeper.lease.token == 8
        assert keeper.fresh()
        assert not keeper.lost.is_set()


async def test_a_lapsed_lease_someone_else_took_is_lost() -> None:
    lease, leases = Lease(), Leases()
    leases.free = False
    lease.answer = False
    async with Keeper(lease, every=0.001, retake=leases.retake) as keeper:
        await asyncio.wait_for(keeper.lost.wait(), 5)
    assert leases.taken == []


async def test_a_recording_keeper_rides_out_an_outage_longer_than_lease_doubt() -> None:
    lease, clock = Lease(), ManualClock()
    async with Keeper(lease, clock=clock, every=0.001, doubt_steps_down=False) as keeper:
        lease.answer = ConnectionError("election")
        clock.now += LEASE_DOUBT * 3
        await asyncio.wait_for(_renewed(lease, 5), 5)
        assert not keeper.lost.is_set()
        assert not keeper.fresh()  # but opens no new file meanwhile
        lease.answer = True
        await asyncio.wait_for(_renewed(lease, 2), 5)
    assert not keeper.lost.is_set()
