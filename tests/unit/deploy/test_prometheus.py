"""Prometheus scrapes every service where compose runs it, and its alert rules use real metrics."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.unit.deploy.helpers import (
    METRICS_PORT,
    ROOT,
    SERVICES,
    container_to_host,
    defined_metrics,
    metrics_port,
    selected_metrics,
)


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
