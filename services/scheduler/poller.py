"""One polling pass (leader only): due watchers -> resolve users -> batched check_alive ->
confirm positives with room/info -> room.live once per live session, and once more for each
job the live outlives (see :mod:`services.scheduler.lives`).

Every TikTok request first takes a permit from the :class:`Budget` of its egress, so the
request rate never exceeds the budget, however many watchers are due: when the budget is
tighter than the watchers need, checks simply happen later (the effective interval grows).

A watcher whose options this process cannot use (a proxy it cannot unseal, cookies it cannot
load) is not checked at all: it shows why in ``error_code``/``error_message`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.scheduler import metrics
from services.scheduler.budget import Budget, BudgetStopped
from services.scheduler.egress_pool import EgressPool
from services.scheduler.egress_store import EgressStore
from services.scheduler.keep import keep_watch_jobs
from services.scheduler.lives import attempt_of, job_id_for, job_lost, restart_at
from services.scheduler.probes import probe_egresses
from services.scheduler.store import WatcherStore
from shared.bus import TRANSIENT
from shared.errors import ErrorCode
from shared.events import Event, RoomLive
from shared.job_store import JobExists, JobStore
from shared.jobs import JobRequest
from shared.logging import get_logger
from shared.tiktok import RoomInfo, TikTokClient, TikTokError
from shared.tiktok.targets import is_room_id
from shared.watchers import Watcher

log = get_logger(__name__)

MAX_DUE = 1000
PACE_MARGIN = 1.25  # room for confirmations, retries and jitter above the steady need
PACE_FLOOR = 1.0  # requests/s: small deployments are never slowed below this
# A partial check_alive batch of room ids waits up to this long for more ids to come due.
BATCH_WAIT = 2.0
# Users resolved at once per egress: the budget sets the rate, this only keeps a slow answer
# from holding up the pass (one at a time, a 20 ms answer capped an egress at ~50 checks/s, a
# 200 ms one at 5). Small, because requests in flight together can reach TikTok together.
RESOLVE_CONCURRENCY = 8
ERROR_BACKOFF_MAX = 3600.0
# Errors that say "this egress is being throttled": back the whole egress off.
# A generator of its own: jitter never draws from (or disturbs) the global random state that
# another library in the process may seed.
_JITTER = random.Random()
EGRESS_ERRORS = frozenset(
    {ErrorCode.WAF_BLOCKED, ErrorCode.NETWORK_TIMEOUT, ErrorCode.SERVICE_UNAVAILABLE}
)


@dataclass
class PollDeps:
    """What a pass works with. ``client_for`` and ``egress_of`` raise ValueError (SecretError,
    CookiesError) for a watcher whose options cannot be used, as ClientPool does."""

    store: WatcherStore
    budget: Budget
    jobs: JobStore
    publish: Callable[[Event], Awaitable[object]]
    client_for: Callable[[Watcher], TikTokClient]
    egress_of: Callable[[Watcher], str]
    batch_size: int = 50
    kept: dict[str, float] = field(default_factory=dict)  # watch job -> when last kept
    # The store's and the pool's generations the egress rates were last computed at; None:
    # compute them.
    paced_at: tuple[int, int] | None = None
    # The egress pool (watchers without a proxy of their own), its file and its probes'
    # clients; an empty pool: every such watcher goes direct, as before the pool.
    pool: EgressPool = field(default_factory=lambda: EgressPool(120.0))
    pool_store: EgressStore | None = None
    egress_client: Callable[[str], TikTokClient] | None = None


@dataclass
class _Pass:
    """What one pass learned about each watcher."""

    now: float
    updates: dict[str, tuple[Watcher, float]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # each row's version as read

    def done(self, w: Watcher, outcome: str, next_check: float | None = None) -> None:
        """A check ended; without ``next_check`` it succeeded (failures and error cleared)."""
        # Counted from this watcher's own check, not from the start of the pass: with the
        # pacing below, a bulk import spreads over the interval instead of staying one burst.
        checked = time.time()
        w.last_run_at = datetime.fromtimestamp(checked, UTC)
        w.last_outcome = outcome
        if next_check is None:
            next_check = checked + interval(w.poll_interval)
            w.failures = 0
            w.error_code = w.error_message = None
        w.next_check_at = datetime.fromtimestamp(next_check, UTC)
        self.updates[w.key] = (w, next_check)
        metrics.CHECKS.labels(outcome).inc()

    def failed(self, w: Watcher, code: ErrorCode, message: str, next_check: float) -> None:
        w.error_code, w.error_message = code, message
        self.done(w, code.lower(), next_check)


def interval(poll: int) -> float:
    """The next check: never later than poll_interval, jittered so watchers never align."""
    return poll - _JITTER.uniform(0, min(0.1 * poll, 2.0))


async def poll_once(deps: PollDeps, now: float | None = None) -> int:
    """Check every due watcher once, each egress on its own, and return when all are done;
    returns how many were checked. (The leader's loop is :class:`Poller`: it does not wait.)"""
    now = time.time() if now is None else now
    await probe_egresses(deps.pool, deps.budget, deps.egress_client)
    rows = await deps.store.due(now, MAX_DUE)
    if not rows:
        return 0
    groups, unusable = await group_due(deps, rows, now)
    # Every egress finishes (or stops) before an error propagates: no orphaned checks.
    outcomes = await asyncio.gather(
        *(check_egress(deps, g, now) for g in groups), return_exceptions=True
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    for error in errors:
        if isinstance(error, BudgetStopped) or not isinstance(error, Exception):
            raise error  # stopping: what this pass learned is dropped (due again next time)
    await keep_jobs(deps, [w for w, _ in rows], now)
    if errors:
        raise errors[0]  # after the other egresses' news is saved: one egress stops no other
    return unusable + sum(o for o in outcomes if isinstance(o, int))


@dataclass
class EgressDue:
    """The due watchers of one egress, with the client they go through."""

    egress: str
    client: TikTokClient
    watchers: list[Watcher]
    versions: dict[str, int]


async def group_due(
    deps: PollDeps, rows: list[tuple[Watcher, int]], now: float
) -> tuple[list[EgressDue], int]:
    """Due rows by egress; a watcher whose options cannot be used is saved at once (with its
    error) and counted instead: it makes no request."""
    groups: dict[str, EgressDue] = {}
    state = _Pass(now, versions={w.key: version for w, version in rows})
    for w, version in rows:
        try:
            egress = deps.egress_of(w)
            client = deps.client_for(w)
        except ValueError as exc:  # SecretError, CookiesError, a proxy URL no client takes
            _unusable(w, exc, state)
            continue
        except Exception as exc:  # a fault of this watcher's options: not the others' concern
            _broken(w, exc, state)
            continue
        group = groups.setdefault(egress, EgressDue(egress, client, [], {}))
        group.watchers.append(w)
        group.versions[w.key] = version
    await _save(deps, state)
    return list(groups.values()), len(state.updates)


async def check_egress(deps: PollDeps, group: EgressDue, now: float) -> int:
    """One egress checks its due watchers and saves what it learned, whatever the other
    egresses are doing; returns how many were checked."""
    state = _Pass(now, versions=group.versions)
    try:
        await _poll_egress(deps, group.egress, group.client, group.watchers, state)
    except Exception:
        await _save(deps, state)  # what it learned before the error stands
        raise
    if deps.budget.stop.is_set():
        raise BudgetStopped  # the lease is lost: another leader may own these rows now
    await _save(deps, state)
    return len(state.updates)


async def keep_jobs(deps: PollDeps, due: list[Watcher], now: float) -> None:
    with contextlib.suppress(*TRANSIENT):  # tried again next pass: nothing is owed yet
        await keep_watch_jobs(deps.jobs, deps.kept, due, now)


async def _save(deps: PollDeps, state: _Pass) -> None:
    if state.updates:
        rows_out = [(w, nxt, state.versions[key]) for key, (w, nxt) in state.updates.items()]
        written = await deps.store.save_checked(rows_out)
        if written < len(rows_out):
            # Commands (delete, pause, resume, update) landed during the pass: they win.
            log.info("scheduler.pass_outdated", skipped=len(rows_out) - written)


async def pace(deps: PollDeps) -> None:
    """Set each egress's request rate to what its watchers need (+25 %), within the budget.

    Pacing at need rather than at the budget spreads the checks evenly over the interval;
    the budget stays the hard cap when the watchers need more than it allows. Nothing is
    computed again while no command changed the watchers (``paced_at``).
    """
    pool = deps.pool
    if deps.pool_store is not None:
        await deps.pool_store.save(pool)  # health for every instance's GET /egresses
    generation = (deps.store.generation, pool.generation)
    if deps.paced_at == generation:
        return
    need: dict[str, float] = defaultdict(float)
    if not pool.empty and deps.pool_store is not None:
        pool.rebalance(await deps.pool_store.pool_costs(deps.batch_size))
        await deps.pool_store.save(pool)
        for eg in pool.egresses.values():
            deps.budget.limit(eg.name, eg.per_min)
            need[eg.name] += eg.load
    # By options, not watcher by watcher: the egress is a matter of options (its proxy).
    for key, rate in await deps.store.need(deps.batch_size):
        w = await deps.store.get(key)
        if w is None:
            continue  # deleted since: the next pace counts without it
        if not pool.empty and w.options.proxy is None:
            continue  # in the pool: counted above, watcher by watcher
        try:
            egress = deps.egress_of(w)
        except ValueError:
            continue  # never polled (see poll_once): it needs no share of any egress
        need[egress] += rate
    for egress, rate in need.items():
        deps.budget.pace(egress, max(PACE_FLOOR, rate * PACE_MARGIN))
    deps.paced_at = generation


async def _poll_egress(
    deps: PollDeps, egress: str, client: TikTokClient, due: list[Watcher], state: _Pass
) -> None:
    # A live user's room is live: check_alive by room id says when it ends. www, where the
    # WAF and the per-IP limits bite (upstream #354), is asked again only after that.
    to_resolve = [
        w for w in due if w.unique_id is not None and not (w.live_state == "live" and w.room_id)
    ]
    resolved = await _resolve_users(deps, egress, client, to_resolve, state)
    if resolved is None:
        return  # the egress is throttled: the rest waits for the next pass
    pending = {w.key for w in to_resolve}
    checkable = [w for w in due if w.key not in pending or w.key in resolved]

    checkable = [w for w in checkable if _valid_room(w, state)]
    checkable = _fill_batches(checkable, deps.batch_size, state.now)
    positives: list[Watcher] = []
    for batch in _chunks(checkable, deps.batch_size):
        await _take(deps, egress, "check_alive")
        try:
            alive = await client.check_alive([w.room_id or "" for w in batch])
        except TikTokError as exc:
            _batch_failed(deps, egress, batch, exc, state)
            return
        except Exception as exc:
            for w in batch:
                _broken(w, exc, state)
            continue
        _answered(deps, egress)
        for w in batch:
            if alive.get(w.room_id or ""):
                positives.append(w)
            else:
                _offline(w, state)

    for w in positives:
        try:
            if await _confirm(deps, egress, client, w, state):
                return  # the egress is throttled: the rest waits for the next pass
        except BudgetStopped:
            raise
        except Exception as exc:  # the job store or the bus failed for this one: next one
            _broken(w, exc, state)


async def _confirm(
    deps: PollDeps, egress: str, client: TikTokClient, w: Watcher, state: _Pass
) -> bool:
    """A room check_alive calls alive: record it unless it is already (a new job when the
    live outlived its job); True when the whole egress must back off."""
    assert w.room_id is not None
    attempt = attempt_of(w, w.room_id)
    if attempt is not None:
        if not await _job_over(deps, w, attempt):
            w.live_state = "live"
            state.done(w, "live")  # still the same live: already recording
            return False
        attempt += 1  # its job ended, the live goes on: the next job, once confirmed live
    attempt = attempt or 0
    # check_alive has said "alive" for rooms that are not (TIKTOK.md #454): confirm.
    await _take(deps, egress, "room_info")
    try:
        info = await client.room_info(w.room_id)
    except TikTokError as exc:
        if exc.code == ErrorCode.AGE_RESTRICTED:
            # Also what a flagged IP gets for every room: a storm of them blocks the egress.
            deps.pool.failed(egress, exc.code, w.room_id)
            # Alive but gated: the recorder has the cookies to deal with it.
            await _went_live(deps, w, None, state, attempt, egress)
            return False
        return _failed(deps, egress, w, exc, state)
    _answered(deps, egress)
    if info.is_live or info.is_paused:
        await _went_live(deps, w, info, state, attempt, egress)
    else:
        _offline(w, state)
    return False


async def _job_over(deps: PollDeps, w: Watcher, attempt: int) -> bool:
    """The live's job ended (not cancelled) and its restart delay is over, or the job is gone."""
    job_id = w.current_job_id
    assert job_id is not None
    rec = await deps.jobs.recording(job_id)
    if rec is None and job_lost(await deps.jobs.request(job_id), rec, attempt):
        log.warning("scheduler.job_lost", key=w.key, room_id=w.room_id, job_id=job_id)
        return True
    at = restart_at(rec, attempt, w.poll_interval)
    return at is not None and time.time() >= at


async def _resolve_users(
    deps: PollDeps, egress: str, client: TikTokClient, users: list[Watcher], state: _Pass
) -> set[str] | None:
    """Resolve each user's current room (TikTok issues a new room id per live), up to
    RESOLVE_CONCURRENCY at a time, each after a permit of the budget: the budget sets the
    rate, and one slow answer no longer holds up every other check of the pass.

    Returns the keys of the users that have a room id to check; None when the egress is
    throttled (no further resolve starts; those in flight finish and are recorded).
    """
    resolved: set[str] = set()
    queue = iter(users)
    throttled = False
    waiting: set[asyncio.Task[None]] = set()  # workers waiting for a permit

    async def worker() -> None:
        nonlocal throttled
        me = asyncio.current_task()
        assert me is not None
        for w in queue:  # shared by the workers: each user is taken once, in due order
            if throttled:
                return
            waiting.add(me)
            try:
                await _take(deps, egress, "user_room")
            finally:
                waiting.discard(me)
            try:
                ref = await client.resolve(f"@{w.unique_id}")
            except TikTokError as exc:
                if _failed(deps, egress, w, exc, state):
                    throttled = True
                    for other in waiting:  # they would sit out the backoff: not this pass
                        other.cancel()
                continue
            except Exception as exc:
                _broken(w, exc, state)
                continue
            _answered(deps, egress)
            if ref.room_id:
                w.room_id = ref.room_id
                resolved.add(w.key)
            else:
                _offline(w, state)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(RESOLVE_CONCURRENCY, len(users))):
                group.create_task(worker())
    except BaseExceptionGroup as errors:  # BudgetStopped: the workers caught everything else
        raise errors.exceptions[0] from None
    return None if throttled else resolved


def _fill_batches(checkable: list[Watcher], size: int, now: float) -> list[Watcher]:
    """Hold back a trailing partial batch of room-id watchers that just came due.

    Resolved users must be checked now; room-id watchers can wait up to BATCH_WAIT for more
    ids, so check_alive calls go out full. Held watchers stay due for the next pass.
    """
    users = [w for w in checkable if w.unique_id is not None]
    rooms = sorted(
        (w for w in checkable if w.unique_id is None),
        key=lambda w: w.next_check_at.timestamp() if w.next_check_at else 0.0,
    )
    spare = (len(users) + len(rooms)) % size
    if spare and len(rooms) >= spare:
        tail = rooms[-spare:]
        oldest = min(w.next_check_at.timestamp() if w.next_check_at else 0.0 for w in tail)
        if now - oldest < BATCH_WAIT:
            rooms = rooms[:-spare]
    return users + rooms


async def _take(deps: PollDeps, egress: str, endpoint: str) -> None:
    await deps.budget.take(egress, endpoint)
    deps.pool.requested(egress)


def _answered(deps: PollDeps, egress: str) -> None:
    deps.budget.succeeded(egress)
    deps.pool.answered(egress)


def _chunks(items: Sequence[Watcher], size: int) -> list[Sequence[Watcher]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _offline(w: Watcher, state: _Pass) -> None:
    if w.live_state == "live":
        log.info("scheduler.live_ended", key=w.key, room_id=w.room_id)
    w.live_state = "offline"
    w.current_job_id = None
    state.done(w, "offline")


def _failed(deps: PollDeps, egress: str, w: Watcher, exc: TikTokError, state: _Pass) -> bool:
    """Record a failed check; True when the whole egress must back off."""
    w.failures += 1
    if exc.code in EGRESS_ERRORS:
        target = f"@{w.unique_id}" if w.unique_id and w.live_state != "live" else w.room_id
        if deps.pool.failed(egress, exc.code, target):
            # The pool moved this egress's watchers: this one is checked at once elsewhere.
            state.failed(w, exc.code, exc.message, next_check=state.now)
            return True
        pause = deps.budget.penalize(egress)
        log.warning("scheduler.egress_backoff", egress=egress, error_code=exc.code, pause_s=pause)
        # Checked again as soon as the egress may be used: nothing is skipped, only delayed.
        state.failed(w, exc.code, exc.message, next_check=state.now + pause)
        return True
    delay = min(ERROR_BACKOFF_MAX, w.poll_interval * 2.0 ** min(w.failures, 10))
    state.failed(w, exc.code, exc.message, next_check=state.now + delay)
    return False


def _batch_failed(
    deps: PollDeps, egress: str, batch: Sequence[Watcher], exc: TikTokError, state: _Pass
) -> None:
    """A check_alive call failed: one answer, so the egress hears of it once (fifty reports of
    one WAF page blocked an egress again and again and sent its probe backoff to the max)."""
    if exc.code not in EGRESS_ERRORS:
        for w in batch:
            _failed(deps, egress, w, exc, state)
        return
    first, *others = batch
    _failed(deps, egress, first, exc, state)
    _, next_check = state.updates[first.key]
    for w in others:  # checked again with the first: when the egress may be used
        w.failures += 1
        state.failed(w, exc.code, exc.message, next_check=next_check)


def _valid_room(w: Watcher, state: _Pass) -> bool:
    """A room id TikTok (or an old row) gave that is no room id fails this watcher alone:
    check_alive refuses the whole batch it would be in."""
    if w.room_id and is_room_id(w.room_id):
        return True
    log.warning("scheduler.invalid_room_id", key=w.key, room_id=w.room_id)
    w.failures += 1
    detail = f"unexpected answer from TikTok: room id {w.room_id!r} is not 15-20 digits"
    delay = min(ERROR_BACKOFF_MAX, w.poll_interval * 2.0 ** min(w.failures, 10))
    state.failed(w, ErrorCode.SERVICE_UNAVAILABLE, detail, next_check=state.now + delay)
    return False


def _broken(w: Watcher, exc: Exception, state: _Pass) -> None:
    """A fault no error mapping knows (a bug, a store or bus error) while checking ``w``:
    its error, not the pass's. Checked again after a poll interval, then less and less often.
    The message names only the type: the details (maybe a proxy URL) go to the log."""
    log.exception("scheduler.check_failed", key=w.key, error=repr(exc))  # in an except
    w.failures += 1
    delay = min(ERROR_BACKOFF_MAX, w.poll_interval * 2.0 ** min(w.failures - 1, 10))
    message = f"internal error ({type(exc).__name__}); the scheduler's log has the details"
    state.failed(w, ErrorCode.INTERNAL, message, next_check=time.time() + delay)


def _unusable(w: Watcher, exc: ValueError, state: _Pass) -> None:
    """Options this process cannot use: no request at all, never one without them.

    Polling without its proxy would show TikTok the IP the proxy hides. Tried again every
    poll interval (it costs no request), so a fixed SECRET_KEY or cookies file takes at once.
    """
    log.warning("scheduler.watcher_unusable", key=w.key, error=str(exc))
    w.live_state = "unknown"  # current_job_id stays: the same live is never recorded twice
    state.failed(w, ErrorCode.VALIDATION_ERROR, str(exc), time.time() + interval(w.poll_interval))


async def _went_live(
    deps: PollDeps, w: Watcher, info: RoomInfo | None, state: _Pass, attempt: int, egress: str
) -> None:
    """Start job ``attempt`` of the live (0: the live is new) unless it is the current one."""
    assert w.room_id is not None
    job_id = job_id_for(w, w.room_id, attempt)
    if w.current_job_id != job_id:
        request = JobRequest(
            job_id=job_id,
            room_id=w.room_id,
            url=w.url,
            watcher_key=w.key,
            options=w.options,
            correlation_id=w.correlation_id or w.task_id,
        )
        # Made already before a crash? Then the event below is deduplicated too.
        with contextlib.suppress(JobExists):
            await deps.jobs.submit(request)
        await deps.publish(
            RoomLive(
                event_id=f"live:{job_id}",
                correlation_id=w.correlation_id or w.task_id,
                job_id=job_id,
                room_id=w.room_id,
                watcher_key=w.key,
                url=w.url,
                unique_id=w.unique_id,
                title=info.title if info else None,
                options=w.options,
                # The recorder goes through the same egress (by name: the pool has its proxy).
                egress=egress if egress in deps.pool.egresses else None,
            )
        )
        if attempt == 0:
            metrics.LIVES_DETECTED.inc()
            if info is not None and info.start_time:
                metrics.DETECTION_SECONDS.observe(max(0.0, time.time() - info.start_time))
            log.info("scheduler.live_detected", key=w.key, room_id=w.room_id, job_id=job_id)
        else:
            metrics.LIVE_RESTARTS.inc()
            log.warning(
                "scheduler.live_restarted",
                key=w.key,
                room_id=w.room_id,
                job_id=job_id,
                previous_job_id=w.current_job_id,
            )
        w.current_job_id = job_id
        w.jobs = [*w.jobs[-49:], job_id]
        w.last_live_at = datetime.fromtimestamp(state.now, UTC)
    w.live_state = "live"
    state.done(w, "live")
