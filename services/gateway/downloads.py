"""Local downloads: a file under RECORDINGS_DIR opened safely and streamed, whole or one range.

Only a regular file whose real path lies inside RECORDINGS_DIR is served: the folders are
resolved, the file itself is opened without following a symlink, and on Linux the open file's
own path is checked again (a folder swapped for a symlink in between is caught). Ranges follow
RFC 9110: one range is answered 206, a range past the end 416; several ranges, or a header
that does not parse, are ignored (the whole file, 200), as the RFC lets a server do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from starlette.responses import Response, StreamingResponse

from services.gateway.errors import ApiError
from shared.errors import ErrorCode
from shared.paths import inside

CHUNK = 256 * 1024  # bytes per read: few thread hops, little memory per download
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", re.ASCII | re.IGNORECASE)
MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".mkv": "video/x-matroska",
    ".ts": "video/mp2t",
    ".flv": "video/x-flv",
    ".jpg": "image/jpeg",
}
OCTETS = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file, both included."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    """The range lies wholly past the end of the file (or asks for no byte at all)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range ``header`` asks of a ``size``-byte file; None for the whole file.

    Raises:
        Unsatisfiable: no byte of the file is in the range.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:  # several ranges, another unit, or garbage
        return None
    first, last = match[1], match[2]
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range: ignored (RFC 9110 14.1.1)
    if start >= size:
        raise Unsatisfiable
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end)


@dataclass(frozen=True)
class Opened:
    """A file opened for reading; whoever takes it closes ``fd`` (the response does)."""

    fd: int
    size: int
    mtime: float
    etag: str


def open_under(root: Path, relative: str) -> Opened | None:
    """The regular file ``relative`` under ``root``, opened; None when it is not there, is not
    a regular file, or is reached through a symlink leading outside ``root`` (blocking)."""
    full = inside(root, relative)
    if full is None:
        return None
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # missing, or the file itself is a symlink (ELOOP)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _really_inside(fd, root):
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return Opened(fd, st.st_size, st.st_mtime, f'"{st.st_size:x}-{st.st_mtime_ns:x}"')


def _really_inside(fd: int, root: Path) -> bool:
    """Where the open file really is (Linux: /proc/self/fd) lies inside ``root``; True where
    the system cannot say."""
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return True
    return real.is_relative_to(root.resolve())


def content_disposition(filename: str, *, attachment: bool = True) -> str:
    """The header naming the file: ASCII as is, anything else percent-encoded (RFC 6266)."""
    plain = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(PurePosixPath(name).suffix.lower(), OCTETS)


def respond(
    opened: Opened,
    *,
    name: str,
    range_header: str | None,
    if_range: str | None,
    head: bool,
    attachment: bool = True,
) -> Response:
    """200 (whole), 206 (one range) or the 416 error for ``opened``; closes it unless a body
    stream takes it over."""
    try:
        # If-Range names the version the client holds; another one gets the whole file.
        wanted = range_header if if_range is None or if_range == opened.etag else None
        byte_range = parse_range(wanted, opened.size)
    except Unsatisfiable:
        os.close(opened.fd)
        msg = f"range {range_header!r} is past the end of the file ({opened.size} bytes)"
        raise ApiError(
            416,
            ErrorCode.RANGE_NOT_SATISFIABLE,
            msg[:300],
            headers={"Content-Range": f"bytes */{opened.size}"},
        ) from None
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(name, attachment=attachment),
        "ETag": opened.etag,
        "Last-Modified": formatdate(opened.mtime, usegmt=True),
        "Cache-Control": "private, no-cache",
    }
    start, length, status = 0, opened.size, 200
    if byte_range is not None:
        start, length, status = byte_range.start, byte_range.length, 206
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{opened.size}"
    headers["Content-Length"] = str(length)
    if head:
        os.close(opened.fd)
        return Response(status_code=status, headers=headers, media_type=media_type(name))
    return StreamingResponse(
        _chunks(opened.fd, start, length),
        status_code=status,
        headers=headers,
        media_type=media_type(name),
    )


async def _chunks(fd: int, start: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes from ``start``, read on a worker thread; the fd is closed at the end,
    on a client that went away too."""
    try:
        offset, left = start, length
        while left > 0:
            data = await asyncio.to_thread(os.pread, fd, min(CHUNK, left), offset)
            if not data:
                return  # shorter than it was when opened: the client sees a short body
            offset += len(data)
            left -= len(data)
            yield data
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
