"""The Dockerfile builds a slim, non-root image whose settings and healthcheck match the code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from services.recorder.ffmpeg import ffmpeg_binary
from shared.ops_http import OpsServer
from tests.unit.deploy.helpers import METRICS_PORT, ROOT, SERVICE_UID, all_env_names, service


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    found = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def runtime_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_image_is_slim_python_and_runs_as_a_non_root_user() -> None:
    args = {}
    for word, rest in dockerfile():
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    base = runtime_stage()[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert base.startswith("python:3.12-slim")
    users = [rest for word, rest in runtime_stage() if word == "USER"]
    assert users, "no USER: the services would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert int(user) == SERVICE_UID  # numeric, so runAsNonRoot can verify it


def test_image_environment_is_made_of_real_settings() -> None:
    python_env = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PATH"}
    names = set()
    for word, rest in runtime_stage():
        if word == "ENV":
            names |= {pair.split("=", 1)[0] for pair in shlex.split(rest)}
    assert names - python_env <= all_env_names()


def test_image_healthcheck_probes_healthz_without_a_shell() -> None:
    code = image_healthcheck_code()
    compile(code, "healthcheck", "exec")
    assert "/healthz" in code


def image_healthcheck_code() -> str:
    (check,) = [rest for word, rest in runtime_stage() if word == "HEALTHCHECK"]
    argv = json.loads(check[check.index("CMD") + 3 :])
    assert argv[:2] == ["python", "-c"]
    assert isinstance(argv[2], str)
    return argv[2]


async def exit_code(code: str, env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env={"PATH": os.environ["PATH"], **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return await proc.wait()


async def test_healthchecks_pass_on_a_live_ops_server_and_fail_without_one() -> None:
    server = OpsServer(0, lambda: True, host="127.0.0.1")
    await server.start()
    port = server.port
    image_check = image_healthcheck_code()
    # compose's check of the recorder, aimed at this server's port instead of 9100.
    compose_check = service("recorder")["healthcheck"]["test"][3]
    compose_check = compose_check.replace(f":{METRICS_PORT}/", f":{port}/")
    env = {"METRICS_PORT": str(port), "GATEWAY_PORT": str(port)}
    try:
        assert await exit_code(image_check, env) == 0
        assert await exit_code(compose_check, {}) == 0
    finally:
        await server.close()
    assert await exit_code(image_check, env) == 1
    assert await exit_code(compose_check, {}) != 0


def test_image_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "var", "tests"} <= ignored
    for word, rest in dockerfile():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source not in ignored, source


def test_ffmpeg_linked_onto_path_from_the_wheel_is_what_the_recorder_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the Dockerfile does: link the imageio-ffmpeg binary as `ffmpeg` on PATH.
    import imageio_ffmpeg

    (tmp_path / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("PATH", str(tmp_path))
    found = ffmpeg_binary()
    assert found == str(tmp_path / "ffmpeg")
    version = subprocess.run([found, "-hide_banner", "-version"], capture_output=True, check=True)
    assert version.stdout.startswith(b"ffmpeg version")
