"""The ``jobs.query`` endpoint: one page of the job index for the gateway's ``GET /jobs``."""

from __future__ import annotations

import time

import msgspec
from nats.micro.request import Request, ServiceError

from services.indexer import metrics
from services.indexer.jobs_index import JobIndex
from shared.job_list import MAX_PAGE_SIZE, JobQuery
from shared.logging import get_logger

log = get_logger(__name__)

BAD_REQUEST, UNAVAILABLE, INTERNAL = "400", "503", "500"  # nats.micro error codes

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JobQuery)


async def answer(index: JobIndex, req: Request) -> None:
    """Answer ``req`` (a JobQuery) with a JobPage; a nats.micro error for a bad query."""
    started = time.perf_counter()
    try:
        query = _decoder.decode(req.data or b"{}")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ServiceError(BAD_REQUEST, f"bad query: {exc}") from exc
    if not 1 <= query.page_size <= MAX_PAGE_SIZE:
        raise ServiceError(BAD_REQUEST, f"page_size must be 1 to {MAX_PAGE_SIZE}")
    if index.closed:
        raise ServiceError(UNAVAILABLE, "the indexer is stopping")
    try:
        page = await index.query(query)
    except Exception as exc:
        log.exception("indexer.jobs_query_failed")
        raise ServiceError(INTERNAL, "query failed") from exc
    await req.respond(_encoder.encode(page))
    metrics.JOBS_QUERY_SECONDS.observe(time.perf_counter() - started)
