"""What recorders report of the pool's egresses (``egress.failed``): counted like the poller's
own answers, so two WAF pages running block an egress and move its watchers."""

from __future__ import annotations

from datetime import timedelta

from services.scheduler.egress_commands import REPORT_STALE, on_egress_failed
from services.scheduler.egress_pool import EgressPool
from shared.events import EgressFailed, utc_now

ROOM = (1 / 50) / 60  # a room id at poll 60 s: a share of a check_alive batch


def pool_of(*names: str) -> EgressPool:
    pool = EgressPool(120.0)
    for name in names:
        pool.put(name, f"sealed:v1:{name}", None, "file")
    pool.rebalance({f"r{i}": ROOM for i in range(10)})
    return pool


def waf(name: str, *, age: float = 0.0) -> EgressFailed:
    at = utc_now() - timedelta(seconds=age)
    return EgressFailed(name=name, error_code="WAF_BLOCKED", job_id="j1", occurred_at=at)


def test_two_waf_reports_running_block_the_egress_and_move_its_watchers() -> None:
    pool = pool_of("a", "b")
    assert pool.egresses["a"].watchers > 0
    on_egress_failed(waf("a"), pool, utc_now())
    assert pool.egresses["a"].state == "healthy"  # one WAF page is no verdict
    assert pool.egresses["a"].waf_answers == 1
    on_egress_failed(waf("a"), pool, utc_now())
    a, b = pool.egresses["a"], pool.egresses["b"]
    assert (a.state, a.reason, a.watchers) == ("blocked", "WAF_BLOCKED", 0)
    assert b.watchers == 10
    assert pool.pick(None) is b  # the next recording goes elsewhere


def test_a_poll_answered_in_between_keeps_the_egress() -> None:
    pool = pool_of("a", "b")
    on_egress_failed(waf("a"), pool, utc_now())
    pool.answered("a")  # the poller got through meanwhile
    on_egress_failed(waf("a"), pool, utc_now())
    assert pool.egresses["a"].state == "healthy"
    assert pool.egresses["a"].waf_answers == 2


def test_stale_reports_unknown_codes_and_unknown_egresses_change_nothing() -> None:
    pool = pool_of("a", "b")
    for _ in range(3):
        on_egress_failed(waf("a", age=REPORT_STALE + 1), pool, utc_now())
        on_egress_failed(EgressFailed(name="a", error_code="SOMETHING_NEWER"), pool, utc_now())
        on_egress_failed(waf("gone"), pool, utc_now())
    assert pool.egresses["a"].state == "healthy"
    assert pool.egresses["a"].waf_answers == 0
