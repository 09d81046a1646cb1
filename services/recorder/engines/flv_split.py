"""Splits what the upstream CLI writes into segments our Segmenter makes playable.

The CLI appends every reconnection's response to one file, FLV header and all, and keeps
whatever the resolution does; a stop can cut its last tag. Fed that file's bytes in any
chunks, ``FlvSplitter`` hands each tag to a :class:`~services.recorder.segmenter.Segmenter`
(which cuts on sequence-header changes and timestamp jumps, as for the native engine) and
starts a new segment at each FLV header it meets. A tag cut short by a reconnection (its
PreviousTagSize does not match, or it runs into the next header) is dropped.
"""

from __future__ import annotations

import struct

from services.recorder.flv import (
    FLV_HEADER_SIZE,
    MAX_TAG_SIZE,
    PREV_TAG_SIZE,
    TAG_AUDIO,
    TAG_HEADER_SIZE,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvHeader,
    FlvTag,
    tag_flags,
)
from services.recorder.segmenter import Segmenter

_MAGIC = b"FLV\x01"
_HEAD = struct.Struct(">II")
_U32 = struct.Struct(">I")
_TYPES = frozenset((TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT))
_START = FLV_HEADER_SIZE + PREV_TAG_SIZE  # a header and PreviousTagSize0


class FlvSplitter:
    """Feed it the CLI's file in order; it writes tags to ``segmenter``."""

    def __init__(self, segmenter: Segmenter) -> None:
        self._segmenter = segmenter
        self._buf = bytearray()
        self.headers = 0  # FLV headers met: the CLI's connections
        self.dropped_bytes = 0  # cut tags and bytes that were not FLV
        self._lost = False  # after a broken tag: nothing counts until the next header

    def feed(self, data: bytes) -> None:
        self._buf += data
        pos = self._parse(0)
        del self._buf[:pos]

    def finish(self) -> None:
        """End of the file: a header after a cut tail still starts its own segment."""
        while self._buf:
            found = self._resync(1)
            if found < 0:
                break
            del self._buf[:found]
            self._lost = False
            del self._buf[: self._parse(0)]
        self.dropped_bytes += len(self._buf)
        self._buf.clear()

    def _parse(self, pos: int) -> int:
        buf, seg = self._buf, self._segmenter
        end = len(buf)
        if self._lost:
            found = self._resync(pos)
            if found < 0:
                return self._keep_tail(pos)
            pos, self._lost = found, False
        while True:
            avail = end - pos
            if buf[pos : pos + 3] == _MAGIC[:3] or not self.headers:
                if avail < _START:
                    return pos
                if not self._is_header(pos):
                    resync = self._skip(pos)
                    if resync < 0:
                        return self._keep_tail(pos)
                    pos = resync
                    continue
                if self.headers:
                    seg.new_segment("reconnect")
                self.headers += 1
                seg.set_stream(FlvHeader(buf[pos + 4]))
                pos += _START
                continue
            if avail < TAG_HEADER_SIZE:
                return pos
            head, ts_field = _HEAD.unpack_from(buf, pos)
            size, tag_type = head & 0xFFFFFF, (head >> 24) & 0x1F
            total = TAG_HEADER_SIZE + size + PREV_TAG_SIZE
            if tag_type not in _TYPES or size > MAX_TAG_SIZE:
                resync = self._skip(pos)
                if resync < 0:
                    return self._keep_tail(pos)
                pos = resync
                continue
            if avail < total:
                return pos
            if _U32.unpack_from(buf, pos + total - PREV_TAG_SIZE)[0] != TAG_HEADER_SIZE + size:
                # Cut short by a reconnection: the next header is inside what it claims.
                resync = self._skip(pos)
                if resync < 0:
                    return self._keep_tail(pos)
                pos = resync
                continue
            raw = bytes(buf[pos : pos + total])
            timestamp = (ts_field >> 8) | ((ts_field & 0xFF) << 24)
            flags = tag_flags(tag_type, raw, TAG_HEADER_SIZE, size)
            seg.write(FlvTag(tag_type, timestamp, memoryview(raw), flags))
            pos += total

    def _is_header(self, pos: int) -> bool:
        buf = self._buf
        return (
            buf[pos : pos + 4] == _MAGIC
            and buf[pos + 4] & ~0x05 == 0
            and _U32.unpack_from(buf, pos + 5)[0] == FLV_HEADER_SIZE
        )

    def _resync(self, start: int) -> int:
        """The next FLV header at or after ``start``, bytes before it dropped; -1 if none yet."""
        buf = self._buf
        while True:
            found = buf.find(_MAGIC, start)
            if found < 0 or len(buf) - found < _START:
                return -1
            if self._is_header(found):
                self.dropped_bytes += found - start
                return found
            start = found + 1

    def _skip(self, pos: int) -> int:
        """The broken tag or header at ``pos`` dropped: the next header after it, or -1."""
        found = self._resync(pos + 1)
        if found >= 0:
            self.dropped_bytes += 1
        return found

    def _keep_tail(self, pos: int) -> int:
        """Nothing to parse until more comes: keep only what may begin a header."""
        keep = max(pos, len(self._buf) - _START)
        self.dropped_bytes += keep - pos
        self._lost = True
        return keep
