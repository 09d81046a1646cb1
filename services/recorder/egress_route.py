"""How a job reaches TikTok: through its own proxy, through an egress of the scheduler's pool,
or direct.

A job's own proxy (``options.proxy``, from its request or its watcher) always wins, exactly as
before the pool. Otherwise the recorder asks the scheduler for the egress the live was found
through (``room.live``'s ``egress``) or, for an on-demand job, the pool's least-loaded healthy
one, and goes through that egress's proxy for the room lookups and, unless
EGRESS_MEDIA_DIRECT, for the FLV pull. A pick that fails never fails the job: it goes direct,
with a warning. A WAF page or an empty body met through a pool egress is reported to the
pool's owner (``egress.failed``), which counts it with its own answers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec

from services.recorder import metrics
from services.recorder.deps import PickFailed, RecorderDeps, Work
from shared.bus import TRANSIENT
from shared.errors import ErrorCode
from shared.events import EgressFailed, RecordingOptions, RoomLive
from shared.logging import get_logger
from shared.tiktok import TikTokError

log = get_logger(__name__)


@dataclass(frozen=True)
class Route:
    """The way one job goes: ``options`` make its TikTok client (a pool egress's sealed proxy
    put in), ``egress`` names the pool egress (never its URL; None: own proxy or direct)."""

    options: RecordingOptions
    egress: str | None = None
    media_direct: bool = False  # the pool egress carries the lookups only

    @property
    def media_via_proxy(self) -> bool:
        """Whether the FLV pull goes through the proxy of :attr:`options`."""
        return self.options.proxy is not None and not self.media_direct

    @property
    def media_options(self) -> RecordingOptions:
        """The options the media engine gets: no pool proxy when media goes direct (the
        tlr-cli engine has one proxy for its lookups and its media: it then runs direct)."""
        if self.media_via_proxy:
            return self.options
        return msgspec.structs.replace(self.options, proxy=None)

    def direct(self) -> Route:
        """The same job without its pool egress."""
        return replace(self, options=msgspec.structs.replace(self.options, proxy=None), egress=None)


async def choose_route(deps: RecorderDeps, event: Work) -> Route:
    """The route of ``event``'s job (asks the scheduler when the job has no proxy of its own)."""
    if event.options.proxy is not None:
        return Route(event.options)
    wanted = event.egress if isinstance(event, RoomLive) else None
    try:
        reply = await deps.egresses.pick(wanted)
    except PickFailed as exc:
        metrics.EGRESS_PICK_FAILURES.inc()
        log.warning(
            "recorder.egress_pick_failed",
            job_id=event.job_id,
            egress=wanted,
            error=str(exc),
            fallback="direct",
        )
        return Route(event.options)
    if reply.name is None:  # no pool: direct, as without one
        return Route(event.options)
    if wanted is not None and reply.name != wanted:
        # The watcher's egress was blocked or taken out since it found the live.
        log.info("recorder.egress_replaced", job_id=event.job_id, wanted=wanted, egress=reply.name)
    options = msgspec.structs.replace(event.options, proxy=reply.proxy)
    return Route(options, reply.name, media_direct=deps.settings.egress_media_direct)


async def report_failure(deps: RecorderDeps, route: Route, event: Work, exc: TikTokError) -> None:
    """Tell the pool's owner that ``route``'s egress answered a WAF page or an empty body: two
    running block it, its watchers move, and this job's next try is given another. Only that
    answer: a timeout or a refused room says less of the egress than of TikTok or the room,
    and the recorder's successes are not counted (the pool learns those from its own polls).
    A report lost to a NATS blip is only a hint lost: the job goes on."""
    if route.egress is None or exc.code != ErrorCode.WAF_BLOCKED:
        return
    report = EgressFailed(
        correlation_id=event.correlation_id,
        name=route.egress,
        error_code=exc.code.value,
        job_id=event.job_id,
    )
    try:
        await deps.publisher.publish(report)
    except TRANSIENT as error:
        log.warning("recorder.egress_report_failed", egress=route.egress, error=repr(error))
