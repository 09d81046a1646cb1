"""The event catalogue (AsyncAPI 3) at ``/asyncapi.json``: open to all, like ``/openapi.json``."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Response

from shared import asyncapi

router = APIRouter()


@cache
def _document() -> bytes:
    # Built from the code this gateway runs, so it matches the events its peers of the same
    # release publish; the same bytes as docs/asyncapi.json.
    return asyncapi.render().encode()


# Left out of /openapi.json, as /openapi.json itself is: it documents NATS, not this API.
@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi_json() -> Response:
    return Response(_document(), media_type="application/json")
