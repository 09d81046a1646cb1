"""The egress pool: which egress each watcher without its own proxy polls through, and how
each egress is doing. The scheduler's leader is its one owner; :mod:`egress_store` keeps it.

Assignment is by cost (a ``@user`` costs a www resolve per interval, a room id a share of a
``check_alive`` batch) against each egress's budget, and stable: a watcher stays where it is
unless its egress is blocked, down or gone, or the balance is badly off (one egress far above
the pool's mean load, or a recovered one far below it).

Health: a WAF answer or empty body (WAF_BLOCKED) twice running, or a storm of 4003110
(AGE_RESTRICTED) answers, blocks an egress; network errors three times running take it down.
Its watchers move to the healthy egresses at once. After a backoff (doubling, capped) the
poller probes it once; an answer makes it healthy again and it takes load as the balance
calls for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.scheduler import metrics
from shared.egresses import EgressKind, EgressSource, EgressState, EgressStatus
from shared.errors import ErrorCode
from shared.logging import get_logger

log = get_logger(__name__)

# WAF answers running. An unsolvable WAF page or an empty body is no blip (a challenge the
# client solves is no failure at all): two in a row, and the watchers are better elsewhere.
BLOCK_AFTER = 2
STORM_AFTER = 5  # 4003110 answers running
DOWN_AFTER = 3  # network errors running
PROBE_START = 60.0
PROBE_MAX = 3600.0
# Balance: an egress above OVER x the pool's mean load sheds watchers down to SETTLE x; one
# below UNDER x takes watchers up to FILL x. The gaps keep watchers from moving back and forth.
OVER, SETTLE, UNDER, FILL = 1.5, 1.15, 0.5, 0.85
RESET_AFTER = 100  # answers running that forget an egress's past backoffs
# What a recording picked for an on-demand job weighs when the next one is picked (requests
# a second): its room info and reconnects, so jobs spread instead of piling on one egress.
PICK_COST = 1.0 / 60.0


@dataclass
class Egress:
    """One egress of the pool. ``proxy`` is sealed (None: direct)."""

    name: str
    proxy: str | None
    per_min: float
    source: EgressSource = "api"
    state: EgressState = "healthy"
    reason: str | None = None
    since: float | None = None
    backoff: float = 0.0
    probe_at: float = 0.0
    probe_target: str | None = None  # what failed last: "@user" or a room id
    waf_run: int = 0
    restricted_run: int = 0
    network_run: int = 0
    ok_run: int = 0
    picks: int = 0  # recordings sent through it (PICK_COST each in pick's choice)
    load: float = 0.0  # requests/s its watchers cost
    watchers: int = 0
    requests: int = 0
    waf_answers: int = 0
    challenge_solves: int = 0
    errors: int = 0

    @property
    def kind(self) -> EgressKind:
        return "direct" if self.proxy is None else "proxy"

    @property
    def capacity(self) -> float:
        return self.per_min / 60.0

    def status(self) -> EgressStatus:
        return EgressStatus(
            name=self.name,
            kind=self.kind,
            source=self.source,
            requests_per_min=self.per_min,
            state=self.state,
            reason=self.reason,
            since=datetime.fromtimestamp(self.since, UTC) if self.since else None,
            backoff_s=round(self.backoff, 1) if self.state != "healthy" else 0.0,
            assigned_watchers=self.watchers,
            need_per_min=round(self.load * 60.0, 3),
            requests=self.requests,
            waf_answers=self.waf_answers,
            challenge_solves=self.challenge_solves,
            errors=self.errors,
        )


@dataclass
class EgressPool:
    """The pool's members, their health and the watchers' assignments."""

    default_per_min: float
    clock: Callable[[], float] = time.time
    egresses: dict[str, Egress] = field(default_factory=dict)
    assigned: dict[str, str] = field(default_factory=dict)  # watcher key -> egress
    costs: dict[str, float] = field(default_factory=dict)  # watcher key -> requests/s
    generation: int = 0  # bumped by every change the pacing must hear of
    moved: set[str] = field(default_factory=set)  # keys whose assignment is not saved yet

    # --- membership ---------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        return not self.egresses

    def put(
        self, name: str, proxy: str | None, per_min: float | None, source: EgressSource
    ) -> Egress:
        """Add ``name``, or give the existing one its new proxy and budget (health kept)."""
        budget = per_min or self.default_per_min
        eg = self.egresses.get(name)
        if eg is None:
            eg = self.egresses[name] = Egress(name, proxy, budget, source)
            log.info("scheduler.egress_added", egress=name, kind=eg.kind, per_min=budget)
        else:
            eg.proxy, eg.per_min, eg.source = proxy, budget, source
        self.generation += 1
        return eg

    def remove(self, name: str) -> bool:
        """Take ``name`` out; its watchers move to the others now."""
        if self.egresses.pop(name, None) is None:
            return False
        for key in [k for k, e in self.assigned.items() if e == name]:
            del self.assigned[key]
            self._place(key)
        metrics.forget_egress(name)
        self.generation += 1
        log.info("scheduler.egress_removed", egress=name)
        return True

    def clear(self) -> None:
        """Forget everything (before loading what another leader left)."""
        self.egresses.clear()
        self.assigned.clear()
        self.costs.clear()
        self.moved.clear()
        self.generation += 1

    # --- assignment ---------------------------------------------------------------------

    def egress_for(self, key: str, cost: float) -> Egress | None:
        """The egress ``key`` polls through (placed now if it has none); None: no pool."""
        if self.empty:
            return None
        if self.costs.get(key) != cost:
            self._charge(key, cost - self.costs.get(key, 0.0))
            self.costs[key] = cost
        name = self.assigned.get(key)
        current = self.egresses.get(name) if name else None
        if current is not None and current.state == "healthy":
            return current
        return self._place(key) or current

    def rebalance(self, costs: dict[str, float]) -> None:
        """Every watcher of the pool with its cost: forget the others, place the new, move
        the ones of unusable egresses, and even out a balance that is badly off."""
        self.costs = dict(costs)
        for key in [k for k in self.assigned if k not in costs]:
            del self.assigned[key]
        self.recount()
        for key in costs:
            eg = self.egresses.get(self.assigned.get(key, ""))
            if eg is None or eg.state != "healthy":
                self._place(key)
        self._even_out()
        self._publish_gauges()

    def _healthy(self) -> list[Egress]:
        return [e for e in self.egresses.values() if e.state == "healthy"]

    def _place(self, key: str) -> Egress | None:
        """Put ``key`` on the least-loaded healthy egress (by load over budget)."""
        cost = self.costs.get(key, 0.0)
        healthy = self._healthy()
        if not healthy:
            return None
        best = min(healthy, key=lambda e: ((e.load + cost) / e.capacity, e.name))
        self._assign(key, best)
        return best

    def _assign(self, key: str, eg: Egress) -> None:
        before = self.egresses.get(self.assigned.get(key, ""))
        cost = self.costs.get(key, 0.0)
        if before is eg:
            return
        if before is not None:
            before.load -= cost
            before.watchers -= 1
        eg.load += cost
        eg.watchers += 1
        self.assigned[key] = eg.name
        self.moved.add(key)

    def _charge(self, key: str, delta: float) -> None:
        eg = self.egresses.get(self.assigned.get(key, ""))
        if eg is not None:
            eg.load += delta

    def recount(self) -> None:
        for eg in self.egresses.values():
            eg.load, eg.watchers = 0.0, 0
        for key, name in self.assigned.items():
            member = self.egresses.get(name)
            if member is not None:
                member.load += self.costs.get(key, 0.0)
                member.watchers += 1

    def _even_out(self) -> None:
        healthy = self._healthy()
        capacity = sum(e.capacity for e in healthy)
        if len(healthy) < 2 or capacity <= 0:
            return
        mean = sum(e.load for e in healthy) / capacity  # the pool's load per unit of budget
        if mean <= 0:
            return
        by_egress: dict[str, list[str]] = {}
        for key, name in self.assigned.items():
            by_egress.setdefault(name, []).append(key)
        over = [e for e in healthy if e.load / e.capacity > OVER * mean]
        under = [e for e in healthy if e.load / e.capacity < UNDER * mean]
        for eg in over:  # shed down to SETTLE x mean, each to the least loaded
            for key in sorted(by_egress.get(eg.name, [])):
                if eg.load / eg.capacity <= SETTLE * mean:
                    break
                target = min(healthy, key=lambda e: (e.load / e.capacity, e.name))
                if target is eg:
                    break
                self._assign(key, target)
        for eg in under:  # fill up to FILL x mean from the most loaded
            while eg.load / eg.capacity < FILL * mean:
                donor = max(healthy, key=lambda e: (e.load / e.capacity, e.name))
                keys = [k for k, n in self.assigned.items() if n == donor.name]
                if donor is eg or not keys:
                    break
                self._assign(min(keys), eg)

    def pick(self, name: str | None) -> Egress | None:
        """A recording's egress: ``name`` while it is healthy, else the least-loaded healthy
        one (None: no pool)."""
        if self.empty:
            return None
        eg = self.egresses.get(name or "")
        if eg is not None and eg.state == "healthy":
            return eg
        candidates = self._healthy() or list(self.egresses.values())
        best = min(candidates, key=lambda e: ((e.load + e.picks * PICK_COST) / e.capacity, e.name))
        best.picks += 1
        return best

    # --- health -------------------------------------------------------------------------

    def requested(self, name: str) -> None:
        eg = self.egresses.get(name)
        if eg is not None:
            eg.requests += 1
            metrics.EGRESS_REQUESTS.labels(name).inc()

    def solved(self, name: str) -> None:
        eg = self.egresses.get(name)
        if eg is not None:
            eg.challenge_solves += 1
            metrics.EGRESS_SOLVES.labels(name).inc()

    def answered(self, name: str) -> None:
        """A request through ``name`` got a usable answer."""
        eg = self.egresses.get(name)
        if eg is None:
            return
        eg.waf_run = eg.restricted_run = eg.network_run = 0
        eg.ok_run += 1
        if eg.ok_run >= RESET_AFTER:
            eg.backoff = 0.0
        if eg.state != "healthy":
            log.info("scheduler.egress_recovered", egress=name, was=eg.reason)
            eg.state, eg.reason, eg.since = "healthy", None, None
            self.generation += 1
            self._publish_gauges()

    def failed(self, name: str, code: ErrorCode, target: str | None = None) -> bool:
        """A request through ``name`` failed with ``code``; True when that took the egress
        out of use (its watchers moved)."""
        eg = self.egresses.get(name)
        if eg is None:
            return False
        eg.ok_run = 0
        if target:
            eg.probe_target = target
        if code == ErrorCode.WAF_BLOCKED:
            eg.waf_answers += 1
            eg.waf_run += 1
            metrics.EGRESS_WAF.labels(name).inc()
            if eg.waf_run >= BLOCK_AFTER or eg.state == "probing":
                return self._sideline(eg, "blocked", code)
            return False
        if code == ErrorCode.AGE_RESTRICTED:
            eg.restricted_run += 1
            if eg.restricted_run >= STORM_AFTER:
                return self._sideline(eg, "blocked", code)
            return False
        eg.errors += 1
        metrics.EGRESS_ERRORS.labels(name).inc()
        if code == ErrorCode.NETWORK_TIMEOUT:
            eg.network_run += 1
            if eg.network_run >= DOWN_AFTER or eg.state == "probing":
                return self._sideline(eg, "down", code)
        elif eg.state == "probing":
            return self._sideline(eg, "down", code)
        return False

    def _sideline(self, eg: Egress, state: EgressState, code: ErrorCode) -> bool:
        first = eg.state == "healthy"
        eg.state, eg.reason = state, code.value
        eg.since = eg.since if not first else self.clock()
        eg.backoff = min(PROBE_MAX, eg.backoff * 2 if eg.backoff else PROBE_START)
        eg.probe_at = self.clock() + eg.backoff
        eg.waf_run = eg.restricted_run = eg.network_run = 0
        keys = [k for k, n in self.assigned.items() if n == eg.name]
        for key in keys:
            self._place(key)
        self.generation += 1
        self._publish_gauges()
        log.warning(
            "scheduler.egress_sidelined",
            egress=eg.name,
            state=state,
            error_code=code.value,
            moved=len(keys),
            probe_in_s=eg.backoff,
        )
        return first

    def due_probes(self) -> list[Egress]:
        """Egresses whose backoff is over: now probing (one request decides)."""
        now = self.clock()
        due = [e for e in self.egresses.values() if e.state in ("blocked", "down")]
        due = [e for e in due if e.probe_at <= now]
        for eg in due:
            eg.state = "probing"
        return due

    # --- what it shows ------------------------------------------------------------------

    def healthy_capacity(self) -> float:
        """Requests a minute the healthy egresses may make."""
        return sum(e.per_min for e in self._healthy())

    def need(self) -> float:
        """Requests a minute the pool's watchers cost."""
        return sum(self.costs.values()) * 60.0

    def statuses(self) -> list[EgressStatus]:
        return [self.egresses[n].status() for n in sorted(self.egresses)]

    def _publish_gauges(self) -> None:
        for eg in self.egresses.values():
            metrics.EGRESS_WATCHERS.labels(eg.name).set(eg.watchers)
            metrics.EGRESS_HEALTHY.labels(eg.name).set(int(eg.state == "healthy"))
            metrics.EGRESS_PROBE_BACKOFF.labels(eg.name).set(
                eg.backoff if eg.state != "healthy" else 0
            )
        metrics.POOL_CAPACITY.set(self.healthy_capacity())
        metrics.POOL_NEED.set(self.need())
