"""The gateway's door to object storage: presigned GET URLs, computed here (no request to S3).

Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID..., a profile, a role), as
for the uploader; they sign the URL and never leave the process. A URL works for
DOWNLOAD_URL_EXPIRY seconds, for that one object only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Protocol, cast

import botocore.exceptions
import botocore.session
from botocore.config import Config


class NotConfigured(Exception):
    """No credentials to sign with: the gateway cannot hand out S3 URLs."""


class _Presigner(Protocol):
    # botocore adds this method to every client at run time; its stubs do not declare it.
    def generate_presigned_url(
        self, ClientMethod: str, Params: Mapping[str, Any], ExpiresIn: int
    ) -> str: ...


@functools.cache
def _client(endpoint_url: str | None) -> _Presigner:
    config = Config(
        signature_version="s3v4",
        # MinIO, moto and most self-hosted stores serve buckets as paths (as the uploader).
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint_url, config=config
    )
    return cast(_Presigner, client)


def presigned_get(
    endpoint_url: str | None,
    bucket: str,
    key: str,
    *,
    expires_in: int,
    method: str = "get_object",
    disposition: str | None = None,
) -> str:
    """A URL for ``method`` (``get_object``, or ``head_object`` for a HEAD) on ``bucket/key``
    for ``expires_in`` seconds (the store answers with ``disposition`` as its
    Content-Disposition when given).

    Raises:
        NotConfigured: there are no AWS credentials to sign with.
    """
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if disposition is not None and method == "get_object":
        params["ResponseContentDisposition"] = disposition
    try:
        return _client(endpoint_url).generate_presigned_url(
            method, Params=params, ExpiresIn=expires_in
        )
    except botocore.exceptions.NoCredentialsError as exc:
        msg = "no AWS credentials to sign S3 URLs with"
        raise NotConfigured(msg) from exc
