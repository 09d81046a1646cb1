"""Injection payloads in every input of every endpoint: a 4xx with an error code, nothing on disk.

Shell metacharacters, traversals, file URLs, newlines, NUL bytes and a 10 MB body go into each
body field, query parameter, path parameter and meaningful header. NATS, the scheduler and the
indexer really run, so what answers is validation, never a 503; afterwards no event was
published, no job stored, and no file under the test's roots was created or changed.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nats.js.errors
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.secrets import new_key
from shared.subjects import EVENTS_STREAM, JOBS_BUCKET
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

KEY = "k-injection"
ROOM = "7503448765740976902"
BIG = 10 * 1024 * 1024
PAYLOADS = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "../../etc/passwd",
    "file:///etc/passwd",
    "a\nX-Injected: 1",
    "a\x00b",
]
# What a payload would leave behind if anything acted on it.
TRACES = ("rm -rf", "$(id)", "`", "\n", "\x00", "passwd", "etc", "X-Injected")
SENTINEL = "root:x:0:0:SENTINEL-CONTENT:/root:/bin/sh\n"
COOKIE_SECRET = "SECRET-VALUE-THAT-MUST-NOT-LEAK"
# Names that pass the gateway's pattern but not load_cookies in COOKIES_DIR.
BAD_COOKIES = [
    "escape.txt",
    "sub/link/passwd",
    "sub",
    "huge.txt",
    "garbage.txt",
    "other-site.json",
    "fifo.txt",
    "missing.txt",
]
COOKIES = ".tiktok.com\tTRUE\t/\tTRUE\t2000000000\tsessionid\tinjection-cookie\n"
# Valid bodies: each case replaces one field, so the field is what gets refused.
RECORDING = {
    "room_id": ROOM,
    "duration": 60,
    "output_template": "{room_id}/{timestamp}.mp4",
    "options": {
        "upload_s3": False,
        "proxy": "http://user:pass@proxy.example:8080",
        "cookies": "alice.txt",
        "quality": "hd",
    },
}
WATCHER = {
    "room_id": ROOM,
    "poll_interval": 60,
    "options": {
        "upload_s3": False,
        "proxy": "http://user:pass@proxy.example:8080",
        "cookies": "alice.txt",
        "quality": "hd",
        "output_template": "{room_id}/{timestamp}.mp4",
    },
}
BODY_FIELDS = {
    "/recordings": (RECORDING, ["room_id", "url", "duration", "output_template"]),
    "/watchers": (WATCHER, ["room_id", "url", "poll_interval"]),
}
OPTION_FIELDS = ["upload_s3", "proxy", "cookies", "quality"]
QUERIES = {
    "/watchers": ["page", "page_size"],
    "/files": ["room_id", "url", "job_id", "from", "to", "page", "page_size"],
}
PATHS = [
    ("GET", "/jobs/{}"),
    ("DELETE", "/jobs/{}"),
    ("GET", "/watchers/{}"),
    ("DELETE", "/watchers/{}"),
    ("POST", "/watchers/{}/pause"),
    ("POST", "/watchers/{}/resume"),
]
# Every operation, with inputs that pass: the headers are then what is on trial.
OPERATIONS = [
    ("GET", "/healthz", None),
    ("GET", "/ready", None),
    ("GET", "/services", None),
    ("POST", "/recordings", RECORDING),
    ("POST", "/watchers", WATCHER),
    ("GET", "/watchers", None),
    ("GET", f"/watchers/{ROOM}", None),
    ("DELETE", f"/watchers/{ROOM}", None),
    ("POST", f"/watchers/{ROOM}/pause", None),
    ("POST", f"/watchers/{ROOM}/resume", None),
    ("GET", "/jobs/0b9e3f4e-0000-4000-8000-000000000000", None),
    ("DELETE", "/jobs/0b9e3f4e-0000-4000-8000-000000000000", None),
    ("GET", "/files", None),
    ("POST", "/files/rebuild", None),
]
PUBLIC = {"/healthz", "/ready"}


@dataclass
class Stack:
    client: httpx.AsyncClient
    bus: Bus
    root: Path  # recordings, cookies and the sentinel: nothing here may change
    tmp: Path


@pytest.fixture
async def stack(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[Stack]:
    root = tmp_path / "root"
    cookies = root / "cookies"
    sentinel = root / "sentinel"
    for folder in (root / "recordings", cookies, sentinel, tmp_path / "state"):
        folder.mkdir(parents=True)
    (sentinel / "passwd").write_text(SENTINEL)
    (cookies / "alice.txt").write_text(COOKIES)
    # Cookie files that must each be refused: escapes by symlink, too big, not cookies, not
    # for TikTok, not a regular file.
    (cookies / "escape.txt").symlink_to(sentinel / "passwd")
    (cookies / "sub").mkdir()
    (cookies / "sub" / "link").symlink_to(sentinel)
    (cookies / "huge.txt").write_text(COOKIES + f"# {COOKIE_SECRET}\n" * 10_000)
    (cookies / "garbage.txt").write_text(f"not a cookies file {COOKIE_SECRET}\n")
    (cookies / "other-site.json").write_text(json.dumps({"cookies": []}))
    os.mkfifo(cookies / "fifo.txt")
    common: dict[str, Any] = {
        "nats_url": nats_server.client_url,
        "tiktok_web_base": fake_tiktok.base_url,
        "tiktok_webcast_base": fake_tiktok.base_url,
        "recordings_dir": root / "recordings",
        "cookies_dir": cookies,
        "secret_key": new_key(),
    }
    # Payloads in X-API-Key fail authentication by the dozen: not what this test is about.
    gateway = GatewaySettings(
        api_keys=[KEY], rate_limit_per_min=1_000_000, auth_failures_per_min=1_000_000, **common
    )
    scheduler = SchedulerSettings(
        instance_id="sched-inj", scheduler_db=tmp_path / "state" / "scheduler.sqlite3", **common
    )
    indexer = IndexerSettings(
        instance_id="indexer-inj", index_db=tmp_path / "state" / "index.sqlite3", **common
    )
    async with (
        SchedulerService(bus, scheduler),
        IndexerService(bus, indexer),
        NatsLink(gateway) as link,
    ):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gateway, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Stack(client, bus, root, tmp_path)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


def traces(root: Path, allowed: Path) -> list[str]:
    """Names under ``root`` that look like a payload acted upon (``allowed`` aside)."""
    hits = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            if any(t in name for t in TRACES) and path != allowed:
                hits.append(str(path))
    return hits


def disk(stack: Stack) -> dict[str, object]:
    """What no request may change: the roots, the sentinel, /etc/passwd, payload-named
    files in the test's tmp dir or in the working directory."""
    sentinel = stack.root / "sentinel" / "passwd"
    passwd = Path("/etc/passwd")
    return {
        "root": snapshot(stack.root),
        "sentinel": sentinel.read_text(),
        "/etc/passwd": passwd.stat().st_mtime_ns if passwd.exists() else None,
        "traces": traces(stack.tmp, allowed=sentinel),
        "cwd traces": [p.name for p in Path.cwd().iterdir() if any(t in p.name for t in TRACES)],
    }


async def event_count(bus: Bus) -> int:
    return (await bus.js.stream_info(EVENTS_STREAM)).state.messages


async def job_keys(bus: Bus) -> list[str]:
    try:
        keys: list[str] = await (await bus.kv(JOBS_BUCKET)).keys()
    except nats.js.errors.NoKeysError:
        return []
    return keys


@pytest.fixture
async def untouched(stack: Stack) -> AsyncIterator[None]:
    """After the test: no event, no job, no file created or changed, no payload-named file."""
    before = disk(stack)
    assert before["traces"] == before["cwd traces"] == []
    events = await event_count(stack.bus)
    yield
    assert await event_count(stack.bus) == events
    assert await job_keys(stack.bus) == []
    assert disk(stack) == before


def refused(r: httpx.Response, *statuses: int) -> list[str]:
    """Problems with an answer that must refuse: status, error body, echoes."""
    problems = []
    if r.status_code not in statuses:
        problems.append(f"status {r.status_code}: {r.text[:200]}")
        return problems
    body = r.json()
    if set(body) != {"error_code", "error_message", "correlation_id"} or not body["error_code"]:
        problems.append(f"not the error body: {r.text[:200]}")
    if body.get("correlation_id") != r.headers.get("x-correlation-id"):
        problems.append("correlation id missing or different from the header")
    return problems


def with_field(base: dict[str, Any], path: list[str], value: object) -> dict[str, Any]:
    body = copy.deepcopy(base)
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    if path == ["url"]:
        del body["room_id"]  # one of room_id or url: the url is then what is checked
    return body


def body_cases() -> Iterator[tuple[str, list[str]]]:
    for endpoint, (_, fields) in BODY_FIELDS.items():
        for field in fields:
            yield endpoint, [field]
        for field in OPTION_FIELDS:
            yield endpoint, ["options", field]
    yield "/watchers", ["options", "output_template"]


@pytest.mark.usefixtures("untouched")
async def test_payloads_in_body_fields_are_422_naming_the_field(stack: Stack) -> None:
    problems = []
    for endpoint, path in body_cases():
        base = BODY_FIELDS[endpoint][0]
        for payload in PAYLOADS:
            r = await stack.client.post(
                endpoint, json=with_field(base, path, payload), headers={"X-API-Key": KEY}
            )
            where = f"POST {endpoint} {'.'.join(path)}={payload!r}"
            found = refused(r, 422)
            if not found and ".".join(path) not in r.json()["error_message"]:
                found.append(f"message names no field: {r.json()['error_message']}")
            problems += [f"{where}: {p}" for p in found]
        # An unknown field named like a payload: refused, and its name not echoed.
        r = await stack.client.post(
            endpoint, json={**BODY_FIELDS[endpoint][0], "$(id)": 1}, headers={"X-API-Key": KEY}
        )
        problems += [f"POST {endpoint} unknown field: {p}" for p in refused(r, 422)]
        if "$(id)" in r.text:
            problems.append(f"POST {endpoint}: unknown field name echoed")
    assert problems == []


@pytest.mark.usefixtures("untouched")
async def test_payloads_in_query_parameters_are_422(stack: Stack) -> None:
    problems = []
    for endpoint, params in QUERIES.items():
        for param in params:
            for payload in PAYLOADS:
                r = await stack.client.get(
                    endpoint, params={param: payload}, headers={"X-API-Key": KEY}
                )
                found = refused(r, 422)
                if not found and param not in r.json()["error_message"]:
                    found.append(f"message names no field: {r.json()['error_message']}")
                problems += [f"GET {endpoint}?{param}={payload!r}: {p}" for p in found]
    assert problems == []


@pytest.mark.usefixtures("untouched")
async def test_payloads_in_path_parameters_are_refused(stack: Stack) -> None:
    problems = []
    for method, template in PATHS:
        for payload in PAYLOADS:
            # Fully encoded, '/' too: the app sees the payload itself, not a shorter path.
            path = template.format(quote(payload, safe=""))
            r = await stack.client.request(method, path, headers={"X-API-Key": KEY})
            # 422 for a malformed task id; 404 for a key or id that names nothing.
            problems += [f"{method} {path}: {p}" for p in refused(r, 404, 422)]
    assert problems == []


@pytest.mark.usefixtures("untouched")
async def test_payloads_in_headers(stack: Stack) -> None:
    problems = []
    for method, path, body in OPERATIONS:
        content = json.dumps(body).encode() if body is not None else None
        for payload in PAYLOADS:
            where = f"{method} {path}"
            # As the API key: unknown, 403 (401 where it is empty of anything usable).
            headers = {"X-API-Key": payload, "Content-Type": "application/json"}
            r = await stack.client.request(method, path, headers=headers, content=content)
            if path not in PUBLIC:
                problems += [f"{where} X-API-Key={payload!r}: {p}" for p in refused(r, 401, 403)]
            # As the correlation id: never echoed, replaced by a fresh one.
            headers = {"X-API-Key": KEY, "X-Correlation-ID": payload}
            if body is None:
                r = await stack.client.request(method, path, headers=headers)
                if r.status_code >= 500 or payload in r.headers["x-correlation-id"]:
                    problems.append(f"{where} X-Correlation-ID={payload!r}: {r.status_code}")
                if payload in r.text:
                    problems.append(f"{where} X-Correlation-ID={payload!r}: echoed in the body")
            # As the content type of a body: 415.
            if content is not None:
                headers = {"X-API-Key": KEY, "Content-Type": payload}
                r = await stack.client.request(method, path, headers=headers, content=content)
                problems += [f"{where} Content-Type={payload!r}: {p}" for p in refused(r, 415)]
        for r in (
            await stack.client.request(method, path, headers={"X-API-Key": KEY}),
            await stack.client.request(method, path, headers={"X-Correlation-ID": "a\nb: c"}),
        ):
            if any("\n" in v or "\x00" in v for v in r.headers.values()):
                problems.append(f"{where}: a response header holds a control character")
    assert problems == []


@pytest.mark.usefixtures("untouched")
async def test_ten_megabytes_anywhere_are_413(stack: Stack) -> None:
    problems = []
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    for endpoint, path in body_cases():
        content = json.dumps(with_field(BODY_FIELDS[endpoint][0], path, "A" * BIG)).encode()
        r = await stack.client.post(endpoint, content=content, headers=headers)
        problems += [f"POST {endpoint} {'.'.join(path)}: {p}" for p in refused(r, 413)]
    for method, path, _ in OPERATIONS:
        r = await stack.client.request(method, path, content=b"A" * BIG, headers=headers)
        problems += [f"{method} {path}: {p}" for p in refused(r, 413)]

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(BIG // 65536):
            yield b"A" * 65536

    for endpoint in BODY_FIELDS:
        r = await stack.client.post(endpoint, content=chunked(), headers=headers)
        problems += [f"POST {endpoint} chunked: {p}" for p in refused(r, 413)]
    assert problems == []


@pytest.mark.usefixtures("untouched")
async def test_cookies_are_checked_in_cookies_dir_without_echoing_them(stack: Stack) -> None:
    problems = []
    for name in BAD_COOKIES:
        for endpoint in BODY_FIELDS:
            body = with_field(BODY_FIELDS[endpoint][0], ["options", "cookies"], name)
            r = await stack.client.post(endpoint, json=body, headers={"X-API-Key": KEY})
            found = refused(r, 422)
            if not found and not r.json()["error_message"].startswith("options.cookies: "):
                found.append(f"message names no field: {r.json()['error_message']}")
            if COOKIE_SECRET in r.text or "SENTINEL-CONTENT" in r.text:
                found.append("file content echoed")
            problems += [f"POST {endpoint} cookies={name!r}: {p}" for p in found]
    assert problems == []
