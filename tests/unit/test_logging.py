"""Logs are JSON lines with the fields operators search by, and never carry secrets."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from shared.logging import configure_logging, get_logger, redact_text


@pytest.fixture(autouse=True)
def _reset_logging() -> None:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_json_line_shape_with_bound_correlation_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("recorder", "INFO", "json")
    with structlog.contextvars.bound_contextvars(correlation_id="c-1"):
        get_logger("t").info("recorder.segment_written", bytes=10)
    (line,) = lines(capsys)
    assert line["msg"] == "recorder.segment_written"
    assert line["level"] == "info"
    assert line["service"] == "recorder"
    assert line["correlation_id"] == "c-1"
    assert line["bytes"] == 10
    assert str(line["ts"]).endswith("Z")


def test_level_filter(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("x", "WARNING", "json")
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert [line["msg"] for line in lines(capsys)] == ["shown"]


def test_secrets_are_redacted_in_structlog_and_stdlib_logs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("x", "INFO", "json")
    get_logger().info(
        "job.options",
        proxy="http://bob:hunter2@proxy.example:8080",
        api_key="k-secret",
        cookies={"sessionid": "abc123"},
        nested={"password": "p4ss"},
    )
    logging.getLogger("lib").warning("connecting via socks5://u:topsecret@h:1080")
    out = capsys.readouterr().out
    for secret in ("hunter2", "k-secret", "abc123", "p4ss", "topsecret"):
        assert secret not in out
    assert "bob:***@proxy.example" in out


def test_exceptions_are_structured(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("x", "INFO", "json")
    try:
        raise ValueError("boom")  # noqa: EM101
    except ValueError:
        get_logger().exception("failed")
    (line,) = lines(capsys)
    assert line["exception"][0]["exc_type"] == "ValueError"  # type: ignore[index]


def test_redact_text_leaves_plain_urls_alone() -> None:
    assert redact_text("https://www.tiktok.com/@a/live") == "https://www.tiktok.com/@a/live"
