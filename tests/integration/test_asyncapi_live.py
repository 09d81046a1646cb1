"""What the running services put on NATS is what the AsyncAPI document says.

A wildcard subscriber records every message while the whole path runs: a watcher (gateway),
its live detected (scheduler), recorded (recorder), uploaded with the local copy removed
(uploader), indexed (indexer), paused, resumed and deleted, and an on-demand recording. Every
subject that is not a NATS internal must be a channel of the document, every event message
must match its payload and header schemas, and every event type must have been seen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import nats
from nats.aio.msg import Msg
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from services.uploader.service import UploaderService
from services.uploader.settings import UploaderSettings
from shared import asyncapi
from shared.bus import Bus
from shared.events import EVENT_TYPES
from shared.subjects import subject_for
from tests.helpers import eventually

# The gateway, scheduler and recorder of the watcher flow, behind its REST client.
from tests.integration.test_watcher_flow import Api, api  # noqa: F401
from tests.s3_server import S3Server
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

FAKE_TIKTOK_OPTIONS = {"speed": 4.0}
# JetStream API and acks, KV, inboxes (replies, pull deliveries), micro discovery, and the
# gateway's rate-limit counters: NATS machinery, not part of the contract.
INTERNAL = ("$JS.", "$KV.", "_INBOX.", "$SRV.", "ratelimit.")
MUST_SEE = {"watch.requested", "room.live", "recording.started", "recording.finished"}
# Events this flow has no part in, and where each is published by its service and checked:
# the egress pool's admin routes (test_egress_pool.py) and a recorder's WAF report through a
# pool egress (test_recorder_egress.py); their payloads against the document in
# tests/unit/test_asyncapi.py's samples.
ELSEWHERE = {"egress.added", "egress.removed", "egress.failed"}
DOC_URI = "urn:tlr:asyncapi"


class Catalogue:
    """The document's channels, and validators for the messages of its event channels."""

    def __init__(self, doc: dict[str, Any]) -> None:
        registry: Registry[Any] = Registry().with_resource(
            DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
        )
        self.addresses = {c["address"] for c in doc["channels"].values() if c.get("address")}
        self.events: dict[str, tuple[jsonschema.Draft202012Validator, ...]] = {}
        for channel in doc["channels"].values():
            if "x-stream" not in channel:
                continue
            (ref,) = channel["messages"].values()
            pointer = ref["$ref"].removeprefix("#")
            payload = {"$ref": f"{DOC_URI}#{pointer}/payload"}
            headers = {"$ref": f"{DOC_URI}#{pointer}/headers"}
            self.events[channel["address"]] = (
                jsonschema.Draft202012Validator(payload, registry=registry),
                jsonschema.Draft202012Validator(headers, registry=registry),
            )

    def check(self, msg: Msg) -> None:
        assert msg.subject in self.addresses, f"{msg.subject} is published but not documented"
        if msg.subject in self.events:
            payload, headers = self.events[msg.subject]
            payload.validate(json.loads(msg.data))
            headers.validate(dict(msg.headers or {}))


async def test_every_subject_the_services_publish_is_in_the_document(
    api: Api,  # noqa: F811
    bus: Bus,
    nats_server: NatsServer,
    fake_tiktok: FakeTikTok,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    catalogue = Catalogue(asyncapi.build())
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        if not msg.subject.startswith(INTERNAL):
            seen.append(msg)

    def subjects() -> set[str]:
        return {m.subject for m in seen}

    # Its own connection, subscribed before anything is asked: it sees every publish.
    spy = await nats.connect(nats_server.client_url)
    await spy.subscribe(">", cb=record)
    await spy.flush()
    common: dict[str, Any] = {
        "nats_url": nats_server.client_url,
        "recordings_dir": tmp_path / "recordings",  # the recorder's, in the api fixture
    }
    up = UploaderSettings(
        **common,
        instance_id="up-1",
        s3_bucket="recordings",
        s3_endpoint_url=s3_server.endpoint_url,
        delete_local_after_upload=True,
    )
    idx = IndexerSettings(**common, instance_id="idx-1", index_db=tmp_path / "index.sqlite3")
    try:
        async with UploaderService(bus, up), IndexerService(bus, idx):
            await fake_tiktok.create_user("ivy")
            await fake_tiktok.go_live("ivy")
            await api.watch(url="@ivy", poll_interval=10, options={"upload_s3": True})

            async def recording() -> bool:
                w = await api.watcher("@ivy")
                job_id = w.json().get("current_job_id") if w.status_code == 200 else None
                if not job_id:
                    return False
                job = await api.job(job_id)
                return job["status"] == "STARTED" and job["progress"]["segments"] > 0

            await eventually(recording, timeout=20, interval=0.1)
            # Pausing ends the recording: its files are uploaded, then removed locally.
            r = await api.client.post("/watchers/@ivy/pause", headers=api.headers)
            assert r.status_code == 200, r.text
            await eventually(lambda: _has(subjects, "upload.done", "file.deleted"), timeout=20)
            r = await api.client.post("/watchers/@ivy/resume", headers=api.headers)
            assert r.status_code == 200, r.text
            r = await api.client.patch(
                "/watchers/@ivy", json={"poll_interval": 20}, headers=api.headers
            )
            assert r.status_code == 202, r.text
            r = await api.client.delete("/watchers/@ivy", headers=api.headers)
            assert r.status_code == 200, r.text
            await api.record(url="@nobody")  # on demand; ends at once: no such user
            every_event = {subject_for(t) for t in EVENT_TYPES} - ELSEWHERE
            await eventually(lambda: _has(subjects, *every_event), timeout=15)
    finally:
        await spy.close()

    assert subjects() >= MUST_SEE
    for msg in seen:
        catalogue.check(msg)


async def _has(subjects: Any, *wanted: str) -> bool:
    return set(wanted) <= subjects()
