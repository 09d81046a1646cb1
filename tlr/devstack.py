"""``tlr up``: the dev supervisor. Embedded nats-server, then the five services as children.

Every child gets the supervisor's environment, so one set of variables points the whole stack
at another NATS, recordings folder or TikTok base URL. Children run in their own sessions: a
Ctrl-C reaches only the supervisor, which stops the services first (they drain), then NATS.

The embedded nats-server runs locked: one user per service with only the permissions that
service needs (shared/nats_auth.py), passwords kept in ``var/nats-auth/<user>/password`` (mode
600). Each child gets only its own user and password file, and ``NATS_PROVISION=false``: the
supervisor provisions streams, buckets and durables as the ``provisioner`` user before it
starts them, and again after it restarts a NATS that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.gateway.settings import GatewaySettings
from shared.bus import TRANSIENT, Bus
from shared.config import NatsClientSettings
from shared.logging import get_logger
from shared.nats_auth import OPERATOR, PROVISIONER
from shared.runtime import stop_on_signals
from shared.secrets import new_key
from shared.subjects import DURABLES
from tlr.nats_auth import DevCredentials, dev_credentials
from tlr.nats_server import NatsServer, die_with_parent

log = get_logger(__name__)

SERVICES = ("gateway", "scheduler", "recorder", "uploader", "indexer", "notifier")
REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_CONF = REPO_ROOT / "nats" / "server.conf"
# NATS credentials a child must never inherit from the supervisor: it gets its own.
NATS_CREDENTIAL_VARS = (
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_PASSWORD_FILE",
    "NATS_CREDS_FILE",
    "NATS_NKEY_SEED_FILE",
)


class DevStackSettings(BaseSettings):
    """Settings of ``tlr up`` itself (the services read their own)."""

    model_config = SettingsConfigDict(env_prefix="TLR_", env_ignore_empty=True, extra="ignore")

    var_dir: Path = Field(Path("var"), description="Where `tlr up` keeps NATS data, key and pids")
    embedded_nats: bool = Field(True, description="Start a local nats-server (false: use NATS_URL)")
    nats_port: int = Field(4222, ge=0, description="Client port of the embedded nats-server")
    nats_monitor_port: int = Field(8222, ge=0, description="Monitoring port of embedded NATS")
    recorders: int = Field(1, ge=1, le=64, description="How many recorder processes to start")
    metrics_port_base: int = Field(
        9101, ge=0, description="First METRICS_PORT given to the non-gateway services (0 = off)"
    )
    stop_grace: float = Field(20.0, gt=0, description="Seconds a service gets to drain on stop")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: float = field(default=0.5)
    output: IO[bytes] | None = None  # None: the supervisor's own stdout

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is not None else None,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def kept_secret(var_dir: Path, name: str, make: Callable[[], str]) -> str:
    """A dev secret made once and kept in ``var/<name>`` (mode 600) so it survives restarts."""
    path = var_dir / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    var_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def _new_api_key() -> str:
    return "dev-" + secrets.token_urlsafe(24)


DEV_KEY_NAME = "dev"


def dev_api_key(env: dict[str, str], var_dir: Path) -> str | None:
    """The development key (kept in ``var/dev-api-key``) put in ``env``'s API_KEYS, only when
    the operator gave no key: never one beside API_KEYS_FILE's. None when none was made.

    It is an admin's (it sees every job and may rebuild the index, as the one user of a dev
    stack must): ``var/dev-api-keys`` (API_KEYS_FILE) names it ``dev`` with ``role=admin``,
    and the file's entry of a key listed in both places wins.
    """
    if env.get("API_KEYS") or env.get("API_KEYS_FILE"):
        return None
    key = kept_secret(var_dir, "dev-api-key", _new_api_key)
    keys_file = var_dir / "dev-api-keys"
    keys_file.touch(mode=0o600)
    keys_file.chmod(0o600)  # before the key is in it
    keys_file.write_text(f"# made by tlr up from dev-api-key\n{DEV_KEY_NAME} {key} role=admin\n")
    env["API_KEYS"] = key
    env["API_KEYS_FILE"] = str(keys_file)
    return key


def child_specs(
    stack: DevStackSettings, env: dict[str, str], creds: DevCredentials | None = None
) -> list[Child]:
    """The services' processes; with ``creds`` (embedded NATS), each with only its own user."""
    children = []
    port = stack.metrics_port_base
    for name in SERVICES:
        copies = stack.recorders if name == "recorder" else 1
        for i in range(copies):
            child_env = dict(env)
            if creds is not None:
                for var in NATS_CREDENTIAL_VARS:
                    child_env.pop(var, None)
                child_env.update(creds.env_for(name))
            child_env["INSTANCE_ID"] = f"{name}-{i + 1}"
            if name != "gateway":  # the gateway serves /metrics on its API port
                child_env["METRICS_PORT"] = str(port if port else 0)
                port = port + 1 if port else 0
            argv = [sys.executable, "-m", f"services.{name}"]
            children.append(Child(f"{name}-{i + 1}", argv, child_env))
    return children


async def wait_ready(url: str, *, timeout: float) -> bool:
    """Poll the gateway's /ready until 200 or ``timeout``: start-up only."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while loop.time() < deadline:
            try:
                if (await client.get(f"{url}/ready")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    return False


async def up(
    stack: DevStackSettings | None = None,
    *,
    stop: asyncio.Event | None = None,
    output: IO[bytes] | None = None,
) -> int:
    """Run the stack until SIGINT/SIGTERM (or ``stop``); return the exit code.

    ``tlr demo`` passes its own ``stop`` and an ``output`` file for the services' logs.
    """
    stack = stack or DevStackSettings()
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)
    var_dir = stack.var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    dev_key = dev_api_key(env, var_dir)
    env.setdefault("SECRET_KEY", kept_secret(var_dir, "secret-key", new_key))
    env.setdefault("COOKIES_DIR", str(var_dir / "cookies"))
    env.setdefault("SCHEDULER_DB", str(var_dir / "scheduler.sqlite3"))
    env.setdefault("INDEX_DB", str(var_dir / "index.sqlite3"))
    env.setdefault("RECORDINGS_DIR", str(var_dir / "recordings"))
    env.setdefault("LOG_FORMAT", "json")
    env.setdefault("METRICS_HOST", "127.0.0.1")  # a dev machine keeps its ops ports to itself
    env.setdefault("PYTHONUNBUFFERED", "1")  # log lines appear as they happen

    nats: NatsServer | None = None
    creds: DevCredentials | None = None
    if stack.embedded_nats:
        creds = dev_credentials(var_dir / "nats-auth", SERVER_CONF)
        nats = NatsServer(
            var_dir / "nats",
            port=stack.nats_port,
            http_port=stack.nats_monitor_port,
            config=creds.server_conf,
        )
        await nats.start()
        env["NATS_URL"] = nats.client_url
        await provision(nats.client_url, creds, replicas=env.get("NATS_REPLICAS"), stop=stop)

    gateway = GatewaySettings()  # host and port, as the gateway child reads them
    children = child_specs(stack, env, creds)
    for child in children:
        child.output = output
        child.start()
    _write_pids(var_dir, nats, children)
    host = "127.0.0.1" if gateway.gateway_host in ("0.0.0.0", "::") else gateway.gateway_host
    api = f"http://{host}:{gateway.gateway_port}"
    try:
        if await wait_ready(api, timeout=30):
            if output is None:
                _banner(api, env, nats, children, dev_key=dev_key, creds=creds)
        else:
            log.error("devstack.not_ready", api=api)
        await _supervise(stop, nats, children, var_dir, creds, env.get("NATS_REPLICAS"))
    finally:
        await _shutdown(children, nats, stack.stop_grace)
        (var_dir / "run" / "pids.json").unlink(missing_ok=True)
    return 0


async def provision(
    url: str, creds: DevCredentials, *, replicas: str | None, stop: asyncio.Event
) -> None:
    """Create or update every stream, bucket and durable as the ``provisioner`` user: the
    services' own users may not (they only wait until it is done)."""
    auth = NatsClientSettings(
        nats_url=url,
        nats_user=PROVISIONER,
        nats_password_file=creds.password_files[PROVISIONER],
        nats_provision=True,
    )
    bus = await Bus.connect(
        [url], service=PROVISIONER, replicas=int(replicas or 1), stop=stop, auth=auth
    )
    if bus is None:
        return
    try:
        delay = 0.2
        while not stop.is_set():
            try:
                await bus.provision(durables=DURABLES)
                return
            except TRANSIENT as exc:  # JetStream not ready yet on a restarted server
                log.warning("devstack.provision_retry", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
    finally:
        await bus.close()


async def _supervise(
    stop: asyncio.Event,
    nats: NatsServer | None,
    children: list[Child],
    var_dir: Path,
    creds: DevCredentials | None = None,
    replicas: str | None = None,
) -> None:
    """Restart whatever dies (a dev convenience: kill NATS and it comes back on its store)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if stop.is_set():
            return
        if nats is not None and not nats.running:
            log.warning("devstack.nats_exited_restarting")
            try:
                await nats.start()
                if creds is not None:  # its store may be gone: the services only wait
                    await provision(nats.client_url, creds, replicas=replicas, stop=stop)
            except RuntimeError as exc:
                log.error("devstack.nats_restart_failed", error=str(exc))
            _write_pids(var_dir, nats, children)
        for child in children:
            if not child.alive:
                code = child.proc.returncode if child.proc else None
                log.warning("devstack.child_exited", child=child.name, returncode=code)
                await asyncio.sleep(child.backoff)
                child.backoff = min(child.backoff * 2, 10.0)
                child.restarts += 1
                child.start()
                _write_pids(var_dir, nats, children)


async def _shutdown(children: list[Child], nats: NatsServer | None, grace: float) -> None:
    for child in children:
        if child.alive and child.proc:
            child.proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    for child in children:
        if child.proc is None:
            continue
        try:
            await asyncio.wait_for(
                asyncio.to_thread(child.proc.wait), max(0.1, deadline - loop.time())
            )
        except TimeoutError:
            log.warning("devstack.child_killed", child=child.name)
            child.proc.kill()
            await asyncio.to_thread(child.proc.wait)
    if nats is not None:
        await nats.stop()
    log.info("devstack.stopped")


def _write_pids(var_dir: Path, nats: NatsServer | None, children: list[Child]) -> None:
    pids = {c.name: c.proc.pid for c in children if c.proc}
    if nats is not None and nats.proc is not None:
        pids["nats-server"] = nats.proc.pid
    run = var_dir / "run"
    run.mkdir(exist_ok=True)
    (run / "pids.json").write_text(json.dumps(pids, indent=2) + "\n")


def _banner(
    api: str,
    env: dict[str, str],
    nats: NatsServer | None,
    children: list[Child],
    *,
    dev_key: str | None = None,
    creds: DevCredentials | None = None,
) -> None:
    """The start banner. It shows an API key only when ``tlr up`` made it for development:
    a key from API_KEYS or API_KEYS_FILE is the operator's secret and never goes to a log."""
    if dev_key is not None:
        shown, key = dev_key, dev_key
    else:
        source = "API_KEYS_FILE" if env.get("API_KEYS_FILE") else "API_KEYS"
        shown, key = f"(yours, from {source}; not shown)", "<your key>"
    lines = [
        "",
        "TikTok LIVE recorder is up.",
        f"  API:      {api}   (docs: {api}/docs)",
        f"  API key:  {shown}",
        f"  NATS:     {env.get('NATS_URL', 'nats://127.0.0.1:4222')}",
    ]
    if nats is not None:
        lines.append(f"  NATS monitoring: {nats.monitor_url}")
    if creds is not None:
        operator = creds.password_files[OPERATOR]
        lines.append(
            f"  NATS users: one per service, passwords in {operator.parent.parent}/<user>/password"
            f' (nats CLI: --user {OPERATOR} --password "$(cat {operator})")'
        )
    ops = [
        f"{c.name} :{c.env['METRICS_PORT']}"
        for c in children
        if c.env.get("METRICS_PORT", "0") != "0"
    ]
    if ops:
        # /metrics, /healthz and /ready; the gateway serves them on the API port.
        lines.append(f"  Metrics:  {api}/metrics, " + ", ".join(ops))
    lines += [
        f'  Try:      curl -H "X-API-Key: {key}" {api}/services',
        "  Stop:     Ctrl-C",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
