"""Shared by the deployment tests: the services' settings, compose.yaml, the metrics in the code."""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import REGISTRY

import services
import shared
from services.gateway.settings import GatewaySettings
from services.indexer.settings import IndexerSettings
from services.notifier.settings import NotifierSettings
from services.recorder.settings import RecorderSettings
from services.scheduler.settings import SchedulerSettings
from services.uploader.settings import UploaderSettings
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
GRAFANA = ROOT / "deploy" / "grafana"

SETTINGS: dict[str, type[Settings]] = {
    "gateway": GatewaySettings,
    "scheduler": SchedulerSettings,
    "recorder": RecorderSettings,
    "uploader": UploaderSettings,
    "indexer": IndexerSettings,
    "notifier": NotifierSettings,
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


def container_to_host(name: str, container_path: str) -> Path:
    """The repo path compose mounts at ``container_path`` (or below it) in a service."""
    for source, target in mounts(name):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return ROOT / source / Path(container_path).relative_to(target)
    msg = f"{container_path} is not mounted in {name}"
    raise AssertionError(msg)


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
