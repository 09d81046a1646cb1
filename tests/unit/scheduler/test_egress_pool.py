"""The egress pool: placement by cost within each budget, stable assignments, blocked and down
egresses emptied at once, probes that bring them back, and the balance evened out."""

from __future__ import annotations

from services.scheduler.egress_pool import BLOCK_AFTER, DOWN_AFTER, PROBE_START, EgressPool
from shared.errors import ErrorCode

USER = (1 / 50 + 1) / 60  # a @user at poll 60 s, batches of 50: a resolve + a share of a batch
ROOM = (1 / 50) / 60


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_of(*names: str, per_min: float = 120.0) -> tuple[EgressPool, Clock]:
    clock = Clock()
    pool = EgressPool(per_min, clock=clock)
    for name in names:
        pool.put(name, None if name == "direct" else f"sealed:v1:{name}", None, "api")
    return pool, clock


def loads(pool: EgressPool) -> dict[str, int]:
    counts = dict.fromkeys(pool.egresses, 0)
    for name in pool.assigned.values():
        counts[name] += 1
    return counts


def test_watchers_spread_by_cost_and_each_egress_stays_within_its_budget() -> None:
    pool, _ = pool_of("a", "b", "c")
    pool.put("big", "sealed:v1:big", 360.0, "api")  # three times the budget of the others
    costs = {f"@u{i}": USER for i in range(120)} | {f"r{i}": ROOM for i in range(600)}
    pool.rebalance(costs)
    assert set(pool.assigned) == set(costs)
    for eg in pool.egresses.values():
        assert eg.load * 60 <= eg.per_min  # requests a minute within its budget
    # Shares follow the budgets: big carries about three times what a small one does.
    small = [pool.egresses[n].load for n in "abc"]
    assert max(small) - min(small) <= USER + 1e-9
    assert 2.5 * min(small) <= pool.egresses["big"].load <= 3.5 * max(small)


def test_assignments_stay_put_when_watchers_come_and_go() -> None:
    pool, _ = pool_of("a", "b", "c", "d")
    costs = {f"@u{i}": USER for i in range(40)}
    pool.rebalance(costs)
    before = dict(pool.assigned)
    costs |= {"@new1": USER, "@new2": USER}
    del costs["@u0"]
    pool.rebalance(costs)
    assert before  # the comparison below is over something
    assert all(pool.assigned[k] == e for k, e in before.items() if k in costs)
    assert "@u0" not in pool.assigned


def test_a_blocked_egress_is_emptied_at_once_and_probed_after_its_backoff() -> None:
    pool, clock = pool_of("a", "b", "c")
    costs = {f"@u{i}": USER for i in range(30)}
    pool.rebalance(costs)
    on_a = [k for k, e in pool.assigned.items() if e == "a"]
    assert on_a
    moved = [pool.failed("a", ErrorCode.WAF_BLOCKED, "@u0") for _ in range(BLOCK_AFTER)]
    assert moved == [False] * (BLOCK_AFTER - 1) + [True]
    assert pool.egresses["a"].state == "blocked"
    assert "a" not in pool.assigned.values()
    assert {pool.egress_for(k, USER).name for k in on_a} <= {"b", "c"}  # type: ignore[union-attr]
    assert pool.due_probes() == []  # not before its backoff
    clock.now += PROBE_START
    assert [e.name for e in pool.due_probes()] == ["a"]
    assert pool.egresses["a"].probe_target == "@u0"  # it asks what failed
    pool.answered("a")
    assert pool.egresses["a"].state == "healthy"
    pool.rebalance(costs)  # it takes its share again
    assert 8 <= loads(pool)["a"] <= 12


def test_a_failed_probe_doubles_the_backoff() -> None:
    pool, clock = pool_of("a", "b")
    pool.rebalance({"r1": ROOM, "r2": ROOM})
    for _ in range(DOWN_AFTER):
        pool.failed("a", ErrorCode.NETWORK_TIMEOUT, "r1")
    assert pool.egresses["a"].state == "down"
    clock.now += PROBE_START
    assert pool.due_probes()
    pool.failed("a", ErrorCode.NETWORK_TIMEOUT)
    assert pool.egresses["a"].state == "down"
    assert pool.egresses["a"].backoff == 2 * PROBE_START
    clock.now += PROBE_START
    assert pool.due_probes() == []


def test_a_storm_of_4003110_blocks_but_one_age_gated_room_does_not() -> None:
    pool, _ = pool_of("a", "b")
    pool.rebalance({"r1": ROOM})
    pool.failed("a", ErrorCode.AGE_RESTRICTED, "r1")
    pool.answered("a")
    assert pool.egresses["a"].state == "healthy"
    for _ in range(5):
        pool.failed("a", ErrorCode.AGE_RESTRICTED, "r1")
    assert pool.egresses["a"].state == "blocked"


def test_a_badly_off_balance_is_evened_out_but_a_small_one_is_left_alone() -> None:
    pool, _ = pool_of("a", "b")
    costs = {f"r{i}": ROOM for i in range(100)}
    pool.assigned = dict.fromkeys(costs, "a")  # everything on a (say, b was just added)
    pool.rebalance(costs)
    counts = loads(pool)
    assert counts["b"] >= 40
    pool.assigned = {f"r{i}": ("a" if i < 55 else "b") for i in range(100)}
    pool.rebalance(costs)
    assert loads(pool) == {"a": 55, "b": 45}  # 55/45 is not badly off: nobody moves


def test_removing_an_egress_moves_its_watchers_and_an_empty_pool_means_direct() -> None:
    pool, _ = pool_of("a", "b")
    pool.rebalance({"@x": USER, "@y": USER})
    assert pool.remove("a")
    assert set(pool.assigned.values()) == {"b"}
    assert pool.remove("b")
    assert pool.egress_for("@x", USER) is None


def test_pick_prefers_the_named_healthy_egress_then_spreads_recordings() -> None:
    pool, _ = pool_of("a", "b")
    assert pool.pick("b").name == "b"  # type: ignore[union-attr]
    for _ in range(BLOCK_AFTER):
        pool.failed("b", ErrorCode.WAF_BLOCKED)
    assert pool.pick("b").name == "a"  # type: ignore[union-attr]
    pool.answered("b")
    picked = [pool.pick(None).name for _ in range(4)]  # type: ignore[union-attr]
    assert picked.count("a") == 2
    assert picked.count("b") == 2
