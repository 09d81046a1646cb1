"""``tlr check`` and ``GET /diagnostics/tiktok``: the resolution chain once, every step shown.

What a user runs when a real live does not record: from this host (and a given proxy), which
page answered, whether a WAF challenge was solved, which room id came out, what room/info
said, and the first stream URL that really yields media.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import httpx

from shared.errors import ErrorCode
from shared.tiktok.client import TikTokClient
from shared.tiktok.errors import TikTokError
from shared.tiktok.guards import STREAM_REQUEST, EgressRefused
from shared.tiktok.http import Step, Trace
from shared.tiktok.quality import DEFAULT_PREFERENCE, stream_candidates

FLV_SIGNATURE: Final = b"FLV"
PROBE_BYTES: Final = 4096  # below this a connection counts as dead (upstream 7.7)
PROBE_TIMEOUT_S: Final = 10.0
CHECK_TIMEOUT_S: Final = 60.0  # the whole check: an operator (or an API call) waits for it


@dataclass(slots=True)
class StreamProbe:
    quality: str
    source: str
    url: str  # without its query: the signature stays private
    http_status: int | None = None
    bytes: int = 0
    media: bool = False
    error: str | None = None


@dataclass(slots=True)
class CheckReport:
    target: str
    steps: list[Step] = field(default_factory=list)
    room_id: str | None = None
    unique_id: str | None = None
    status: int | None = None  # 2 live, 3 paused, 4 ended
    title: str | None = None
    info_source: str | None = None  # room_info, or live_page/user_room after a 4003110
    probes: list[StreamProbe] = field(default_factory=list)
    error_code: str | None = None
    error: str | None = None

    @property
    def stream(self) -> StreamProbe | None:
        """The first stream URL that yielded media."""
        return next((p for p in self.probes if p.media), None)

    @property
    def ok(self) -> bool:
        """Resolution worked, and a live room has a stream that plays."""
        if self.error_code is not None:
            return False
        return self.status not in (2, 3) or self.stream is not None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = self.ok
        doc["stream"] = asdict(self.stream) if self.stream else None
        return doc


async def check(
    target: str,
    make_client: Callable[[Trace], TikTokClient],
    *,
    preference: Sequence[str] = DEFAULT_PREFERENCE,
    probe: bool = True,
) -> CheckReport:
    """Run the chain once for ``target``; failures are reported, never raised (but
    ValueError for a target that is not TikTok's)."""
    report = CheckReport(target=target)
    async with make_client(report.steps.append) as client:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await _run(client, report, preference, probe)
        except TikTokError as exc:
            report.error_code, report.error = exc.code.value, str(exc)
        except TimeoutError:
            report.error_code = ErrorCode.NETWORK_TIMEOUT.value
            report.error = f"the check took longer than {CHECK_TIMEOUT_S:.0f} s"
    return report


async def _run(
    client: TikTokClient, report: CheckReport, preference: Sequence[str], probe: bool
) -> None:
    ref = await client.resolve(report.target)
    report.room_id, report.unique_id = ref.room_id, ref.unique_id
    if ref.room_id is None:
        return
    info = await client.live_info(ref.room_id, ref.unique_id)
    report.status, report.title, report.info_source = info.status, info.title, info.source
    if not probe or not (info.is_live or info.is_paused):
        return
    for candidate in stream_candidates(info, preference):
        found = await probe_stream(client.http, candidate.url)
        found.quality, found.source = candidate.quality, candidate.source
        report.probes.append(found)
        if found.media:
            return


async def probe_stream(http: httpx.AsyncClient, url: str) -> StreamProbe:
    """GET ``url`` until PROBE_BYTES of FLV arrived (media) or it fails or closes."""
    found = StreamProbe(quality="", source="", url=url.split("?", 1)[0])
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    try:
        # Marked a stream GET: the client's StreamGuard judges it like the recorder's pulls.
        extensions = {STREAM_REQUEST: True}
        async with http.stream(
            "GET", url, timeout=PROBE_TIMEOUT_S, extensions=extensions
        ) as response:
            found.http_status = response.status_code
            if response.status_code != 200:
                return found
            head = b""
            async for chunk in response.aiter_bytes():
                found.bytes += len(chunk)
                head = (head + chunk)[:3]
                if found.bytes >= PROBE_BYTES or time.monotonic() > deadline:
                    break
            found.media = head == FLV_SIGNATURE and found.bytes >= PROBE_BYTES
            if not found.media:
                found.error = f"closed after {found.bytes} bytes"
    except EgressRefused as exc:
        found.error = str(exc)  # generic: the host and the reason are in the log
    except httpx.HTTPError as exc:
        found.error = type(exc).__name__
    return found


def render(report: CheckReport, *, via: str) -> list[str]:
    """The report as the lines ``tlr check`` prints."""
    lines = [f"tlr check {report.target} ({via})"]
    for n, step in enumerate(report.steps, 1):
        waf = f", WAF challenge {step.waf}" if step.waf else ""
        status = step.http_status if step.http_status is not None else "-"
        lines.append(
            f"  {n:>2}. {step.endpoint:<13} {status!s:>4} {step.outcome}{waf}"
            f"  ({step.elapsed_ms:.0f} ms)  {step.url}"
        )
    if report.room_id or report.unique_id:
        user = f" (@{report.unique_id})" if report.unique_id else ""
        lines.append(f"  room id: {report.room_id or 'none (not live)'}{user}")
    if report.status is not None:
        names = {2: "live", 3: "paused", 4: "ended"}
        title = f", title {report.title!r}" if report.title else ""
        lines.append(
            f"  room status: {report.status} ({names.get(report.status, '?')}) "
            f"from {report.info_source}{title}"
        )
    for p in report.probes:
        verdict = f"media ({p.bytes} bytes)" if p.media else (p.error or f"HTTP {p.http_status}")
        lines.append(f"  stream {p.quality} ({p.source}): {verdict}  {p.url}")
    if report.error_code:
        lines.append(f"  failed: {report.error_code}: {report.error}")
    stream = report.stream
    if stream is not None:
        lines.append(f"OK: records {stream.quality} from the {stream.source} URL")
    elif report.ok:
        lines.append("OK: resolved; the room is not live now")
    else:
        lines.append("NOT OK")
    return lines
