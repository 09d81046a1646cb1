"""pytest fixtures over tlr.fake_tiktok: `fake_media_dir` (rendered once) and `fake_tiktok`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tlr.fake_tiktok.server import FakeTikTok, start_fake_tiktok

MEDIA_DIR_ENV = "TLR_FAKE_TIKTOK_MEDIA_DIR"


@pytest.fixture(scope="session")
def fake_media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where profiles are rendered: $TLR_FAKE_TIKTOK_MEDIA_DIR (a persistent cache) or a tmp dir."""
    configured = os.environ.get(MEDIA_DIR_ENV)
    if configured:
        return Path(configured)
    return tmp_path_factory.mktemp("fake_tiktok_media")


@pytest.fixture
async def fake_tiktok(
    request: pytest.FixtureRequest, fake_media_dir: Path
) -> AsyncIterator[FakeTikTok]:
    """A running FakeTikTok on a free port of 127.0.0.1.

    Options, from indirect parametrisation (`pytest.mark.parametrize("fake_tiktok",
    [{"speed": 10}], indirect=True)`) or else a module-level `FAKE_TIKTOK_OPTIONS` dict:
    any keyword of `start_fake_tiktok` except media_dir (speed, tick_s, seed, ...).
    """
    options = getattr(request, "param", None)
    if options is None:
        options = getattr(request.module, "FAKE_TIKTOK_OPTIONS", {})
    async with start_fake_tiktok(media_dir=fake_media_dir, **dict(options)) as fake:
        yield fake
