"""Start-ups wait while the recorder's event loop runs late (loop_lag.py, startup.py)."""

from __future__ import annotations

import asyncio
import time

from services.recorder import metrics
from services.recorder.loop_lag import LoopLag
from services.recorder.startup import StartUps
from tests.helpers import eventually


async def _lag_above(lag: LoopLag, limit: float) -> bool:
    return lag.lag > limit


async def _calm(lag: LoopLag, limit: float) -> bool:
    return lag.lag <= limit


async def _waiting(startups: StartUps) -> bool:
    return startups.waiting == 1


def _hold_the_loop() -> None:
    """The loop itself is held, on purpose: a burst of work, or a CPU the process shares."""
    time.sleep(0.5)


async def test_a_start_up_waits_while_the_loop_runs_late_and_goes_once_it_is_on_time() -> None:
    startups = StartUps(4, max_lag=0.2)
    async with startups.slot() as slot:  # on time: at once
        slot.release()
    lag = startups._lag
    assert lag is not None

    _hold_the_loop()
    await eventually(lambda: _lag_above(lag, 0.2), timeout=5, interval=0.01)
    assert metrics.LOOP_LAG._value.get() > 0.2  # what an operator's dashboard sees

    granted_at_lag: list[float] = []

    async def start_up() -> None:
        async with startups.slot() as slot:
            granted_at_lag.append(lag.lag)
            slot.release()

    task = asyncio.create_task(start_up())
    await asyncio.wait_for(task, timeout=5)
    assert granted_at_lag
    assert granted_at_lag[0] <= 0.2  # not before the loop was on time again
    assert (startups.running, startups.waiting) == (0, 0)
    startups.close()


async def test_a_start_up_cancelled_while_it_waits_for_the_loop_gives_its_slot_back() -> None:
    startups = StartUps(1, max_lag=0.2)
    async with startups.slot() as slot:
        slot.release()
    lag = startups._lag
    assert lag is not None
    _hold_the_loop()
    await eventually(lambda: _lag_above(lag, 0.2), timeout=5, interval=0.01)

    async def start_up() -> None:
        async with startups.slot():
            pass

    task = asyncio.create_task(start_up())
    await eventually(lambda: _waiting(startups), timeout=5, interval=0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await eventually(lambda: _calm(lag, 0.2), timeout=5, interval=0.01)
    async with asyncio.timeout(5), startups.slot() as slot:  # the one slot is free again
        slot.release()
    assert (startups.running, startups.waiting) == (0, 0)
    startups.close()
