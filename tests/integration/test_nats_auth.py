"""Per-service NATS users on a real nats-server, locked with the config ``tlr up`` generates.

A service's user is refused another service's subjects, no service user can create, update,
purge or delete a stream, bucket or consumer, a client without credentials is refused, and each
service, started for real on its own user, does what it needs.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import IndexerService
from services.notifier.service import NotifierService
from services.notifier.settings import NotifierSettings
from services.recorder.egress_pick import NatsEgressPicker
from services.recorder.service import RecorderService
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from services.uploader.service import UploaderService
from shared import egresses, notifications, watchers
from shared import events as ev
from shared.bus import Bus
from shared.config import NatsClientSettings
from shared.documents import KvDocuments
from shared.egresses import PickReply
from shared.job_store import JobStore
from shared.jobs import JobRequest
from shared.micro import endpoint_subject, ping_all
from shared.nats_auth import ACCESS, PROVISIONER, SERVICE_USERS, tls_context
from shared.notifications import Subscription
from shared.secrets import SecretBox, new_key
from shared.service import BaseService
from shared.subjects import (
    CLAIMS_BUCKET,
    DURABLES,
    EVENTS_STREAM,
    JOBS_BUCKET,
    RATELIMIT_STREAM,
    subject_for,
)
from tests.helpers import eventually
from tests.webhook_receiver import WebhookReceiver
from tlr.devstack import REPO_ROOT as ROOT
from tlr.devstack import SERVER_CONF
from tlr.nats_auth import DevCredentials, dev_credentials, main, provision
from tlr.nats_server import NatsServer

BASE_SERVICES: dict[str, type[BaseService]] = {
    "scheduler": SchedulerService,
    "recorder": RecorderService,
    "uploader": UploaderService,
    "indexer": IndexerService,
    "notifier": NotifierService,
}
DENIED = "permissions violation"


@dataclass
class Locked:
    server: NatsServer
    creds: DevCredentials

    def settings(self, user: str, *, provision: bool = False) -> NatsClientSettings:
        return NatsClientSettings(
            nats_url=self.server.client_url,
            nats_user=user,
            nats_password_file=self.creds.password_files[user],
            nats_provision=provision,
        )

    async def bus(self, user: str, *, provision: bool = False) -> Bus:
        bus = await Bus.connect(
            [self.server.client_url],
            service=user,
            instance=f"{user}-t",
            auth=self.settings(user, provision=provision),
        )
        assert bus is not None
        return bus

    async def raw(self, user: str) -> tuple[Client, list[str]]:
        """A plain client as ``user`` that records the server's errors (permission refusals)."""
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        nc = await nats.connect(
            self.server.client_url,
            user=user,
            password=self.creds.password_files[user].read_text().strip(),
            error_cb=on_error,
            max_reconnect_attempts=0,
        )
        return nc, errors


@pytest.fixture
async def locked(tmp_path: Path) -> AsyncIterator[Locked]:
    creds = dev_credentials(tmp_path / "auth", SERVER_CONF)
    async with NatsServer(tmp_path / "nats", config=creds.server_conf) as server:
        locked = Locked(server, creds)
        provisioner = await locked.bus(PROVISIONER, provision=True)
        await provisioner.provision(durables=DURABLES)
        await provisioner.close()
        yield locked


def test_credentials_are_files_only_their_owner_reads(tmp_path: Path) -> None:
    creds = dev_credentials(tmp_path / "auth", SERVER_CONF)
    for path in [creds.server_conf, *creds.password_files.values()]:
        assert path.stat().st_mode & 0o777 == 0o600
    again = dev_credentials(tmp_path / "auth", SERVER_CONF)  # kept across restarts
    assert {u: p.read_text() for u, p in again.password_files.items()} == {
        u: p.read_text() for u, p in creds.password_files.items()
    }
    env = creds.env_for("uploader")
    assert env["NATS_USER"] == "uploader"
    assert "NATS_PASSWORD" not in env  # a file, never the value
    assert creds.password_files["uploader"].read_text().strip() not in env.values()


async def _quiet(_exc: Exception) -> None:
    pass


# nats-py leaves the refused connection's socket to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_client_without_credentials_is_refused(locked: Locked) -> None:
    once = {"allow_reconnect": False, "connect_timeout": 2, "error_cb": _quiet}
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(locked.server.client_url, **once)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            locked.server.client_url, user="gateway", password="not-the-password", **once
        )
    gc.collect()


async def test_a_publish_to_room_live_without_credentials_is_refused(locked: Locked) -> None:
    """The issue's black-box check on the wire, as any program reaching NATS could try it:
    CONNECT without credentials, then PUB room.live. The server answers Authorization
    Violation, and EVENTS stores nothing (no recorder would ever see that live)."""
    operator, _ = await locked.raw(PROVISIONER)
    js = operator.jetstream()
    before = (await js.stream_info(EVENTS_STREAM)).state.messages
    url = urlsplit(locked.server.client_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert info.startswith(b"INFO ")
        body = ev.encode(_sample(ev.RoomLive))
        subject = subject_for(ev.RoomLive)
        assert subject == "room.live"
        writer.write(
            b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n'
            + f"PUB {subject} {len(body)}\r\n".encode()
            + body
            + b"\r\nPING\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert answer.startswith(b"-ERR 'Authorization Violation'"), answer
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and it hung up
    finally:
        writer.close()
    # Asked after the refusal: a stored message would be counted by now.
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == before
    await operator.close()


async def _refused(nc: Client, errors: list[str], subject: str, data: bytes = b"{}") -> None:
    """The server refuses ``subject`` to this client (its -ERR names it); the message, a
    JetStream API request included, never reaches anyone."""
    errors.clear()
    inbox = nc.new_inbox()
    await nc.publish(subject, data, reply=inbox)
    await nc.flush()

    async def said_so() -> bool:
        return any(DENIED in e and subject.lower() in e for e in errors)

    await eventually(said_so, timeout=2)


@pytest.mark.parametrize(
    ("user", "event"),
    [
        ("gateway", ev.RoomLive),
        ("gateway", ev.UploadDone),
        ("uploader", ev.RecordingRequested),
        ("uploader", ev.RoomLive),
        ("recorder", ev.WatchRequested),
        ("recorder", ev.UploadDone),
        ("scheduler", ev.RecordingFinished),
        ("indexer", ev.RecordingFinished),
    ],
)
async def test_a_service_cannot_publish_another_services_events(
    locked: Locked, user: str, event: type[ev.Event]
) -> None:
    assert event not in ACCESS[user].publishes
    nc, errors = await locked.raw(user)
    try:
        before = (await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages
        await _refused(nc, errors, subject_for(event))
        assert (await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages == before
    finally:
        await nc.close()


async def test_the_gateway_cannot_touch_leases_or_another_services_durable(
    locked: Locked,
) -> None:
    nc, errors = await locked.raw("gateway")
    try:
        await _refused(nc, errors, f"$KV.{CLAIMS_BUCKET}.room.1")
        await _refused(nc, errors, f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.recorders")
        await _refused(nc, errors, "tlr.recorder.status")
    finally:
        await nc.close()
    nc, errors = await locked.raw("uploader")
    try:
        await _refused(nc, errors, f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.indexer")
        await _refused(nc, errors, f"ratelimit.{'a' * 32}")
    finally:
        await nc.close()


async def test_the_recorder_asks_the_scheduler_for_an_egress_and_for_nothing_else(
    locked: Locked, tmp_path: Path
) -> None:
    scheduler = await locked.bus("scheduler")
    settings = SchedulerSettings(
        nats_url=locked.server.client_url,
        nats_user="scheduler",
        nats_password_file=locked.creds.password_files["scheduler"],
        nats_provision=False,
        instance_id="scheduler-t",
        scheduler_db=tmp_path / "scheduler.sqlite3",
    )
    try:
        async with SchedulerService(scheduler, settings):
            recorder = await locked.bus("recorder")
            try:
                # No pool configured: the answer says so, and the job goes direct.
                assert await NatsEgressPicker(recorder.nc).pick(None) == PickReply()
            finally:
                await recorder.close()
            nc, errors = await locked.raw("recorder")
            try:
                await _refused(nc, errors, watchers.GET)  # the watchers are not its business
                await _refused(nc, errors, egresses.LIST)
            finally:
                await nc.close()
    finally:
        await scheduler.close()


@pytest.mark.parametrize("user", SERVICE_USERS)
async def test_no_service_can_purge_delete_or_change_a_stream_bucket_or_consumer(
    locked: Locked, user: str
) -> None:
    admin = await locked.bus("uploader")  # an event in EVENTS and a key in each bucket
    await admin.publish(ev.UploadDone(job_id="j1", correlation_id="c"))
    await (await admin.kv(JOBS_BUCKET)).put("job.j1.up", b"{}")
    await admin.close()
    nc, errors = await locked.raw(user)
    js = nc.jetstream()
    try:
        for stream in (EVENTS_STREAM, f"KV_{JOBS_BUCKET}", f"KV_{CLAIMS_BUCKET}", RATELIMIT_STREAM):
            await _refused(nc, errors, f"$JS.API.STREAM.PURGE.{stream}")
            await _refused(nc, errors, f"$JS.API.STREAM.DELETE.{stream}")
            await _refused(nc, errors, f"$JS.API.STREAM.MSG.DELETE.{stream}", b'{"seq":1}')
            await _refused(nc, errors, f"$JS.API.STREAM.UPDATE.{stream}")
        await _refused(nc, errors, "$JS.API.STREAM.CREATE.ANYTHING")
        for durable in DURABLES:
            await _refused(nc, errors, f"$JS.API.CONSUMER.DELETE.{EVENTS_STREAM}.{durable.name}")
            await _refused(nc, errors, f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}.{durable.name}")
        await _refused(nc, errors, f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}")
        # Everything is still there.
        assert (await js.stream_info(EVENTS_STREAM)).state.messages >= 1
        assert (await js.stream_info(f"KV_{JOBS_BUCKET}")).state.messages >= 1
    finally:
        await nc.close()


async def test_the_provisioner_can_create_but_not_purge_or_delete(locked: Locked) -> None:
    nc, errors = await locked.raw(PROVISIONER)
    try:
        await _refused(nc, errors, f"$JS.API.STREAM.PURGE.{EVENTS_STREAM}")
        await _refused(nc, errors, f"$JS.API.STREAM.DELETE.{EVENTS_STREAM}")
        await _refused(nc, errors, f"$JS.API.CONSUMER.DELETE.{EVENTS_STREAM}.recorders")
        await _refused(nc, errors, f"{subject_for(ev.RoomLive)}")
    finally:
        await nc.close()


async def test_a_service_without_provisioning_rights_waits_for_the_provisioner(
    tmp_path: Path,
) -> None:
    creds = dev_credentials(tmp_path / "auth", SERVER_CONF)
    async with NatsServer(tmp_path / "nats", config=creds.server_conf) as server:
        locked = Locked(server, creds)
        bus = await locked.bus("scheduler")
        try:
            waiting = asyncio.create_task(bus.provision(durables=ACCESS["scheduler"].consumes))
            await asyncio.sleep(1.0)
            assert not waiting.done()  # nothing exists yet, and it may not create anything
            assert "EVENTS/scheduler" in await bus.missing(durables=ACCESS["scheduler"].consumes)
            provisioner = await locked.bus(PROVISIONER, provision=True)
            await provisioner.provision(durables=DURABLES)
            await provisioner.close()
            await asyncio.wait_for(waiting, 5)
        finally:
            await bus.close()


@pytest.mark.parametrize("name", list(BASE_SERVICES))
async def test_each_service_starts_and_works_on_its_own_user(
    locked: Locked, name: str, tmp_path: Path
) -> None:
    service_type = BASE_SERVICES[name]
    bus = await locked.bus(name)
    settings = service_type.settings_type(
        nats_url=locked.server.client_url,
        nats_user=name,
        nats_password_file=locked.creds.password_files[name],
        nats_provision=False,
        instance_id=f"{name}-t",
        recordings_dir=tmp_path / "recordings",
        cookies_dir=tmp_path / "cookies",
        scheduler_db=tmp_path / "scheduler.sqlite3",
        index_db=tmp_path / "index.sqlite3",
    )
    try:
        async with service_type(bus, settings):
            # Its nats.micro service answers the gateway (its $SRV.PING and a status request).
            gateway = await locked.bus("gateway")
            try:

                async def answers() -> bool:
                    return any(r["name"] == name for r in await ping_all(gateway.nc, wait=0.2))

                await eventually(answers, timeout=5)
                if name in ACCESS["gateway"].asks:
                    reply = await gateway.nc.request(
                        endpoint_subject(name, "status"), b"", timeout=2
                    )
                    assert msgspec.json.decode(reply.data)["service"] == name
            finally:
                await gateway.close()
            # It publishes its own events; its durable and buckets answer it.
            for event_type in ACCESS[name].publishes:
                event = _sample(event_type)
                ack = await bus.publish(event)
                assert ack.stream == EVENTS_STREAM
            for durable in ACCESS[name].consumes:
                await bus.js.consumer_info(durable.stream, durable.name)
            for bucket in ACCESS[name].buckets:
                kv = await bus.kv(bucket)
                revision = await kv.put(f"probe.{name}", b"1")
                assert (await kv.get(f"probe.{name}")).revision == revision
                await kv.delete(f"probe.{name}")
            assert await bus.resources_ready()
    finally:
        await bus.close()


async def test_the_gateway_serves_on_its_own_user(
    locked: Locked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a container: Bus.connect reads the NATS_* settings from the environment.
    monkeypatch.setenv("NATS_USER", "gateway")
    monkeypatch.setenv("NATS_PASSWORD_FILE", str(locked.creds.password_files["gateway"]))
    monkeypatch.setenv("NATS_PROVISION", "false")
    settings = GatewaySettings(
        nats_url=locked.server.client_url,
        nats_user="gateway",
        nats_password_file=locked.creds.password_files["gateway"],
        nats_provision=False,
        api_keys=["k-auth"],
        instance_id="gateway-t",
        cookies_dir=tmp_path / "cookies",
        recordings_dir=tmp_path / "recordings",
    )
    link = NatsLink(settings)
    async with link:
        bus = await asyncio.wait_for(link.wait_connected(), 10)
        assert bus.may_provision is False
        app = create_app(settings, link=link)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            headers = {"X-API-Key": "k-auth"}
            assert (await http.get("/ready")).status_code == 200
            created = await http.post(
                "/recordings", json={"room_id": "7001000000000001"}, headers=headers
            )
            assert created.status_code in (200, 201, 202), created.text
            job_id = created.json()["task_id"]
            got = await http.get(f"/jobs/{job_id}", headers=headers)
            assert got.status_code == 200, got.text
            # The rate limiter's counters (RATELIMIT) and the event it published.
            info = await bus.js.stream_info(EVENTS_STREAM)
            assert info.state.messages >= 1


async def test_the_notifier_delivers_on_its_own_user(locked: Locked) -> None:
    """A subscription the gateway's user creates, an event the scheduler's user publishes, a
    webhook the notifier's user delivers: its NOTIFY queue, its KV bucket, its durables."""
    key = new_key()
    box = SecretBox(key)
    notifier = await locked.bus("notifier")
    gateway = await locked.bus("gateway")
    scheduler = await locked.bus("scheduler")
    settings = NotifierSettings(
        nats_url=locked.server.client_url,
        nats_provision=False,
        instance_id="notifier-t",
        secret_key=key,
        allow_private_webhooks=True,
    )
    try:
        async with WebhookReceiver() as receiver, NotifierService(notifier, settings):
            sub = Subscription(
                id="a" * 32,
                owner="alice",
                events=["room.live"],
                kind="webhook",
                target_sealed=box.seal(receiver.url),
                target_shown=receiver.url,
                secret_sealed=box.seal("s3cret"),
            )

            # As the other services' test: asked once it answers (a loaded machine's first
            # request could otherwise come before its subscriptions are everywhere).
            async def answers() -> bool:
                return any(r["name"] == "notifier" for r in await ping_all(gateway.nc, wait=0.2))

            await eventually(answers, timeout=5)
            await gateway.nc.request(notifications.CREATE, msgspec.json.encode(sub), timeout=5)
            await JobStore(KvDocuments(await scheduler.kv(JOBS_BUCKET))).submit(
                JobRequest(job_id="j-auth", owner="alice", watcher_key="1")
            )
            await scheduler.publish(_sample(ev.RoomLive))
            await receiver.wait_for(1)
        assert receiver.requests[0].json()["job_id"] == "j-auth"
    finally:
        for bus in (notifier, gateway, scheduler):
            await bus.close()


def _sample(event_type: type[ev.Event]) -> ev.Event:
    samples: dict[type[ev.Event], ev.Event] = {
        ev.RoomLive: ev.RoomLive(correlation_id="c", room_id="1", job_id="j-auth", watcher_key="1"),
        ev.RecordingStarted: ev.RecordingStarted(
            correlation_id="c", job_id="j", room_id="1", recorder_id="r"
        ),
        ev.RecordingFinished: ev.RecordingFinished(correlation_id="c", job_id="j", room_id="1"),
        ev.UploadDone: ev.UploadDone(correlation_id="c", job_id="j"),
        ev.EgressFailed: ev.EgressFailed(correlation_id="c", name="eu-1", error_code="WAF_BLOCKED"),
        ev.FileDeleted: ev.FileDeleted(correlation_id="c", path="1/a.mp4", reason="retention"),
    }
    return samples[event_type]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_compose_files_require_tls_and_a_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What compose runs: `python -m tlr.nats_auth generate`, nats/compose.conf (server.conf,
    the users, TLS), the provisioner, then a service over TLS with its own user."""
    auth = tmp_path / "auth"
    assert (
        main(["generate", str(auth), "--host", "127.0.0.1", "--server-dir", str(auth / "server")])
        == 0
    )
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(ROOT / "nats" / "server.conf", etc / "server.conf")
    shutil.copy(ROOT / "nats" / "compose.conf", etc / "compose.conf")
    (etc / "auth").symlink_to(auth / "server")
    async with NatsServer(tmp_path / "nats", config=etc / "compose.conf") as server:
        url = f"tls://127.0.0.1:{server.port}"
        monkeypatch.setenv("NATS_URL", url)
        monkeypatch.setenv("NATS_USER", PROVISIONER)
        monkeypatch.setenv("NATS_PASSWORD_FILE", str(auth / PROVISIONER / "password"))
        monkeypatch.setenv("NATS_TLS_CA", str(auth / PROVISIONER / "ca.pem"))
        assert await provision() == 0
        recorder = NatsClientSettings(
            nats_url=url,
            nats_user="recorder",
            nats_password_file=auth / "recorder" / "password",
            nats_tls_ca=auth / "recorder" / "ca.pem",
            nats_provision=False,
        )
        bus = await Bus.connect([url], service="recorder", auth=recorder)
        assert bus is not None
        try:
            await bus.provision(durables=ACCESS["recorder"].consumes)  # exists: returns
            ack = await bus.publish(_sample(ev.RecordingStarted))
            assert ack.stream == EVENTS_STREAM
        finally:
            await bus.close()
        # Without the CA (no TLS context), or without a user, the server is not reached.
        once = {"allow_reconnect": False, "connect_timeout": 2, "error_cb": _quiet}
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(server.client_url, **once)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(url, tls=tls_context(recorder), **once)
        gc.collect()
    for user in (*SERVICE_USERS, PROVISIONER):
        assert (auth / user / "password").stat().st_mode & 0o777 == 0o600
    assert (auth / "server" / "server-key.pem").stat().st_mode & 0o777 == 0o600
    # Run again (a `docker compose up` after the first): nothing changes.
    before = (auth / "gateway" / "password").read_text()
    main(["generate", str(auth), "--host", "127.0.0.1"])
    assert (auth / "gateway" / "password").read_text() == before
