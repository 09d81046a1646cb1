"""Grafana is provisioned from the repo and its dashboard queries metrics the code defines."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
import yaml

from tests.unit.deploy.helpers import (
    GRAFANA,
    container_to_host,
    defined_metrics,
    selected_metrics,
    service,
)


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
