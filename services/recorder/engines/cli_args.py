"""What one run of the upstream CLI is given: its argument list, its environment, its cookies.

Flags as the upstream's ``utils/args_handler.py`` (5eea05a) defines them: ``-room_id`` (or
``-user``), ``-output``, ``-duration`` (whole seconds), ``-proxy``, ``-no-update-check``;
manual mode (the default) and no ``-telegram``. Never a shell string: an argument list.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

# What the CLI gets of our environment: enough to run Python, nothing of ours (NATS and S3
# credentials, SECRET_KEY), plus the names an operator lists in TLR_PASS_ENV.
_BASE_ENV = ("LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


def cli_argv(
    python: Path,
    *,
    room_id: str | None,
    user: str | None,
    output: Path,
    duration: float | None,
    proxy: str | None,
) -> list[str]:
    """The command line (``python -m main`` run from the private copy of ``src``)."""
    argv = [str(python), "-m", "main"]
    if room_id:
        argv += ["-room_id", room_id]
    elif user:
        argv += ["-user", user.lstrip("@")]
    else:
        msg = "a room id or a user is needed"
        raise ValueError(msg)
    argv += ["-output", str(output), "-no-update-check"]
    if duration is not None:
        argv += ["-duration", str(max(1, math.ceil(duration)))]
    if proxy:
        argv += ["-proxy", proxy]
    return argv


def cli_env(
    home: Path, bindir: Path, pass_env: str, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The CLI's environment: ``bindir`` (our ffmpeg) first on PATH, its own HOME."""
    env = {name: environ[name] for name in _BASE_ENV if name in environ}
    for name in (n.strip() for n in pass_env.split(",")):
        if name and name in environ:
            env[name] = environ[name]
    env["PATH"] = os.pathsep.join(p for p in (str(bindir), environ.get("PATH", "")) if p)
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"  # its log lines as they happen
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def write_cookies(path: Path, cookies: Mapping[str, str] | None) -> None:
    """``cookies.json`` as the CLI reads it (a JSON object name -> value), owner-only.
    Always written: the CLI fails without the file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dict(cookies or {}), f)
