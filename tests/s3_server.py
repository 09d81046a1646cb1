"""pytest plugin: `s3_server`, a real S3-compatible HTTP server (moto's server mode) on localhost.

The server runs as its own process on a free port, so a test can stop it (an outage: every
connection is refused) and start it again on the same port. Like a store that lost its disk,
a restarted server is empty: buckets and objects are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from tests.helpers import free_port

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

REGION = "us-east-1"
START_TIMEOUT = 30.0


class S3Server:
    """A moto server process on ``127.0.0.1:<port>``."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self) -> None:
        """Start (or restart) the server on its port and return once it answers."""
        assert not self.running, "already running"
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                await self.stop()
                msg = f"moto server exited at start; see {self.log_path}"
                raise RuntimeError(msg)
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    await self.stop()
                    msg = f"moto server did not listen within {START_TIMEOUT}s"
                    raise RuntimeError(msg) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self) -> None:
        """Stop the server: from now on connections to its port are refused."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self) -> AbstractAsyncContextManager[S3Client]:
        """An S3 client for the test's own checks (the same library the uploader uses)."""
        return get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            config=AioConfig(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 1},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


@pytest.fixture
async def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Server]:
    """A running moto server; fake AWS credentials and region in the environment.

    The shared AWS config files are pointed at nothing, so a developer's real profile or
    credentials can never be picked up by a test.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    server = S3Server(free_port(), tmp_path / "moto.log")
    await server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
