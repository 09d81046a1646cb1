"""The deployment files (compose, Prometheus, Grafana, Dockerfile, Kubernetes) match the code."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from nats.js.api import StorageType
from prometheus_client import REGISTRY
from pydantic_settings import BaseSettings

import services
import shared
from services.gateway.settings import GatewaySettings
from services.indexer.settings import IndexerSettings
from services.recorder.ffmpeg import ffmpeg_binary
from services.recorder.settings import RecorderSettings
from services.scheduler.settings import SchedulerSettings
from services.uploader.settings import UploaderSettings
from shared.config import Settings
from shared.ops_http import OpsServer
from shared.subjects import DURABLES, EVENTS_STREAM, RATELIMIT, RECORDERS, UPLOADER

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
GRAFANA = ROOT / "deploy" / "grafana"

SETTINGS: dict[str, type[Settings]] = {
    "gateway": GatewaySettings,
    "scheduler": SchedulerSettings,
    "recorder": RecorderSettings,
    "uploader": UploaderSettings,
    "indexer": IndexerSettings,
}
SERVICES = tuple(SETTINGS)
GATEWAY_PORT = 8000
METRICS_PORT = 9100
# Read by botocore in the uploader's S3 client, not by our settings classes.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
}
# Host paths under var/ are made at run time (var/ is git-ignored): they need not exist.
RUNTIME_DIR = "var"
# The Kubernetes version whose schemas the manifests are checked against.
K8S_VERSION = "1.34.0"
# NATS 2.12 brought message counters (RATELIMIT stream); older servers refuse the stream.
MIN_NATS = (2, 12)
SERVICE_UID = 10001


def env_names(service: str) -> set[str]:
    """The environment variables a service reads: its settings fields, upper-cased."""
    names = {name.upper() for name in SETTINGS[service].model_fields}
    return names | AWS_ENV if service == "uploader" else names


def all_env_names() -> set[str]:
    return set().union(*(env_names(s) for s in SERVICES))


def interpolated_default(value: str) -> str:
    """``${VAR:-default}`` (or ``${VAR-default}``) as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", r"\1", value)


def seconds(duration: str) -> float:
    """A compose duration (``90s``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


def version_of(image: str) -> tuple[int, ...]:
    """``nats:2.15.0-alpine`` -> (2, 15, 0)."""
    tag = image.rsplit(":", 1)[-1]
    found = re.match(r"(\d+(?:\.\d+)*)", tag)
    assert found, image
    return tuple(int(n) for n in found.group(1).split("."))


# --- compose.yaml -----------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    svc = compose()["services"][name]
    assert isinstance(svc, dict)
    return svc


def compose_env(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    assert isinstance(env, dict), f"{name}: environment must be a mapping"
    return {k: interpolated_default(str(v)) for k, v in env.items()}


def mounts(name: str) -> list[tuple[str, str]]:
    """(source, target) of a service's volumes, short or long syntax."""
    found = []
    for vol in service(name).get("volumes", []):
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol["source"], vol["target"]
        found.append((source, target))
    return found


def metrics_port(name: str) -> int:
    """The port Prometheus must scrape: the gateway's API port, else METRICS_PORT."""
    env = compose_env(name)
    if name == "gateway":
        return int(env.get("GATEWAY_PORT", GatewaySettings.model_fields["gateway_port"].default))
    return int(env["METRICS_PORT"])


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
    assert nats["command"][:2] == ["-c", "/etc/nats/server.conf"]
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
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key in all_env_names():
            monkeypatch.delenv(key)
    for key, value in compose_env(name).items():
        monkeypatch.setenv(key, value)
    settings = SETTINGS[name]()
    if name != "gateway":
        assert settings.metrics_port == METRICS_PORT
    assert settings.nats_servers == ["nats://nats:4222"]


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


# --- Prometheus -------------------------------------------------------------------------------


def scrape_jobs() -> list[dict[str, Any]]:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = config["scrape_configs"]
    assert isinstance(jobs, list)
    return jobs


def targets_of(job: dict[str, Any]) -> set[str]:
    found = {t for static in job.get("static_configs", []) for t in static["targets"]}
    for sd in job.get("dns_sd_configs", []):
        assert sd["type"] == "A"
        found |= {f"{host}:{sd['port']}" for host in sd["names"]}
    return found


@pytest.mark.parametrize("name", SERVICES)
def test_prometheus_scrapes_every_service_on_its_compose_port(name: str) -> None:
    wanted = f"{name}:{metrics_port(name)}"
    jobs = [job for job in scrape_jobs() if wanted in targets_of(job)]
    assert jobs, f"no scrape job for {wanted}"
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs)


def test_prometheus_finds_every_recorder_replica_through_dns() -> None:
    (job,) = [job for job in scrape_jobs() if job["job_name"] == "recorder"]
    assert job["dns_sd_configs"] == [
        {"names": ["recorder"], "type": "A", "port": METRICS_PORT, "refresh_interval": "15s"}
    ]


# --- Grafana ----------------------------------------------------------------------------------


def container_to_host(name: str, container_path: str) -> Path:
    """The repo path compose mounts at ``container_path`` (or below it) in a service."""
    for source, target in mounts(name):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return ROOT / source / Path(container_path).relative_to(target)
    msg = f"{container_path} is not mounted in {name}"
    raise AssertionError(msg)


def provisioning(kind: str) -> list[dict[str, Any]]:
    files = sorted((GRAFANA / "provisioning" / kind).glob("*.yaml"))
    assert files, f"no {kind} provisioning file"
    docs = [yaml.safe_load(f.read_text()) for f in files]
    assert all(doc["apiVersion"] == 1 for doc in docs)
    return docs


def test_grafana_mounts_its_provisioning_folder() -> None:
    assert container_to_host("grafana", "/etc/grafana/provisioning") == GRAFANA / "provisioning"


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    (source,) = [ds for doc in provisioning("datasources") for ds in doc["datasources"]]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in service("prometheus")["ports"])


def test_grafana_dashboard_provider_points_at_the_dashboard_files() -> None:
    providers = [p for doc in provisioning("dashboards") for p in doc["providers"]]
    assert providers
    for provider in providers:
        folder = container_to_host("grafana", provider["options"]["path"])
        assert (folder / "tlr.json").is_file()


@cache
def dashboard() -> dict[str, Any]:
    data = json.loads((GRAFANA / "dashboards" / "tlr.json").read_text())
    assert isinstance(data, dict)
    return data


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[str]:
    return [t["expr"] for p in panels() for t in p.get("targets", [])]


@cache
def defined_metrics() -> frozenset[str]:
    """Every series name the code can expose: import all of shared/ and services/, then read
    the default registry (counters add _total, histograms _bucket, _sum and _count)."""
    for package in (shared, services):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return frozenset(names)


# Grafana's interval variables, replaced by a duration so the query parses as plain PromQL.
_GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)|\$\{__\w+\}")


def selected_metrics(expr: str) -> set[str]:
    """The series names a PromQL expression selects; ValueError when it does not parse."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)
        for name in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, name, None)
            if child is not None:
                visit(child)
        for child in getattr(node, "args", None) or ():
            visit(child)

    visit(promql_parser.parse(_GRAFANA_VARIABLES.sub("5m", expr)))
    return found


def test_the_promql_reader_finds_names_and_refuses_nonsense() -> None:
    expr = 'sum by (le) (rate(tlr_a_bucket{x="1"}[5m])) / ignoring(y) tlr_b_total > 0'
    assert selected_metrics(expr) == {"tlr_a_bucket", "tlr_b_total"}
    assert selected_metrics("histogram_quantile(0.9, rate(tlr_c_bucket[$__rate_interval]))") == {
        "tlr_c_bucket"
    }
    with pytest.raises(ValueError, match="parenthesis"):
        selected_metrics("sum(rate(tlr_a_total[5m])")


def test_every_dashboard_query_parses_and_uses_metrics_the_code_defines() -> None:
    used = {m for q in queries() for m in selected_metrics(q)}
    assert used, "the dashboard queries no tlr_ metric?"
    assert used - defined_metrics() - {"up"} == set()  # up: Prometheus's own, per target


# --- alert rules ------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    assert rules
    return rules


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings."""
    anchors = set()
    for line in (ROOT / "docs" / "runbook.md").read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_prometheus_loads_the_alert_rules_compose_mounts() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (path,) = config["rule_files"]
    assert container_to_host("prometheus", path) == ROOT / "deploy" / "prometheus" / "alerts.yml"


def test_every_alert_parses_uses_real_metrics_and_names_its_runbook_section() -> None:
    anchors = runbook_anchors()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        used = selected_metrics(rule["expr"])
        assert used - defined_metrics() - {"up"} == set(), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/runbook.md"
        assert anchor in anchors, (rule["alert"], anchor)


def test_alerts_cover_a_missed_live_and_its_causes() -> None:
    watched = {m for rule in alert_rules() for m in selected_metrics(rule["expr"])}
    for metric in (
        "tlr_scheduler_leader",
        "tlr_consumer_pending",
        "tlr_recordings_failed_total",
        "tlr_tiktok_requests_total",
        "tlr_disk_low",
        "tlr_nats_connected",
        "tlr_uploader_jobs_deferred_total",
    ):
        assert metric in watched, metric


def test_dashboard_covers_what_an_operator_watches() -> None:
    used = " ".join(queries())
    for wanted in (
        "tlr_jobs_total",
        "tlr_recordings_success_total",
        "tlr_recordings_failed_total",
        "tlr_recorder_active_recordings",
        "tlr_recorder_bytes_total",
        "tlr_recorder_reconnects_total",
        "tlr_recorder_stalls_total",
        "tlr_scheduler_detection_seconds_bucket",
        "tlr_uploader_file_seconds_bucket",
        'tlr_consumer_pending{durable="uploader"}',
        "tlr_tiktok_requests_total",
        "tlr_consumer_pending",
        "tlr_disk_bytes_free",
        "tlr_watchers_active",
        "tlr_nats_connected",
        "tlr_http_requests_total",
        "tlr_http_request_seconds_bucket",
    ):
        assert wanted in used, wanted


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    uids = {ds["uid"] for doc in provisioning("datasources") for ds in doc["datasources"]}
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"])
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))


# --- Dockerfile -------------------------------------------------------------------------------


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


# --- Kubernetes -------------------------------------------------------------------------------


@cache
def manifests() -> dict[str, list[dict[str, Any]]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            assert docs, path
            found[path.name] = docs
    return found


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for docs in manifests().values()
        for doc in docs
        if doc["kind"] == kind
    }


def container(deployment: str) -> dict[str, Any]:
    (only,) = objects("Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def pod_spec(deployment: str) -> dict[str, Any]:
    spec = objects("Deployment")[deployment]["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def configmap() -> dict[str, str]:
    data = objects("ConfigMap")["tlr-config"]["data"]
    assert isinstance(data, dict)
    return data


def secret_keys() -> set[str]:
    return set(objects("Secret")["tlr-secrets"]["stringData"])


def pod_env(deployment: str) -> dict[str, str | None]:
    """What a service sees: the ConfigMap (envFrom), then its own env (value or None)."""
    ctr = container(deployment)
    env: dict[str, str | None] = {}
    for source in ctr.get("envFrom", []):
        assert source["configMapRef"]["name"] in objects("ConfigMap")
        env.update(configmap())
    for var in ctr.get("env", []):
        env[var["name"]] = var.get("value")
    return env


def container_port(deployment: str, port: str | int) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container(deployment)["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(manifests())
    assert kustomization["namespace"] == "tlr"
    assert [image["name"] for image in kustomization["images"]] == ["tlr"]


def test_builtin_kinds_are_valid_kubernetes_objects() -> None:
    for name, docs in manifests().items():
        for doc in docs:
            if doc["apiVersion"].startswith("keda.sh/"):
                continue
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "tlr", name


def test_a_deployment_per_service_runs_its_module() -> None:
    assert set(objects("Deployment")) == set(SERVICES)
    for name in SERVICES:
        ctr = container(name)
        assert ctr["command"] == ["python", "-m", f"services.{name}"]
        assert ctr["image"].split(":")[0] == "tlr"


@pytest.mark.parametrize("name", SERVICES)
def test_probes_and_ports(name: str) -> None:
    ctr = container(name)
    liveness, readiness = ctr["livenessProbe"]["httpGet"], ctr["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/ready"
    port = GATEWAY_PORT if name == "gateway" else METRICS_PORT
    assert container_port(name, liveness["port"]) == port
    assert container_port(name, readiness["port"]) == port
    if name == "gateway":
        assert int(str(pod_env(name)["GATEWAY_PORT"])) == port
    else:
        assert liveness["port"] == "metrics"
        assert int(str(pod_env(name)["METRICS_PORT"])) == port
    annotations = objects("Deployment")[name]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_service_on_its_metrics_port(name: str) -> None:
    svc = objects("Service")[name]
    labels = objects("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    wanted = "http" if name == "gateway" else "metrics"
    assert container_port(name, ports[wanted]["targetPort"]) == ports[wanted]["port"]


@pytest.mark.parametrize("name", SERVICES)
def test_pods_run_as_the_image_user_without_privileges(name: str) -> None:
    pod = pod_spec(name)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == SERVICE_UID
    ctr = container(name)["securityContext"]
    assert ctr["allowPrivilegeEscalation"] is False
    assert ctr["readOnlyRootFilesystem"] is True
    assert ctr["capabilities"]["drop"] == ["ALL"]
    resources = container(name)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


@pytest.mark.parametrize("name", SERVICES)
def test_pods_get_only_real_settings(name: str) -> None:
    assert set(pod_env(name)) - env_names(name) <= set(configmap())
    for var in container(name).get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "tlr-secrets"
            assert ref["key"] in secret_keys()
        assert var["name"] in env_names(name), f"{name} would ignore {var['name']}"


def test_configmap_and_secret_hold_only_settings() -> None:
    assert set(configmap()) - all_env_names() == set()
    assert secret_keys() - all_env_names() == set()
    assert {"SECRET_KEY", "API_KEYS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret_keys()


def test_configmap_values_are_accepted_by_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key in all_env_names():
            monkeypatch.delenv(key)
    for key, value in configmap().items():
        monkeypatch.setenv(key, value)
    for settings_type in SETTINGS.values():
        settings: BaseSettings = settings_type()
        assert isinstance(settings, Settings)
        assert settings.nats_replicas == 3


def volume_claims(name: str) -> dict[str, str]:
    """mountPath -> PVC name of a Deployment."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(name).get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    return {
        m["mountPath"]: claims[m["name"]]
        for m in container(name).get("volumeMounts", [])
        if m["name"] in claims
    }


def test_recordings_are_one_read_write_many_claim_shared_by_three_services() -> None:
    pvcs = objects("PersistentVolumeClaim")
    for name in ("recorder", "uploader", "indexer"):
        recordings = str(pod_env(name)["RECORDINGS_DIR"])
        assert volume_claims(name)[recordings] == "recordings", name
    assert pvcs["recordings"]["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("name", "variable", "claim"),
    [("indexer", "INDEX_DB", "indexer-state"), ("scheduler", "SCHEDULER_DB", "scheduler-state")],
)
def test_sqlite_state_is_on_its_own_read_write_once_claim(
    name: str, variable: str, claim: str
) -> None:
    folder = str(Path(str(pod_env(name)[variable])).parent)
    assert volume_claims(name)[folder] == claim
    assert objects("PersistentVolumeClaim")[claim]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_replicas_and_strategies_follow_who_owns_what() -> None:
    deployments = objects("Deployment")
    # A leader and a standby each; they share a ReadWriteOnce SQLite volume, so one node.
    for name in ("indexer", "scheduler"):
        assert deployments[name]["spec"]["replicas"] == 2, name
        affinity = pod_spec(name)["affinity"]["podAffinity"]
        (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == name
    # Replica counts owned by an autoscaler are not in the Deployment (apply would reset them).
    for name in ("gateway", "recorder", "uploader"):
        assert "replicas" not in deployments[name]["spec"], name


def test_recorder_gets_time_to_finalize_its_segments() -> None:
    assert pod_spec("recorder")["terminationGracePeriodSeconds"] >= 60
    for name in SERVICES:
        assert pod_spec(name)["terminationGracePeriodSeconds"] >= 30


def test_gateway_scales_on_cpu_from_two_replicas() -> None:
    hpa = objects("HorizontalPodAutoscaler")["gateway"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] == 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
JETSTREAM_METADATA = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}


def test_keda_scales_recorders_and_uploaders_on_their_durables() -> None:
    scaled = objects("ScaledObject")
    assert set(scaled) == {"recorder", "uploader"}
    durables = {d.name for d in DURABLES if d.stream == EVENTS_STREAM}
    nats_host = configmap()["NATS_URL"].split("://", 1)[1].rsplit(":", 1)[0]
    consumers = {}
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert set(spec) <= SCALED_OBJECT_SPEC
        assert spec["scaleTargetRef"]["name"] in objects("Deployment")
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        # KEDA's behaviour block is an HPA's: check it with the HPA schema.
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": behavior,
            },
        }
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert set(meta) == JETSTREAM_METADATA
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata is strings only"
        assert meta["natsServerMonitoringEndpoint"] == f"{nats_host}:8222"
        assert meta["account"] == "$G"
        assert meta["stream"] == EVENTS_STREAM
        assert meta["consumer"] in durables
        assert meta["useHttps"] == "false"
        assert int(meta["lagThreshold"]) >= 1
        assert int(meta["activationLagThreshold"]) >= 0
        consumers[meta["consumer"]] = (spec["scaleTargetRef"]["name"], int(meta["lagThreshold"]))
    assert consumers[RECORDERS.name][0] == "recorder"
    assert consumers[UPLOADER.name][0] == "uploader"
    # A recorder holds a message per recording: the target must leave free slots per pod.
    assert consumers[RECORDERS.name][1] < int(configmap()["MAX_RECORDINGS"])
    assert consumers[UPLOADER.name][1] >= int(configmap()["UPLOAD_CONCURRENCY"])


def test_recorder_scale_down_is_slow() -> None:
    spec = objects("ScaledObject")["recorder"]["spec"]
    down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 600
    assert spec["minReplicaCount"] >= 2


def test_nats_helm_values_match_the_cluster_the_services_expect() -> None:
    values = yaml.safe_load((K8S / "helm" / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["jetstream"]["enabled"] is True
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == int(configmap()["NATS_REPLICAS"]) == 3
    if RATELIMIT.storage == StorageType.MEMORY:
        assert config["jetstream"]["memoryStore"]["enabled"] is True
    assert config["monitor"]["port"] == 8222
    assert values["service"]["ports"]["monitor"]["enabled"] is True
    assert version_of(f"nats:{values['container']['image']['tag']}")[:2] >= MIN_NATS
    assert "nats.nats.svc.cluster.local:4222" in configmap()["NATS_URL"]
