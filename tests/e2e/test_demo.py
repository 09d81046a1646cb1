"""`tlr demo` as a user runs it: a fake live is recorded, uploaded, indexed and listed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


async def test_demo_records_a_playable_mp4_and_every_service_counts_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("NATS_URL", "API_KEYS", "GATEWAY_PORT", "RECORDINGS_DIR"):
        env.pop(name, None)  # the demo picks its own
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tlr.cli",
        "demo",
        "--dir",
        str(tmp_path / "demo"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    assert re.search(r"\.mp4 .* plays \(decoded without an error\)", text), text[-4000:]
    assert '"status": "SUCCESS"' in text
    assert "s3://tlr-demo/" in text  # uploaded to the demo's S3 server
    mp4s = list((tmp_path / "demo" / "stack" / "recordings").rglob("*.mp4"))
    assert mp4s
    # The /metrics of all five services were read and none of the key figures was zero
    # (the demo itself fails otherwise); check that each service was reported.
    for service in ("gateway", "scheduler", "recorder", "uploader", "indexer"):
        assert re.search(rf"^\s+{service}\s+http://127\.0\.0\.1:\d+/metrics$", text, re.M), service
    # One correlation id follows the job through the JSON logs of every service.
    cid = re.search(r"correlation_id ([0-9a-f-]{36})", text)
    assert cid, text[-4000:]
    lines = []
    for raw in (tmp_path / "demo" / "stack.log").read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    mine = [line for line in lines if line.get("correlation_id") == cid.group(1)]
    assert {line["service"] for line in mine} == {
        "gateway",
        "scheduler",
        "recorder",
        "uploader",
        "indexer",
    }
    finished = [line for line in mine if line["msg"] == "recorder.finished"]
    assert len(finished) == 1
    for field in ("ts", "level", "service", "task_id", "room_id", "url", "duration", "returncode"):
        assert finished[0].get(field) is not None, field
    assert finished[0]["returncode"] == 0
    # Everything the demo started is gone: nothing listens on the ports it printed.
    ports = {int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)/", text)}
    assert ports
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
