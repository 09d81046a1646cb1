"""Probing blocked and down egresses once their backoff is over: one request each decides.

The probe asks what failed last (a ``@user``'s resolve on www, or a room's check_alive on
webcast), so an egress blocked on www pages is not declared healthy by an API that still
answered. An answer puts the egress back in use (the balance then gives it watchers); a
failure sidelines it again for twice as long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.scheduler.budget import Budget, BudgetStopped
from services.scheduler.egress_pool import Egress, EgressPool
from shared.errors import ErrorCode
from shared.logging import get_logger
from shared.tiktok import TikTokClient, TikTokError

log = get_logger(__name__)

# What a probe asks when nothing failed through the egress yet (it went down on a command,
# say): check_alive answers for any id, known or not.
DEFAULT_TARGET = "7000000000000000000"


async def probe_egresses(
    pool: EgressPool, budget: Budget, client_of: Callable[[str], TikTokClient] | None
) -> None:
    """Probe every egress whose backoff is over, all at once."""
    if client_of is None:
        return
    due = pool.due_probes()
    if due:
        await asyncio.gather(*(_probe(pool, budget, client_of, eg) for eg in due))


async def _probe(
    pool: EgressPool, budget: Budget, client_of: Callable[[str], TikTokClient], eg: Egress
) -> None:
    target = eg.probe_target or DEFAULT_TARGET
    budget.forgive(eg.name)  # the pool's backoff was the wait; the budget's is not owed
    await budget.take(eg.name, "probe")
    pool.requested(eg.name)
    try:
        client = client_of(eg.name)
        if target.startswith("@"):
            await client.resolve(target)
        else:
            await client.check_alive([target])
    except TikTokError as exc:
        if exc.code in (ErrorCode.USER_NOT_FOUND, ErrorCode.LIVE_OFFLINE):
            pool.answered(eg.name)  # TikTok answered: the egress works
        else:
            pool.failed(eg.name, exc.code)
    except BudgetStopped:
        raise
    except Exception as exc:  # a proxy that cannot be unsealed any more, a bug
        log.warning("scheduler.egress_probe_failed", egress=eg.name, error=type(exc).__name__)
        pool.failed(eg.name, ErrorCode.INTERNAL)
    else:
        pool.answered(eg.name)
    log.info("scheduler.egress_probed", egress=eg.name, state=eg.state)
