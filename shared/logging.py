"""The single structlog setup: JSON lines to stdout, a correlation id bound per unit of work."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog

REDACTED = "[REDACTED]"

# Keys whose values are secrets wherever they appear in a log event.
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|cookie", re.I)
# user:password@ in any URL-looking string.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)


def redact_text(text: str) -> str:
    """Hide the password of any URL in ``text``."""
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: secrets never reach a log line, whatever a call site passes."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(key, value)
    return event_dict


def _json_dumps(obj: Any, **_kw: Any) -> str:
    return msgspec.json.encode(obj, enc_hook=str).decode()


def configure_logging(
    service: str, level: str = "INFO", fmt: str = "auto", *, cache: bool = True
) -> None:
    """Configure structlog and the stdlib root logger (uvicorn, nats) to write one format.

    Args:
        service: bound to every line as ``service``.
        level: minimum level name.
        fmt: ``json``, ``console``, or ``auto`` (console only when stdout is a terminal).
        cache: each module's logger keeps this configuration once used (fast). False for a
            test that configures logging in a shared process: a logger cached then would
            keep it after the test, out of reach of later tests' ``capture_logs``.
    """
    as_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    pre: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _add_service(service),
    ]
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_secrets]
    if as_json:
        final += [
            structlog.processors.dict_tracebacks,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(serializer=_json_dumps),
        ]
    else:
        final.append(structlog.dev.ConsoleRenderer())

    structlog.configure(
        processors=[*pre, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Logs of libraries (uvicorn, nats, httpx) go through the same chain.
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), _drop_color_message, *pre],
            processors=final,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log and httpx's request lines repeat our own request logs.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _drop_color_message(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's ANSI copy of the message
    return event_dict


def _add_service(service: str) -> Any:
    def add(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return add


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
