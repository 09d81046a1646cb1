"""Downloads and thumbnails through the gateway, a real indexer and uploader, a local S3 server
and real ffmpeg: GET /files/{id}/content with Range (206, 416) or a 302 to a presigned URL,
GET /files/{id}/thumbnail, ownership, and paths that lead out of RECORDINGS_DIR."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.gateway.api_keys import key_id
from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from services.recorder.ffmpeg import ffmpeg_binary
from services.uploader.service import UploaderService
from services.uploader.settings import UploaderSettings
from shared.bus import Bus
from shared.events import RecordedFile, RecordingFinished
from shared.jobs import JobRequest
from shared.thumbnails import thumbnail_key
from tests.helpers import decode_errors, eventually, free_port, job_store
from tests.s3_server import S3Server
from tlr.client.commands import main as tlr_client
from tlr.nats_server import NatsServer

KEY = "k-downloads"
H = {"X-API-Key": KEY}
OTHER = {"X-API-Key": "k-downloads-other"}
ADMIN = {"X-API-Key": "k-downloads-admin"}
ROOM = "7000000000000000042"
BUCKET = "downloads"
WIDTH, HEIGHT, SECONDS = 320, 240, 4


def make_mp4(path: Path) -> None:
    """A short H.264 + AAC MP4 made now by the real ffmpeg (a keyframe every second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [ffmpeg_binary(None), "-nostdin", "-v", "error", "-y"]
    argv += ["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate=10"]
    argv += ["-f", "lavfi", "-i", "sine=frequency=440"]
    argv += ["-t", str(SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-g", "10"]
    argv += ["-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    subprocess.run(argv, check=True, timeout=60)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    at = 2
    while at + 9 < len(data):
        assert data[at] == 0xFF
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            return int.from_bytes(data[at + 7 : at + 9], "big"), height
        at += 2 + length
    msg = "no start-of-frame segment"
    raise AssertionError(msg)


@dataclass
class Stack:
    client: httpx.AsyncClient  # a gateway that reads RECORDINGS_DIR
    remote: httpx.AsyncClient  # one on another host: no recordings volume (FILES_LOCAL=false)
    bus: Bus
    root: Path
    s3: S3Server

    async def finish(
        self, job_id: str, files: list[str], *, upload: bool = False, owner: str = key_id(KEY)
    ) -> None:
        """A finished job of ``owner`` whose files (under the root) are listed as recorded."""
        store = await job_store(self.bus)
        await store.submit(JobRequest(job_id=job_id, room_id=ROOM, owner=owner))
        recorded = []
        for i, rel in enumerate(files):
            full = self.root / rel
            size = full.lstat().st_size
            recorded.append(RecordedFile(path=rel, size=size, duration_s=SECONDS, part=i))
        await self.bus.publish(
            RecordingFinished(job_id=job_id, room_id=ROOM, files=recorded, upload_s3=upload)
        )

    async def listed(self, job_id: str, **want: Any) -> dict[str, Any]:
        """The job's first file in GET /files once it shows ``want``."""
        found: dict[str, Any] = {}

        async def shows() -> bool:
            r = await self.client.get("/files", params={"job_id": job_id}, headers=ADMIN)
            items = r.json()["items"] if r.status_code == 200 else []
            if items and all(items[0].get(k) == v for k, v in want.items()):
                found.update(items[0])
                return True
            return False

        await eventually(shows, timeout=30)
        return found


@pytest.fixture
async def stack(
    nats_server: NatsServer, bus: Bus, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    root = tmp_path / "recordings"
    root.mkdir()
    common: dict[str, Any] = {"nats_url": nats_server.client_url, "recordings_dir": root}
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"root {ADMIN['X-API-Key']} role=admin\n")
    gateway: dict[str, Any] = {
        **common,
        "api_keys": [KEY, OTHER["X-API-Key"]],
        "api_keys_file": keys_file,
        "rate_limit_per_min": 100_000,
        "s3_endpoint_url": s3_server.endpoint_url,
    }
    local = GatewaySettings(**gateway)
    remote = GatewaySettings(**gateway, files_local=False)
    indexer = IndexerSettings(**common, instance_id="idx-1", index_db=tmp_path / "index.sqlite3")
    uploader = UploaderSettings(
        **common,
        instance_id="up-1",
        s3_bucket=BUCKET,
        s3_endpoint_url=s3_server.endpoint_url,
        delete_local_after_upload=True,
    )
    async with (
        IndexerService(bus, indexer),
        UploaderService(bus, uploader),
        NatsLink(local) as link,
    ):
        await link.wait_connected()
        apps = [create_app(local, link=link), create_app(remote, link=link)]
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=apps[0]), base_url="http://gw", headers=H
            ) as client,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=apps[1]), base_url="http://gw2", headers=H
            ) as other_host,
        ):
            yield Stack(client, other_host, bus, root, s3_server)


async def test_a_local_file_downloads_whole_or_by_range(stack: Stack) -> None:
    rel = f"{ROOM}/job-local_0.mp4"
    make_mp4(stack.root / rel)
    data = (stack.root / rel).read_bytes()
    size = len(data)
    assert size > 5000
    await stack.finish("job-local", [rel])
    item = await stack.listed("job-local", thumbnail=True)
    url = f"/files/{item['id']}/content"

    whole = await stack.client.get(url)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert "job-local_0.mp4" in whole.headers["content-disposition"]

    for asked, start, end in (
        ("bytes=0-99", 0, 99),  # the first bytes
        ("bytes=1000-1999", 1000, 1999),  # the middle
        ("bytes=-500", size - 500, size - 1),  # the last 500 (a suffix)
        (f"bytes={size - 10}-", size - 10, size - 1),  # from an offset to the end
        (f"bytes={size - 10}-{size + 1000}", size - 10, size - 1),  # clipped at the end
    ):
        part = await stack.client.get(url, headers={"Range": asked})
        assert part.status_code == 206, asked
        assert part.content == data[start : end + 1], asked
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}", asked
        assert int(part.headers["content-length"]) == end - start + 1

    for asked in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        refused = await stack.client.get(url, headers={"Range": asked})
        assert refused.status_code == 416, asked
        assert refused.json()["error_code"] == "RANGE_NOT_SATISFIABLE"
        assert refused.headers["content-range"] == f"bytes */{size}"

    # A stale If-Range (the file changed since the client's copy): the whole file again.
    stale = await stack.client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200
    assert stale.content == data
    fresh = await stack.client.get(
        url, headers={"Range": "bytes=0-9", "If-Range": whole.headers["etag"]}
    )
    assert fresh.status_code == 206

    head = await stack.client.head(url)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == size
    assert head.content == b""

    # Ownership as for GET /files: another key's file does not exist for it; an admin's all.
    assert (await stack.client.get(url, headers=OTHER)).status_code == 404
    assert (await stack.client.get(url, headers=ADMIN)).content == data
    missing = await stack.client.get("/files/999999/content")
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "NOT_FOUND"

    # The thumbnail: a JPEG the size of the video that ffmpeg decodes cleanly.
    thumb = await stack.client.get(f"/files/{item['id']}/thumbnail")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert jpeg_size(thumb.content) == (WIDTH, HEIGHT)
    saved = stack.root.parent / "thumb.jpg"
    saved.write_bytes(thumb.content)
    assert decode_errors(saved) == ""


async def test_a_file_only_in_s3_redirects_to_a_presigned_url(stack: Stack) -> None:
    rel = f"{ROOM}/job-s3_0.mp4"
    make_mp4(stack.root / rel)
    data = (stack.root / rel).read_bytes()
    await stack.finish("job-s3", [rel], upload=True)
    # Uploaded, then removed locally (DELETE_LOCAL_AFTER_UPLOAD): only S3 has it now.
    item = await stack.listed("job-s3", local=False, thumbnail=True)
    assert not (stack.root / rel).exists()
    key = item["s3"]["key"]

    moved = await stack.client.get(f"/files/{item['id']}/content")
    assert moved.status_code == 302
    assert moved.headers["cache-control"] == "no-store"
    location = moved.headers["location"]
    assert location.startswith(stack.s3.endpoint_url)
    assert "X-Amz-Expires=300" in location
    async with httpx.AsyncClient() as web:
        fetched = await web.get(location)
        assert fetched.status_code == 200
        assert fetched.content == data
        head = await stack.client.head(f"/files/{item['id']}/content")
        assert head.status_code == 302
        assert (await web.head(head.headers["location"])).status_code == 200

        # The thumbnail went beside the file; a gateway without the volume sends there.
        async with stack.s3.client() as s3:
            await s3.head_object(Bucket=BUCKET, Key=thumbnail_key(key))
        thumb = await stack.remote.get(f"/files/{item['id']}/thumbnail")
        assert thumb.status_code == 302
        image = await web.get(thumb.headers["location"])
        assert image.status_code == 200
        assert jpeg_size(image.content) == (WIDTH, HEIGHT)


async def test_a_local_only_file_on_a_gateway_without_the_volume_is_a_conflict(
    stack: Stack,
) -> None:
    rel = f"{ROOM}/job-here_0.mp4"
    make_mp4(stack.root / rel)
    await stack.finish("job-here", [rel])
    item = await stack.listed("job-here", thumbnail=True)
    far = await stack.remote.get(f"/files/{item['id']}/content")
    assert far.status_code == 409
    assert far.json()["error_code"] == "CONFLICT"


async def test_paths_leading_out_of_the_recordings_folder_are_refused(stack: Stack) -> None:
    outside = stack.root.parent / "outside"
    outside.mkdir()
    secret = outside / "secret.mp4"
    secret.write_bytes(b"not yours " * 100)
    (stack.root / ROOM).mkdir()
    # A recording that is a symlink to a file outside: listed (its name was recorded), never
    # served; no thumbnail is made from it either.
    (stack.root / ROOM / "evil_0.mp4").symlink_to(secret)
    await stack.finish("job-evil", [f"{ROOM}/evil_0.mp4"])
    item = await stack.listed("job-evil")
    assert item["thumbnail"] is False
    r = await stack.client.get(f"/files/{item['id']}/content")
    assert r.status_code == 409
    assert b"not yours" not in r.content

    for bad in ("..%2F..%2Fetc%2Fpasswd", "-1", "0", "1e3", str(2**63)):
        refused = await stack.client.get(f"/files/{bad}/content")
        assert refused.status_code in (404, 422), bad
        assert refused.json()["error_code"] in ("VALIDATION_ERROR", "NOT_FOUND"), bad


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """``app`` on a real port (the CLI is an ordinary HTTP client); its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = _Server(config)
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def test_tlr_files_get_downloads_and_resumes(stack: Stack, tmp_path: Path) -> None:
    local, uploaded = f"{ROOM}/job-cli_0.mp4", f"{ROOM}/job-cli-s3_0.mp4"
    make_mp4(stack.root / local)
    make_mp4(stack.root / uploaded)
    data = (stack.root / local).read_bytes()
    uploaded_data = (stack.root / uploaded).read_bytes()
    await stack.finish("job-cli", [local])
    await stack.finish("job-cli-s3", [uploaded], upload=True)
    item = await stack.listed("job-cli")
    in_s3 = await stack.listed("job-cli-s3", local=False)
    transport = stack.client._transport
    assert isinstance(transport, httpx.ASGITransport)

    async with served(transport.app) as url:

        async def tlr(*argv: str) -> int:
            common = ["--api", url, "--api-key", KEY]
            return await asyncio.to_thread(tlr_client, ["files", "get", *argv, *common])

        whole = tmp_path / "whole.mp4"
        assert await tlr(str(item["id"]), "-o", str(whole)) == 0
        assert whole.read_bytes() == data

        # A download cut short: the next run asks only for the rest (Range) and appends it.
        partial = tmp_path / "partial.mp4"
        partial.write_bytes(data[:1000])
        assert await tlr(str(item["id"]), "-o", str(partial)) == 0
        assert partial.read_bytes() == data
        assert await tlr(str(item["id"]), "-o", str(partial)) == 0  # complete: nothing to do
        assert partial.read_bytes() == data

        # Only in S3: the CLI follows the presigned URL (without the API key), resuming too.
        from_s3 = tmp_path / "from_s3.mp4"
        from_s3.write_bytes(uploaded_data[:777])
        assert await tlr(str(in_s3["id"]), "-o", str(from_s3)) == 0
        assert from_s3.read_bytes() == uploaded_data

        # Another key's file, or none: the API's 404, exit 1, nothing written.
        nothing = tmp_path / "nothing.mp4"
        assert await tlr("999999", "-o", str(nothing)) == 1
        assert not nothing.exists()
