"""Settings come from the environment with sane defaults."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings
from services.indexer.settings import IndexerSettings
from services.notifier.settings import NotifierSettings
from services.recorder.settings import RecorderSettings
from services.scheduler.settings import SchedulerSettings
from services.uploader.settings import UploaderSettings
from shared.config import NatsClientSettings, Settings, SettingsError
from shared.nats_auth import connect_options


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
    names += [n.upper() for n in NotifierSettings.model_fields]
    names += [f"TLR_{n.upper()}" for n in DevStackSettings.model_fields]
    missing = [n for n in names if f"| `{n}` |" not in readme]
    assert missing == []


# --- NATS credentials and TLS -------------------------------------------------------------------


def _nats(**env: str) -> NatsClientSettings:
    return NatsClientSettings(_env_file=None, **env)  # type: ignore[call-arg]


def test_nats_settings_default_to_no_credentials_and_no_tls() -> None:
    settings = _nats()
    auth = connect_options(settings)
    assert auth.method == "none"
    assert auth.tls is False
    assert auth.options == {}
    assert settings.nats_provision is True


def test_nats_password_comes_from_its_file_and_never_shows(tmp_path: Path) -> None:
    secret = "s3cr3t-nats-pass-77"
    password_file = tmp_path / "password"
    password_file.write_text(secret + "\n")
    settings = _nats(nats_user="uploader", nats_password_file=str(password_file))
    auth = connect_options(settings)
    assert auth.method == "user"
    assert auth.options["user"] == "uploader"
    assert auth.options["password"] == secret
    assert secret not in repr(auth)
    assert secret not in repr(auth.options)
    assert secret not in repr(_nats(nats_user="u", nats_password=secret))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"nats_password_file": "/nonexistent/pw"}, "NATS_PASSWORD_FILE: /nonexistent/pw does not"),
        ({"nats_creds_file": "/nonexistent/c.creds"}, "NATS_CREDS_FILE: /nonexistent/c.creds"),
        ({"nats_nkey_seed_file": "/nonexistent/seed"}, "NATS_NKEY_SEED_FILE: /nonexistent/seed"),
        ({"nats_tls_ca": "/nonexistent/ca.pem"}, "NATS_TLS_CA: /nonexistent/ca.pem"),
        ({"nats_tls_key": "/nonexistent/k.pem"}, "NATS_TLS_KEY: /nonexistent/k.pem"),
        ({"nats_user": "gateway"}, "NATS_USER is set without NATS_PASSWORD_FILE"),
        ({"nats_password": "SeCrEt-1"}, "without NATS_USER"),
    ],
)
def test_bad_nats_settings_fail_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        _nats(**env)
    assert message in str(caught.value)
    assert "SeCrEt-1" not in str(caught.value)


def test_a_directory_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"NATS_TLS_CA: .* is not a file"):
        _nats(nats_tls_ca=str(tmp_path))
    # A file whose read fails whoever reads it (chmod 0 does not stop root, as CI runs):
    # /proc/self/mem is a regular file, and reading it from offset 0 is an I/O error.
    with pytest.raises(SettingsError, match=r"NATS_PASSWORD_FILE: .* cannot be read"):
        _nats(nats_user="u", nats_password_file="/proc/self/mem")


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "pw"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match=r"NATS_PASSWORD_FILE: .* is empty"):
        _nats(nats_user="u", nats_password_file=str(empty))


def test_two_ways_to_authenticate_are_refused(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("p")
    seed = tmp_path / "seed"
    seed.write_text("SUAAAA")
    with pytest.raises(SettingsError, match="NATS_USER and NATS_NKEY_SEED_FILE"):
        _nats(nats_user="u", nats_password_file=str(pw), nats_nkey_seed_file=str(seed))
    with pytest.raises(SettingsError, match="NATS_PASSWORD and NATS_PASSWORD_FILE"):
        _nats(nats_user="u", nats_password="SeCrEt-1", nats_password_file=str(pw))


def test_an_nkey_seed_file_must_hold_a_user_seed(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.write_text("SOSECRETOPERATORSEED")
    with pytest.raises(SettingsError) as caught:
        _nats(nats_nkey_seed_file=str(seed))
    assert "does not hold a user NKey seed" in str(caught.value)
    assert "SOSECRET" not in str(caught.value)


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    from tlr.nats_auth import make_tls

    return make_tls(tmp_path / "tls", ["localhost", "127.0.0.1"])


def test_tls_settings_build_a_verifying_context(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    auth = connect_options(_nats(nats_tls_ca=str(ca)))
    assert auth.tls is True
    context = auth.options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    # Mutual TLS: a certificate with its key (here the server's pair, which is a valid pair).
    mutual = connect_options(
        _nats(nats_tls_ca=str(ca), nats_tls_cert=str(cert), nats_tls_key=str(key))
    )
    assert mutual.tls is True


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    with pytest.raises(SettingsError, match="NATS_TLS_CERT is set but NATS_TLS_KEY is not"):
        _nats(nats_tls_ca=str(ca), nats_tls_cert=str(cert))
    with pytest.raises(SettingsError, match="NATS_TLS_KEY is set but NATS_TLS_CERT is not"):
        _nats(nats_tls_key=str(key))
    with pytest.raises(SettingsError, match=r"NATS_TLS_CA: .* no usable PEM") as caught:
        _nats(nats_tls_ca=str(key))
    assert "PRIVATE KEY" not in str(caught.value)
    with pytest.raises(SettingsError, match="NATS_TLS_CERT / NATS_TLS_KEY") as caught:
        _nats(nats_tls_cert=str(ca), nats_tls_key=str(key))
    assert "PRIVATE KEY" not in str(caught.value)


def test_every_service_reads_the_nats_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_PROVISION", "false")
    for settings_type in (
        GatewaySettings,
        RecorderSettings,
        SchedulerSettings,
        UploaderSettings,
        IndexerSettings,
    ):
        assert settings_type().nats_provision is False


# --- egress (issue 17) -----------------------------------------------------------------------


def test_egress_settings_default_to_tiktoks_cdns_and_no_private_address() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.stream_host_suffixes == (
        "tiktokcdn.com",
        "tiktokcdn-eu.com",
        "tiktokcdn-us.com",
    )
    assert settings.allow_private_stream_hosts is False
    assert settings.allow_private_proxies is False
    assert settings.stream_policy.refusal("https", "pull-flv-l1-va01.tiktokcdn.com") is None


def test_egress_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_HOST_SUFFIXES", " 127.0.0.1, CDN.Example. ,cdn.example")
    monkeypatch.setenv("ALLOW_PRIVATE_STREAM_HOSTS", "true")
    monkeypatch.setenv("ALLOW_PRIVATE_PROXIES", "Yes")
    settings = RecorderSettings()
    assert settings.stream_host_suffixes == ("127.0.0.1", "cdn.example")
    assert settings.stream_policy.allow_private is True
    assert settings.allow_private_proxies is True


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STREAM_HOST_SUFFIXES", ",", "STREAM_HOST_SUFFIXES: the list is empty"),
        ("STREAM_HOST_SUFFIXES", "*.tiktokcdn.com", "STREAM_HOST_SUFFIXES: '\\*.tiktokcdn.com'"),
        ("STREAM_HOST_SUFFIXES", "https://tiktokcdn.com", "STREAM_HOST_SUFFIXES: 'https:"),
        ("STREAM_HOST_SUFFIXES", "tiktokcdn.com:443", "STREAM_HOST_SUFFIXES: 'tiktokcdn.com:443'"),
        ("STREAM_HOST_SUFFIXES", "2130706433", "STREAM_HOST_SUFFIXES: '2130706433': a numeric"),
        ("ALLOW_PRIVATE_STREAM_HOSTS", "maybe", "ALLOW_PRIVATE_STREAM_HOSTS must be true or false"),
        ("ALLOW_PRIVATE_PROXIES", "2", "ALLOW_PRIVATE_PROXIES must be true or false"),
    ],
)
def test_bad_egress_settings_fail_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    for settings_type in (Settings, GatewaySettings, RecorderSettings, SchedulerSettings):
        with pytest.raises(SettingsError, match=message):
            settings_type()
