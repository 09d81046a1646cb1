"""No secret leaves where it belongs: a recording through an authenticating proxy, with a cookies
file and an upload to S3, leaves neither the proxy password, the cookie value nor the S3 secret
key in any log line, event, KV document or API answer.

Everything real: the gateway, a recorder and an uploader on a nats-server, a forwarding proxy
that checks its password, a moto S3 server, ffmpeg, and the fake TikTok (an 18+ live, so the
recording only works when the cookies are really sent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import structlog

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.uploader.service import UploaderService
from services.uploader.settings import UploaderSettings
from shared.bus import Bus
from shared.config import NatsClientSettings, SettingsError
from shared.logging import configure_logging
from shared.secrets import new_key
from shared.subjects import DURABLES
from tests.helpers import JobsApi, eventually
from tests.http_proxy import AuthProxy
from tests.s3_server import S3Server
from tlr.devstack import SERVER_CONF
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_auth import dev_credentials
from tlr.nats_server import NatsServer

KEY = "k-secrets"
PASSWORD = "pr0xy-Pa55-7f3c9e"
COOKIE_VALUE = "sess-COOKIE-91b2d4e6"
S3_SECRET = "s3-SECRET-a8c1f0d2"
FAKE_TIKTOK_OPTIONS = {"speed": 4.0}


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> AsyncIterator[pytest.CaptureFixture[str]]:
    """Every service's log lines, rendered by the production pipeline (redaction included)."""
    configure_logging("test", "DEBUG", "json", cache=False)  # no logger keeps it after us
    yield capsys
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


class Stack(JobsApi):
    def __init__(
        self,
        client: httpx.AsyncClient,
        bus: Bus,
        proxy: AuthProxy,
        logs: pytest.CaptureFixture[str],
    ) -> None:
        super().__init__(client, KEY)
        self.bus = bus
        self.proxy = proxy
        self.logs = logs


@pytest.fixture
async def stack(
    nats_server: NatsServer,
    bus: Bus,
    fake_tiktok: FakeTikTok,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.CaptureFixture[str],  # configured before any service logs
) -> AsyncIterator[Stack]:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    cookies = tmp_path / "cookies"
    cookies.mkdir()
    (cookies / "tiktok.txt").write_text(
        "# Netscape HTTP Cookie File\n"
        f".tiktok.com\tTRUE\t/\tTRUE\t2000000000\tsessionid\t{COOKIE_VALUE}\n"
    )
    secret = new_key()
    common = {
        "nats_url": nats_server.client_url,
        "recordings_dir": tmp_path / "recordings",
        "cookies_dir": cookies,
        "secret_key": secret,
    }
    # The proxy listens on 127.0.0.1: private proxies allowed (gateway and recorder).
    gw = GatewaySettings(
        **common, api_keys=[KEY], rate_limit_per_min=100_000, allow_private_proxies=True
    )
    rec = RecorderSettings(
        **common,
        instance_id="rec-1",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        read_timeout=2.0,
        allow_private_proxies=True,
        **fake_tiktok.egress_settings,
    )
    up = UploaderSettings(
        **common, instance_id="up-1", s3_bucket="rec", s3_endpoint_url=s3_server.endpoint_url
    )
    async with (
        AuthProxy("rec", PASSWORD) as proxy,
        NatsLink(gw) as link,
        RecorderService(bus, rec),
        UploaderService(bus, up),
    ):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Stack(client, bus, proxy, logs)


async def everything_in_nats(bus: Bus) -> bytes:
    """Every message of every stream (events, KV buckets with their history), headers too."""
    out = bytearray()
    async for name in _stream_names(bus):
        info = await bus.js.stream_info(name)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await bus.js.get_msg(name, seq)
            except Exception:  # deleted or expired between info and get
                continue
            out += (msg.subject or "").encode() + b"\n" + (msg.data or b"") + b"\n"
            out += repr(msg.headers or {}).encode() + b"\n"
    return bytes(out)


async def _stream_names(bus: Bus) -> AsyncIterator[str]:
    for info in await bus.js.streams_info():
        yield info.config.name or ""


def assert_clean(where: str, text: bytes | str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in (PASSWORD, COOKIE_VALUE, S3_SECRET):
        assert secret.encode() not in data, f"{secret!r} found in {where}"


async def test_no_secret_in_logs_events_kv_or_answers(
    stack: Stack, fake_tiktok: FakeTikTok
) -> None:
    await fake_tiktok.create_user("grace", age_restricted=True)
    await fake_tiktok.go_live("grace")
    task_id = await stack.record(
        url="@grace",
        duration=4,
        options={"proxy": stack.proxy.url(), "cookies": "tiktok.txt", "upload_s3": True},
    )
    job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job

    async def uploaded() -> bool:
        return bool((await stack.job(task_id))["result"]["s3"])

    await eventually(uploaded, timeout=30)
    # The recording really went through the proxy (API calls and the stream) with the cookie.
    assert stack.proxy.refused == 0
    assert any(path.endswith(".flv") for path in stack.proxy.requests)
    seen = await fake_tiktok.requests()
    assert any(r["cookies"].get("sessionid") == COOKIE_VALUE for r in seen)

    # A wrong password: the job fails, and its error names no secret either.
    wrong = "WRONG-pr0xy-0e5d"
    failing = await stack.record(
        url="@grace", duration=4, options={"proxy": stack.proxy.url(password=wrong)}
    )
    failed = await stack.wait(failing, "FAILURE", "SUCCESS", timeout=60)
    assert failed["status"] == "FAILURE"
    assert stack.proxy.refused > 0

    answers = [
        (await stack.client.get(f"/jobs/{t}", headers=stack.headers)).text
        for t in (task_id, failing)
    ]
    for answer in answers:
        assert_clean("an API answer", answer)
        assert wrong not in answer
    nats = await everything_in_nats(stack.bus)
    assert_clean("NATS", nats)
    assert wrong.encode() not in nats
    out = stack.logs.readouterr()
    lines = out.out + out.err
    assert "recorder.finished" in lines  # the capture did see the services' logs
    assert_clean("the logs", lines)
    assert wrong not in lines


# --- NATS credentials -----------------------------------------------------------------------

NATS_PASSWORDS = {user: f"nats-PASS-{user}-5e7a91" for user in ("gateway", "recorder", "uploader")}
NKEY_SEED = "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"


def assert_no_nats_secret(where: str, text: bytes | str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in (*NATS_PASSWORDS.values(), NKEY_SEED, NKEY_SEED[:20]):
        assert secret.encode() not in data, f"a NATS secret found in {where}"


async def test_no_nats_password_or_seed_in_logs_events_kv_or_answers(
    tmp_path: Path,
    fake_tiktok: FakeTikTok,
    monkeypatch: pytest.MonkeyPatch,
    logs: pytest.CaptureFixture[str],
) -> None:
    auth = tmp_path / "nats-auth"
    for user, password in NATS_PASSWORDS.items():  # kept_passwords keeps what it finds
        (auth / user).mkdir(parents=True)
        (auth / user / "password").write_text(password + "\n")
    creds = dev_credentials(auth, SERVER_CONF)
    # The service user's password is in the server's config (mode 600), nowhere else.
    assert NATS_PASSWORDS["gateway"] in creds.server_conf.read_text()
    async with NatsServer(tmp_path / "nats", config=creds.server_conf) as server:

        def as_user(user: str, provision: bool = False) -> NatsClientSettings:
            return NatsClientSettings(
                nats_url=server.client_url,
                nats_user=user,
                nats_password_file=creds.password_files[user],
                nats_provision=provision,
            )

        provisioner = await Bus.connect(
            [server.client_url], service="provisioner", auth=as_user("provisioner", True)
        )
        assert provisioner is not None
        await provisioner.provision(durables=DURABLES)
        await provisioner.close()
        # The gateway reads its NATS settings from the environment, as in a container.
        monkeypatch.setenv("NATS_USER", "gateway")
        monkeypatch.setenv("NATS_PASSWORD_FILE", str(creds.password_files["gateway"]))
        monkeypatch.setenv("NATS_PROVISION", "false")
        common = {"nats_url": server.client_url, "recordings_dir": tmp_path / "recordings"}
        gw = GatewaySettings(**common, api_keys=[KEY], rate_limit_per_min=100_000)
        rec = RecorderSettings(
            **common,
            instance_id="rec-1",
            tiktok_web_base=fake_tiktok.base_url,
            tiktok_webcast_base=fake_tiktok.base_url,
            read_timeout=2.0,
            **fake_tiktok.egress_settings,
        )
        recorder = await Bus.connect(
            [server.client_url], service="recorder", auth=as_user("recorder")
        )
        operator = await Bus.connect([server.client_url], service="op", auth=as_user("operator"))
        assert recorder is not None
        assert operator is not None
        try:
            async with NatsLink(gw) as link, RecorderService(recorder, rec):
                await link.wait_connected()
                transport = httpx.ASGITransport(app=create_app(gw, link=link))
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                    api = JobsApi(client, KEY)
                    await fake_tiktok.create_user("nina")
                    await fake_tiktok.go_live("nina")
                    task_id = await api.record(url="@nina", duration=3)
                    job = await api.wait(task_id, "SUCCESS", "FAILURE", timeout=60)
                    assert job["status"] == "SUCCESS", job
                    answers = [
                        (await client.get(f"/jobs/{task_id}", headers=api.headers)).text,
                        (await client.get("/services", headers=api.headers)).text,
                        (await client.get("/ready")).text,
                    ]
            # A refused password, and settings that cannot work: said without the secret.
            wrong = tmp_path / "wrong"
            wrong.write_text(NATS_PASSWORDS["uploader"] + "-not\n")
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(1.5, stop.set)
            refused = await Bus.connect(
                [server.client_url],
                service="uploader",
                stop=stop,
                auth=NatsClientSettings(
                    nats_url=server.client_url, nats_user="uploader", nats_password_file=wrong
                ),
            )
            assert refused is None
            seed = tmp_path / "seed"
            seed.write_text(NKEY_SEED + "\n")
            errors = []
            for bad in (
                {"nats_nkey_seed_file": seed, "nats_user": "u", "nats_password": NKEY_SEED},
                {"nats_nkey_seed_file": seed},
                {"nats_password": NATS_PASSWORDS["uploader"]},
            ):
                with pytest.raises(SettingsError) as caught:
                    NatsClientSettings(**bad)  # type: ignore[arg-type]
                errors.append(str(caught.value))
            nats = await everything_in_nats(operator)
        finally:
            await recorder.close()
            await operator.close()
    for answer in answers:
        assert_no_nats_secret("an API answer", answer)
    assert_no_nats_secret("NATS (events, KV)", nats)
    assert b"recording.finished" in nats  # the dump did see the events
    for error in errors:
        assert_no_nats_secret("a settings error", error)
    out = logs.readouterr()
    lines = out.out + out.err
    assert "recorder.finished" in lines
    assert "nats.connect_failed" in lines  # the refused password was logged, not shown
    assert "Authorization Violation" in lines
    assert_no_nats_secret("the logs", lines)
