"""Errors a handler raises to tell the consume loop what to do with its message.

    HandlerError
    ├── PermanentError   the message can never succeed: term() it (no redelivery)
    ├── RetryLater       a known transient condition: nak() with the given delay
    └── NotMine          another process took the work over: neither ack nor nak

``ErrorCode`` lists the error codes of the REST API and of ``recording.finished``.
"""

from __future__ import annotations

from enum import StrEnum


class HandlerError(Exception):
    """Base of the errors that steer acknowledgement."""


class PermanentError(HandlerError):
    """Retrying would not help (bad data, unknown target); the message is terminated."""


class RetryLater(HandlerError):
    """Try again after ``delay`` seconds (e.g. a lease is held by another process)."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


class NotMine(HandlerError):
    """This process lost the work to a newer holder (its lease lapsed while it was frozen or
    cut off). The message is left alone: an ack or a nak would settle the newer holder's
    delivery of it."""


class ErrorCode(StrEnum):
    """Every ``error_code`` the API and the events may carry."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL = "INTERNAL"
    # Recording outcomes.
    LIVE_OFFLINE = "LIVE_OFFLINE"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    AGE_RESTRICTED = "AGE_RESTRICTED"
    COUNTRY_BLOCKED = "COUNTRY_BLOCKED"
    WAF_BLOCKED = "WAF_BLOCKED"
    NETWORK_TIMEOUT = "NETWORK_TIMEOUT"
    FFMPEG_MISSING = "FFMPEG_MISSING"
    RECORDER_EXIT_NONZERO = "RECORDER_EXIT_NONZERO"
    # The tlr-cli engine (the upstream CLI): no usable checkout at TLR_ROOT, or it is not at
    # TLR_PIN (and TLR_PIN_OVERRIDE is off).
    ENGINE_UNAVAILABLE = "ENGINE_UNAVAILABLE"
    ENGINE_PIN_MISMATCH = "ENGINE_PIN_MISMATCH"
    DISK_FULL = "DISK_FULL"
    CANCELLED = "CANCELLED"
    # Upload outcomes (job.<id>.up).
    S3_NOT_CONFIGURED = "S3_NOT_CONFIGURED"
    S3_UNAVAILABLE = "S3_UNAVAILABLE"  # unreachable, timing out, 5xx, throttling: retried
    S3_ERROR = "S3_ERROR"  # refused (credentials, permissions, no bucket): waits for an operator
    FILE_MISSING = "FILE_MISSING"
    # Downloads: a Range wholly past the end of the file (416).
    RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"
    # Egress (issue 17): every stream URL TikTok gave is off STREAM_HOST_SUFFIXES, or points
    # (or redirects) at a private address.
    STREAM_HOST_NOT_ALLOWED = "STREAM_HOST_NOT_ALLOWED"
