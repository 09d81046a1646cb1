"""The budget's permits: concurrent takers are served one after another, in order."""

from __future__ import annotations

import asyncio

from services.scheduler.budget import Budget


async def test_concurrent_takers_get_their_permits_in_the_order_they_asked() -> None:
    budget = Budget(per_minute=60_000)  # 1,000 a second: a permit every millisecond
    served: list[int] = []

    async def take(n: int) -> None:
        await budget.take("direct", "user_room")
        served.append(n)

    await asyncio.gather(*(take(n) for n in range(20)))
    assert served == list(range(20))
    assert budget.waiting == 0
