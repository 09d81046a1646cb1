"""The REST API as plain method calls (httpx); the client CLI's only way to the service."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT = 10.0
CHUNK = 256 * 1024
_TOTAL = re.compile(r"/(\d+)\s*$")

# (bytes on disk so far, the file's size when known)
OnProgress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Downloaded:
    """What a download left on disk: the file's size, and the byte it resumed from (0: none)."""

    size: int
    resumed_at: int


class ApiError(Exception):
    """The gateway answered with an error: its ``{error_code, error_message, correlation_id}``."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        *,
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.correlation_id = correlation_id
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth asking again later: rate limited, or the gateway cannot reach NATS for now."""
        return self.status in (429, 502, 503, 504)


class Unreachable(Exception):
    """No HTTP answer at all: nothing listens there, or it did not answer in time."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the API at {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


class Client:
    """One gateway, one API key. Methods return the JSON answers as dicts."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"X-API-Key": api_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self._pace = 0.0

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the operations ------------------------------------------------------------------

    def create_recording(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/recordings", json=body)

    def create_watcher(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/watchers", json=body)

    def list_watchers(self, page: int = 1, page_size: int = 50) -> dict[str, Any]:
        return self._call("GET", "/watchers", params={"page": page, "page_size": page_size})

    def create_watchers(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """POST /watchers/bulk: one result per item (at most 1,000 items)."""
        return self._call("POST", "/watchers/bulk", json={"items": items})

    def export_watchers(self, fmt: str) -> str:
        """Every watcher of the key, as GET /watchers?format= gives it (csv or json text)."""
        return self._send("GET", "/watchers", params={"format": fmt}).text

    def delete_watcher(self, key: str) -> dict[str, Any]:
        return self._call("DELETE", f"/watchers/{_segment(key, keep='@')}")

    def get_job(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", self.job_path(task_id))

    def cancel_job(self, task_id: str) -> dict[str, Any]:
        return self._call("DELETE", self.job_path(task_id))

    def list_jobs(self, params: dict[str, str | int | list[str]]) -> dict[str, Any]:
        return self._call("GET", "/jobs", params=params)

    def list_files(self, params: dict[str, str | int]) -> dict[str, Any]:
        return self._call("GET", "/files", params=params)

    def download(self, file_id: int, target: Path, *, progress: OnProgress) -> Downloaded:
        """Save GET /files/{id}/content at ``target``. A ``target`` already there is taken as
        the start of the file: only the rest is asked for (Range); a server that sends the
        whole file instead has it written over. A redirect to S3 is followed without the
        API key (it must not leave for another host)."""
        have = target.stat().st_size if target.is_file() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with self._http.stream("GET", f"/files/{file_id}/content", headers=headers) as answer:
                if answer.status_code != 302:
                    return _save(answer, target, have, progress)
                location = answer.headers["location"]
            with (
                httpx.Client(timeout=self._http.timeout) as plain,
                plain.stream("GET", location, headers=headers) as answer,
            ):
                return _save(answer, target, have, progress)
        except httpx.ConnectError as exc:
            raise Unreachable(self.base_url, _reason(exc, "connection refused")) from None
        except httpx.TimeoutException:
            raise Unreachable(self.base_url, "no answer in time") from None
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, _reason(exc, type(exc).__name__)) from None

    def job_path(self, task_id: str) -> str:
        return f"/jobs/{_segment(task_id)}"

    def job_url(self, task_id: str) -> str:
        return self.base_url + self.job_path(task_id)

    def pace(self) -> float:
        """Seconds to wait between polls so as not to use up the key's rate limit, from the
        last answer's ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (0: no limit seen)."""
        return self._pace

    # --- plumbing ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        response = self._send(method, path, json=json, params=params)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(response.status_code, "BAD_RESPONSE", "the answer is not a JSON object")
        return body

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """The successful answer; ApiError for any other, Unreachable without one."""
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.ConnectError as exc:
            raise Unreachable(self.base_url, _reason(exc, "connection refused")) from None
        except httpx.TimeoutException:
            raise Unreachable(self.base_url, "no answer in time") from None
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, _reason(exc, type(exc).__name__)) from None
        self._pace = _pace(response.headers)
        if response.is_success:
            return response
        raise _error(response)


def _save(answer: httpx.Response, target: Path, have: int, progress: OnProgress) -> Downloaded:
    if answer.status_code == 416 and have:
        return Downloaded(size=have, resumed_at=have)  # nothing past what is on disk: done
    if not answer.is_success:
        answer.read()
        raise _error(answer)
    resumed = answer.status_code == 206
    start = have if resumed else 0
    total = _total(answer.headers, start)
    done = start
    progress(done, total)
    with target.open("ab" if resumed else "wb") as f:
        for chunk in answer.iter_bytes(CHUNK):
            f.write(chunk)
            done += len(chunk)
            progress(done, total)
    return Downloaded(size=done, resumed_at=start)


def _total(headers: httpx.Headers, start: int) -> int | None:
    """The whole file's size: Content-Range's, or what is left (Content-Length) plus ``start``."""
    found = _TOTAL.search(headers.get("Content-Range", ""))
    if found:
        return int(found[1])
    length = _number(headers.get("Content-Length"))
    return start + int(length) if length is not None else None


def _segment(value: str, keep: str = "") -> str:
    """One path segment, whatever the user typed: '/' and '?' cannot leave it."""
    return quote(value, safe=keep)


def _reason(exc: Exception, fallback: str) -> str:
    text = str(exc).strip()
    return text if text else fallback


def _error(response: httpx.Response) -> ApiError:
    retry_after = _number(response.headers.get("Retry-After"))
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error_code" in body:
        return ApiError(
            response.status_code,
            str(body["error_code"]),
            str(body.get("error_message") or body.get("message") or ""),
            correlation_id=body.get("correlation_id") or None,
            retry_after=retry_after,
        )
    # Not the gateway's error shape (a proxy in between, say): show the start of the text.
    snippet = " ".join(response.text.split())[:200] or response.reason_phrase
    return ApiError(
        response.status_code, f"HTTP_{response.status_code}", snippet, retry_after=retry_after
    )


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _pace(headers: httpx.Headers) -> float:
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    reset = _number(headers.get("X-RateLimit-Reset"))
    if remaining is None or reset is None:
        return 0.0
    left = max(0.0, reset - time.time())
    # Spread what is left of the window over its remaining seconds.
    return left if remaining <= 0 else left / remaining
