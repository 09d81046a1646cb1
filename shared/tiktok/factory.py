"""TikTok clients from a service's settings: one signer per process, one client per identity."""

from __future__ import annotations

from shared.config import Settings
from shared.tiktok.client import TikTokClient
from shared.tiktok.http import Trace
from shared.tiktok.signer import Signer


def signer_from_settings(settings: Settings) -> Signer | None:
    """The process's signer client (None when TIKTOK_SIGNER_URL is not set); close it on stop."""
    return Signer(settings.tiktok_signer_url) if settings.tiktok_signer_url else None


def client_from_settings(
    settings: Settings,
    *,
    proxy: str | None = None,
    cookies: dict[str, str] | None = None,
    signer: Signer | None = None,
    trace: Trace | None = None,
) -> TikTokClient:
    """A client with the deployment's bases, User-Agent, impersonation and egress policy
    (STREAM_HOST_SUFFIXES, ALLOW_PRIVATE_*), for one identity."""
    return TikTokClient(
        web_base=settings.tiktok_web_base,
        webcast_base=settings.tiktok_webcast_base,
        proxy=proxy,
        cookies=cookies,
        user_agent=settings.tiktok_user_agent,
        impersonate=settings.tiktok_impersonate,
        signer=signer,
        trace=trace,
        stream_policy=settings.stream_policy,
        allow_private_proxy=settings.allow_private_proxies,
    )
