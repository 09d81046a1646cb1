"""The files under nats/ are exactly what the Python declarations render."""

from __future__ import annotations

import json
from pathlib import Path

from shared.subjects import DURABLES, EVENTS_STREAM
from tlr import nats_definitions
from tlr.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_committed_nats_files_are_in_sync() -> None:
    assert nats_definitions.stale(ROOT / "nats") == [], "run `tlr nats-defs` and commit"


def test_rendering_is_valid_json_for_the_cli(tmp_path: Path) -> None:
    assert main(["nats-defs", "--dir", str(tmp_path), "--replicas", "3"]) == 0
    events = json.loads((tmp_path / "streams" / f"{EVENTS_STREAM}.json").read_text())
    assert events["num_replicas"] == 3
    assert events["duplicate_window"] == 600 * 10**9  # the CLI expects nanoseconds
    for durable in DURABLES:
        cfg = json.loads(
            (tmp_path / "consumers" / durable.stream / f"{durable.name}.json").read_text()
        )
        assert cfg["durable_name"] == durable.name
        assert cfg["ack_policy"] == "explicit"
    assert main(["nats-defs", "--dir", str(tmp_path), "--replicas", "3", "--check"]) == 0
    assert main(["nats-defs", "--dir", str(tmp_path), "--check"]) == 1
