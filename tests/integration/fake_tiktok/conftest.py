"""Fixtures of the fake TikTok tests: the running fake, an HTTP client on it, its defences off."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.fake_tiktok.helpers import WAIT_S
from tlr.fake_tiktok import KIND, FakeTikTok


@pytest.fixture
def fake(fake_tiktok: FakeTikTok) -> FakeTikTok:
    return fake_tiktok


@pytest.fixture
async def client(fake: FakeTikTok) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=WAIT_S) as http:
        yield http


@pytest.fixture
async def kind(fake: FakeTikTok) -> None:
    """TikTok's defences off (`KIND`): for tests of page and api-live shapes with a plain client."""
    await fake.set_scenario(**KIND)
