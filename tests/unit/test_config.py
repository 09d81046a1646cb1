"""Settings come from the environment with sane defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings
from services.indexer.settings import IndexerSettings
from services.recorder.settings import RecorderSettings
from services.scheduler.settings import SchedulerSettings
from services.uploader.settings import UploaderSettings
from shared.config import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    settings = Settings()
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.nats_servers == ["nats://127.0.0.1:4222"]
    assert settings.tiktok_web_base == "https://www.tiktok.com"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("RECORDINGS_DIR", str(tmp_path))
    monkeypatch.setenv("API_KEYS", "k1, k2,")
    monkeypatch.setenv("RATE_LIMIT_PER_MIN", "120")
    settings = GatewaySettings()
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.recordings_dir == tmp_path
    assert settings.api_keys == ["k1", "k2"]
    assert settings.rate_limit_per_min == 120


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError):
        Settings()


def test_every_setting_is_documented_in_the_readme() -> None:
    from tlr.devstack import DevStackSettings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    names = [n.upper() for n in GatewaySettings.model_fields]
    names += [n.upper() for n in RecorderSettings.model_fields]
    names += [n.upper() for n in SchedulerSettings.model_fields]
    names += [n.upper() for n in UploaderSettings.model_fields]
    names += [n.upper() for n in IndexerSettings.model_fields]
    names += [f"TLR_{n.upper()}" for n in DevStackSettings.model_fields]
    missing = [n for n in names if f"| `{n}` |" not in readme]
    assert missing == []
