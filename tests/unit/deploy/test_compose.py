"""compose.yaml follows the Compose Specification and runs the services as their settings expect."""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.gateway.api_keys import ApiKeyRegistry, parse_keys_file
from services.gateway.settings import GatewaySettings
from shared.nats_auth import PROVISIONER, SERVICE_USERS, connect_options
from tests.unit.deploy.helpers import (
    METRICS_PORT,
    MIN_NATS,
    ROOT,
    RUNTIME_DIR,
    SERVICES,
    SETTINGS,
    all_env_names,
    compose,
    compose_env,
    env_names,
    interpolated_default,
    metrics_port,
    mounts,
    seconds,
    service,
    version_of,
)
from tlr.nats_auth import make_tls

NATS_RUN = "/run/nats"


def compose_spec_errors(document: dict[str, Any]) -> list[str]:
    """Errors of ``document`` against the Compose Specification's JSON Schema, as vendored by
    check-jsonschema (what `docker compose config` would refuse, without a Docker engine)."""
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text(encoding="utf-8")
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_follows_the_compose_specification() -> None:
    assert compose_spec_errors(compose()) == []


def test_the_compose_specification_check_can_fail() -> None:
    broken = {"services": {"recorder": {"image": "tlr", "stop_grace_period": ["90s"]}}}
    assert compose_spec_errors(broken)
    assert compose_spec_errors({"services": {"x": {"image": "tlr", "stop_grace": "90s"}}})


def test_compose_has_the_five_services_and_the_ops_stack() -> None:
    expected = {*SERVICES, "nats", "minio", "prometheus", "grafana"}
    assert expected <= set(compose()["services"])


@pytest.mark.parametrize("name", SERVICES)
def test_compose_runs_each_service_module_from_the_one_image(name: str) -> None:
    svc = service(name)
    assert svc["command"] == ["python", "-m", f"services.{name}"]
    assert (ROOT / "services" / name / "__main__.py").is_file()
    assert svc["build"] == "."
    assert svc["depends_on"]["nats"] == {"condition": "service_healthy"}


def test_every_path_compose_references_exists() -> None:
    referenced: list[str] = []
    for name, svc in compose()["services"].items():
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            referenced.append(context)
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            referenced.append(f"{context}/{dockerfile or 'Dockerfile'}")
        for source, _ in mounts(name):
            if source.startswith((".", "/")):
                referenced.append(source)
    # A file secret whose file is missing stops `docker compose up` (the bind mount fails).
    referenced += [interpolated_default(s["file"]) for s in compose().get("secrets", {}).values()]
    assert referenced, "compose.yaml references no file at all?"
    runtime = []
    missing = []
    for path in referenced:
        assert not path.startswith("/"), f"absolute host path {path}: use a path in the repo"
        rel = Path(path)
        if rel.parts and rel.parts[0] == RUNTIME_DIR:
            runtime.append(path)
            continue
        if not (ROOT / rel).exists():
            missing.append(path)
    assert missing == []
    # Runtime folders live under var/, which git ignores and `make clean` removes.
    assert runtime, "expected the cookies folder under var/"
    assert f"{RUNTIME_DIR}/" in (ROOT / ".gitignore").read_text().split()


def test_config_files_are_mounted_where_the_commands_read_them() -> None:
    nats = service("nats")
    assert ("./nats/server.conf", "/etc/nats/server.conf") in mounts("nats")
    assert ("./nats/compose.conf", "/etc/nats/compose.conf") in mounts("nats")
    assert nats["command"][:2] == ["-c", "/etc/nats/compose.conf"]
    # compose.conf adds the users and TLS to server.conf, from the nats-auth volume.
    includes = re.findall(r"^include (\S+)", (ROOT / "nats/compose.conf").read_text(), re.M)
    assert includes == ["./server.conf", "./auth/auth.conf"]
    assert ("nats-auth", "/etc/nats/auth") in mounts("nats")
    prometheus = service("prometheus")
    assert (
        "./deploy/prometheus/prometheus.yml",
        "/etc/prometheus/prometheus.yml",
    ) in mounts("prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


@pytest.mark.parametrize("name", SERVICES)
def test_compose_sets_only_real_settings(name: str) -> None:
    unknown = set(compose_env(name)) - env_names(name)
    assert unknown == set(), f"{name} would ignore {sorted(unknown)}"


@pytest.mark.parametrize("name", SERVICES)
def test_compose_environment_values_are_accepted_by_the_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in list(os.environ):
        if key in all_env_names():
            monkeypatch.delenv(key)
    # The files of the nats-auth volume, where the container sees them (/run/nats).
    run_nats = tmp_path / "run-nats"
    make_tls(run_nats, ["nats"])
    (run_nats / "password").write_text("p\n")
    for key, value in compose_env(name).items():
        monkeypatch.setenv(key, value.replace(NATS_RUN, str(run_nats)))
    settings = SETTINGS[name]()
    if name != "gateway":
        assert settings.metrics_port == METRICS_PORT
    assert settings.nats_servers == ["tls://nats:4222"]
    assert settings.nats_user == name
    assert settings.nats_provision is False
    assert connect_options(settings).tls is True


def test_the_recorder_can_be_scaled() -> None:
    recorder = service("recorder")
    assert "container_name" not in recorder
    assert "ports" not in recorder
    # Long enough to finalize (remux) the open segment of every recording.
    assert seconds(recorder["stop_grace_period"]) >= 60


def test_recorder_uploader_and_indexer_share_the_recordings_volume() -> None:
    named = set(compose()["volumes"])
    targets = set()
    for name in ("recorder", "uploader", "indexer"):
        recordings = compose_env(name)["RECORDINGS_DIR"]
        sources = {src for src, dst in mounts(name) if dst == recordings}
        assert len(sources) == 1, f"{name}: RECORDINGS_DIR {recordings} is not a volume"
        targets |= sources
    assert len(targets) == 1
    assert targets <= named


@pytest.mark.parametrize(
    ("name", "variable"), [("indexer", "INDEX_DB"), ("scheduler", "SCHEDULER_DB")]
)
def test_sqlite_state_is_on_a_named_volume(name: str, variable: str) -> None:
    folder = str(Path(compose_env(name)[variable]).parent)
    (source,) = [src for src, dst in mounts(name) if dst == folder]
    assert source in compose()["volumes"], f"{name}: {folder} is not a named volume"


@pytest.mark.parametrize("name", SERVICES)
def test_healthcheck_calls_healthz_on_the_service_port_without_a_shell(name: str) -> None:
    test = service(name)["healthcheck"]["test"]
    assert isinstance(test, list)
    assert test[:3] == ["CMD", "python", "-c"], "exec form: the slim image has no curl"
    code = test[3]
    compile(code, "healthcheck", "exec")
    assert f"http://127.0.0.1:{metrics_port(name)}/healthz" in code


def test_nats_runs_a_recent_server_with_jetstream_on_a_volume() -> None:
    nats = service("nats")
    assert nats["image"].startswith("nats:")
    assert version_of(nats["image"])[:2] >= MIN_NATS
    assert any(dst == "/data" for _, dst in mounts("nats"))
    assert nats["command"][-2:] == ["-sd", "/data"]
    assert "8222" in " ".join(nats["ports"])
    assert "http://127.0.0.1:8222/healthz" in nats["healthcheck"]["test"]
    assert "http_port: 8222" in (ROOT / "nats" / "server.conf").read_text()


def test_uploader_uses_the_minio_bucket_created_at_start() -> None:
    env = compose_env("uploader")
    assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
    init = service("minio-init")
    assert init["image"].startswith("minio/mc:")
    assert interpolated_default(init["command"][-1]) == f"local/{env['S3_BUCKET']}"
    assert "@minio:9000" in init["environment"]["MC_HOST_local"]
    assert service("uploader")["depends_on"]["minio-init"] == {
        "condition": "service_completed_successfully"
    }
    # One pair of variables: MinIO's root user is the uploader's S3 user in the dev stack.
    minio = service("minio")["environment"]
    assert interpolated_default(minio["MINIO_ROOT_USER"]) == env["AWS_ACCESS_KEY_ID"]
    assert interpolated_default(minio["MINIO_ROOT_PASSWORD"]) == env["AWS_SECRET_ACCESS_KEY"]


def test_published_ports_bind_to_loopback_only() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the network"


def _nats_auth_mount(name: str) -> dict[str, Any] | None:
    for vol in service(name).get("volumes", []):
        if isinstance(vol, dict) and vol.get("source") == "nats-auth":
            return vol
    return None


@pytest.mark.parametrize("name", [*SERVICES, "nats-provision"])
def test_each_service_mounts_only_its_own_nats_credentials(name: str) -> None:
    user = PROVISIONER if name == "nats-provision" else name
    assert user in (*SERVICE_USERS, PROVISIONER)
    mount = _nats_auth_mount(name)
    assert mount is not None, f"{name} has no NATS credentials"
    assert mount["target"] == NATS_RUN
    assert mount["read_only"] is True
    assert mount["volume"]["subpath"] == user  # its folder only: its password and the CA
    env = compose_env(name)
    assert env["NATS_USER"] == user
    assert env["NATS_PASSWORD_FILE"] == f"{NATS_RUN}/password"
    assert "NATS_PASSWORD" not in env
    assert env["NATS_TLS_CA"] == f"{NATS_RUN}/ca.pem"
    assert env["NATS_URL"].startswith("tls://")


def test_nats_requires_users_and_tls_made_once_by_a_one_shot() -> None:
    auth = service("nats-auth")
    assert auth["command"] == ["python", "-m", "tlr.nats_auth", "generate", "/state"]
    assert ("nats-auth", "/state") in mounts("nats-auth")
    assert auth["restart"] == "no"
    assert service("nats")["depends_on"]["nats-auth"] == {
        "condition": "service_completed_successfully"
    }
    assert "nats-auth" in compose()["volumes"]


def test_only_the_provisioner_provisions_and_services_wait_for_it() -> None:
    prov = service("nats-provision")
    assert prov["command"] == ["python", "-m", "tlr.nats_auth", "provision"]
    assert prov["restart"] == "no"
    assert prov["depends_on"]["nats"] == {"condition": "service_healthy"}
    for name in SERVICES:
        assert service(name)["depends_on"]["nats-provision"] == {
            "condition": "service_completed_successfully"
        }
        assert compose_env(name)["NATS_PROVISION"] == "false"


@pytest.mark.parametrize(
    ("name", "variable", "default"),
    [
        ("recorder", "RECORDER_REPLICAS", "2"),
        ("uploader", "UPLOADER_REPLICAS", "1"),
        ("indexer", "INDEXER_REPLICAS", "1"),
        ("scheduler", "SCHEDULER_REPLICAS", "1"),
        ("notifier", "NOTIFIER_REPLICAS", "1"),
    ],
)
def test_replica_counts_come_from_the_environment(name: str, variable: str, default: str) -> None:
    # `docker compose up` (the runbook's upgrade) keeps the count instead of resetting to one.
    replicas = service(name)["deploy"]["replicas"]
    assert replicas == f"${{{variable}:-{default}}}"
    assert f"{name.upper()}_REPLICAS" == variable
    assert "<SERVICE>_REPLICAS" in (ROOT / "docs" / "runbook.md").read_text()


# --- API keys -----------------------------------------------------------------------------------

SECRETS_DIR = "/run/secrets"


def test_the_gateway_reads_api_keys_file_from_a_read_only_secret() -> None:
    env = compose_env("gateway")
    assert env["API_KEYS"], "API_KEYS keeps working beside the file"
    (entry,) = service("gateway")["secrets"]
    # Compose mounts a secret read-only at /run/secrets/<target> (a bind mount outside swarm).
    assert env["API_KEYS_FILE"] == f"{SECRETS_DIR}/{entry['target']}"
    definition = compose()["secrets"][entry["source"]]
    assert set(definition) == {"file"}, "a file secret: `environment` would put the keys in env"
    # An operator names their own file; the default is the example, which lists no key.
    assert definition["file"] == "${API_KEYS_SECRET_FILE:-./deploy/api-keys.example}"
    default = ROOT / interpolated_default(definition["file"])
    assert parse_keys_file(default.read_text()) == []
    # No other service sees the keys.
    for name, svc in compose()["services"].items():
        assert name == "gateway" or "secrets" not in svc, name
        assert name == "gateway" or "API_KEYS_FILE" not in (svc.get("environment") or {}), name


def test_the_gateway_starts_with_the_compose_api_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The mounted file as the gateway reads it: the default (no key) beside API_KEYS, and an
    operator's file that makes one admin."""
    for key in list(os.environ):
        if key in all_env_names():
            monkeypatch.delenv(key)
    env = compose_env("gateway")
    monkeypatch.setenv("API_KEYS", env["API_KEYS"])
    admin_key = "a" * 64
    mine = tmp_path / "api-keys"
    mine.write_text(f"ops {admin_key} 600 role=admin\n")
    default = ROOT / interpolated_default(compose()["secrets"]["api-keys"]["file"])
    for host_file, count in ((default, 1), (mine, 2)):
        # The container's API_KEYS_FILE, here the host's file itself.
        monkeypatch.setenv("API_KEYS_FILE", str(host_file))
        registry = ApiKeyRegistry.from_settings(GatewaySettings())
        assert len(registry) == count
        bare = registry.lookup(env["API_KEYS"])
        assert bare is not None
        assert not bare.admin
    admin = registry.lookup(admin_key)
    assert admin is not None
    assert (admin.name, admin.admin, admin.rate_limit) == ("ops", True, 600)
