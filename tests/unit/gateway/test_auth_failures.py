"""Failed authentications per client address: the budget, its minute, bounded memory."""

from __future__ import annotations

from services.gateway.auth_failures import WINDOW, AuthFailures
from tests.fakes.clock import ManualClock


def test_an_address_waits_once_its_failures_are_spent_until_its_minute_ends() -> None:
    clock = ManualClock()
    failures = AuthFailures(3, clock=clock)
    for _ in range(3):
        assert failures.retry_after("10.0.0.1") is None
        failures.failed("10.0.0.1")
        clock.now += 1
    assert failures.retry_after("10.0.0.1") == WINDOW - 3  # counted from the first failure
    assert failures.retry_after("10.0.0.2") is None  # another address is not affected
    clock.now += WINDOW - 3.5
    assert failures.retry_after("10.0.0.1") == 1  # never 0: Retry-After is at least 1
    clock.now += 0.5
    assert failures.retry_after("10.0.0.1") is None
    assert len(failures) == 0  # an expired window is forgotten when next asked about


def test_failures_in_a_new_minute_start_a_new_count() -> None:
    clock = ManualClock()
    failures = AuthFailures(2, clock=clock)
    failures.failed("a")
    clock.now += WINDOW
    failures.failed("a")  # the first one's minute is over: this one starts another
    assert failures.retry_after("a") is None
    failures.failed("a")
    assert failures.retry_after("a") == WINDOW


def test_memory_is_bounded_by_forgetting_the_least_recent_address() -> None:
    failures = AuthFailures(1, clock=ManualClock(), max_addresses=3)
    for address in ("a", "b", "c"):
        failures.failed(address)
    failures.failed("a")  # a failed again: now the most recent
    failures.failed("d")
    assert len(failures) == 3
    assert failures.retry_after("b") is None  # forgotten
    assert all(failures.retry_after(x) is not None for x in ("a", "c", "d"))
