"""Writes FLV tags into segment files, each one a complete, independently playable FLV.

Every segment starts with the FLV header, the latest onMetaData, the current video and audio
sequence headers (all stamped 0) and then media from a video keyframe on, with timestamps
rebased so the segment starts at 0. A new segment is cut (never a second FLV header in a file):

- on every (re)connection: the caller calls :meth:`Segmenter.new_segment`;
- when a video or audio sequence header arrives whose payload differs from the current one
  (resolution or codec change: stream-copying across it into one MP4 corrupts every frame
  after it, TIKTOK.md §3); an identical repeated header is ignored;
- when a track's timestamps jump backwards by more than a second (the source restarted);
- optionally when a segment reaches ``max_segment_ms`` (at the next keyframe).

A segment file is only created when its first keyframe arrives, so a connection that dies
before delivering media leaves no file. Tags are buffered here (``flush_bytes``); the file
operations go to a :class:`~services.recorder.disk.WriteQueue`, which runs them on a worker
thread (one hop per tick for all sessions, never per tag), so a stalled disk (NFS, EFS) holds
up only the sessions writing to it, never the event loop. A failed write is raised as
:class:`SegmentWriteError` at the next flush, :meth:`drain` or close. Every exit path closes
the file (:meth:`close`); ``on_close`` runs once the file is completely written and closed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.recorder.disk import SegmentFile, SegmentWriteError, WriteQueue
from services.recorder.flv import (
    F_AUDIO_CONFIG,
    F_KEYFRAME,
    F_METADATA,
    F_SEQUENCE_END,
    F_VIDEO_CONFIG,
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvHeader,
    FlvTag,
    encode_tag,
    file_header,
    timestamp_field,
)

DEFAULT_FLUSH_BYTES = 128 * 1024
# A track going back in time by more than this is a new timeline, not jitter.
BACKWARD_JUMP_MS = 1000
_U32 = struct.Struct(">I")

OpenPath = Callable[[int, datetime], Path]

__all__ = ["DEFAULT_FLUSH_BYTES", "SegmentInfo", "SegmentWriteError", "Segmenter"]


@dataclass(slots=True)
class SegmentInfo:
    """One segment file and what went into it. Timestamps are the source's, in ms."""

    index: int
    path: Path
    started_at: datetime
    closed_at: datetime | None = None
    bytes: int = 0
    """Bytes written to the file, preamble included."""
    tags: int = 0
    """Media (and non-metadata script) tags written after the preamble."""
    video_tags: int = 0
    audio_tags: int = 0
    first_ts: int = 0
    last_ts: int = 0
    duration_ms: int = 0
    """Media time covered: last rebased timestamp plus one frame."""
    cut_reason: str = ""
    """Why the segment was closed: video_config, audio_config, discontinuity, split, or what
    the caller passed to new_segment/close (the session: disconnected, stopped, duration, end)."""


class _Open:
    """The segment being written."""

    __slots__ = ("base", "buf", "file", "frame_ms", "info", "last_rel", "last_video_rel", "max_rel")

    def __init__(self, info: SegmentInfo, file: SegmentFile, base: int, preamble: bytes) -> None:
        self.info = info
        self.file = file
        self.base = base
        self.buf = bytearray(preamble)
        self.max_rel = 0
        self.last_rel = 0
        self.last_video_rel = -1
        self.frame_ms = 0


class Segmenter:
    """Turns a tag stream (across reconnections) into a series of playable FLV files.

    Args:
        open_path: ``(index, started_at) -> Path`` of the raw ``.flv`` for segment ``index``
            (0, 1, ... in the order files are created); parent folders are created.
        io: runs the file operations (a session passes its queue on the process's
            :class:`~services.recorder.disk.Disk`); None runs them inline, in the caller.
            Positional only, so that ``**options`` of ints can never be taken for it.
        on_close: called with the info of every segment closed with media, once its file is
            completely written and closed (e.g. to start its remux); not if it was never created.
        flush_bytes: hand the buffer to the disk whenever this much is buffered.
        budget_ms: total media time to record across all segments; tags past it are not
            written and :attr:`limit_reached` becomes true.
        max_segment_ms: start a new segment at the first keyframe past this media time.
    """

    def __init__(
        self,
        open_path: OpenPath,
        io: WriteQueue | None = None,
        /,
        *,
        on_close: Callable[[SegmentInfo], None] | None = None,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        budget_ms: int | None = None,
        max_segment_ms: int | None = None,
    ) -> None:
        self._io = io if io is not None else WriteQueue()
        self._open_path = open_path
        self._on_close = on_close
        self._flush_bytes = flush_bytes
        self._budget_ms = budget_ms
        self._max_segment_ms = max_segment_ms
        self._seg: _Open | None = None
        self._meta: bytes | None = None
        self._vseq: bytes | None = None
        self._aseq: bytes | None = None
        self._stream_flags = 0x05
        self._last_ts: dict[int, int] = {}
        self._next_index = 0
        self._closed_ms = 0
        self.closed: list[SegmentInfo] = []
        self.limit_reached = False
        self.dropped = 0
        """Tags not written: leading non-keyframes, audio before the first keyframe..."""

    # --- state -------------------------------------------------------------------------

    @property
    def current(self) -> SegmentInfo | None:
        return None if self._seg is None else self._seg.info

    @property
    def recorded_ms(self) -> int:
        """Media time written so far, all segments (the current one up to its last tag)."""
        seg = self._seg
        return self._closed_ms + (0 if seg is None else seg.max_rel)

    @property
    def video_expected(self) -> bool:
        return bool(self._stream_flags & 0x01)

    @property
    def backlogged(self) -> bool:
        """The caller should ``await drain()`` before feeding more: too many bytes are waiting
        for the disk, or a write failed."""
        return self._io.backlogged

    async def drain(self) -> None:
        """Wait until the disk has caught up with all but ``max_pending`` bytes.

        Raises:
            SegmentWriteError: a create, write or close failed.
        """
        io = self._io
        await io.drain(io.max_pending)
        self._raise_failed()

    async def aclose(self, reason: str = "end") -> None:
        """Close the current segment and wait until every file is written and closed (and
        every ``on_close`` has run).

        Raises:
            SegmentWriteError: a create, write or close failed (even an earlier one).
        """
        try:
            self._close(reason)
        finally:
            await self._io.drain()
        self._raise_failed()

    # --- input -------------------------------------------------------------------------

    def set_stream(self, header: FlvHeader) -> None:
        """The FLV header of the current connection (tells whether video is to be waited for)."""
        self._stream_flags = header.flags

    def new_segment(self, reason: str = "reconnect") -> SegmentInfo | None:
        """Close the current segment (a new connection is starting); the next keyframe opens a
        new one. Returns the closed segment's info, if there was one."""
        self._last_ts.clear()
        return self._close(reason)

    def close(self, reason: str = "end") -> SegmentInfo | None:
        """Close the current segment; safe to call any number of times."""
        return self._close(reason)

    def write(self, tag: FlvTag) -> None:
        """Route one tag: remember configs and metadata, cut if needed, write media.

        Raises:
            SegmentWriteError: the file could not be created or written.
        """
        if self.limit_reached:
            return
        tag_type = tag.type
        flags = tag.flags
        if tag_type == TAG_VIDEO:
            if flags & F_VIDEO_CONFIG:
                self._config(tag, video=True)
                return
            if flags & F_SEQUENCE_END:
                return
            if self._seg is None:
                if not flags & F_KEYFRAME:
                    self.dropped += 1
                    return
                self._start(tag.timestamp)
            self._media(tag, keyframe=bool(flags & F_KEYFRAME))
        elif tag_type == TAG_AUDIO:
            if flags & F_AUDIO_CONFIG:
                self._config(tag, video=False)
                return
            if self._seg is None:
                if self.video_expected or self._vseq is not None:
                    self.dropped += 1  # a segment starts at a video keyframe
                    return
                self._start(tag.timestamp)
            self._media(tag, keyframe=False)
        elif flags & F_METADATA:
            # Never written mid-file: it goes into the preamble of the next segment.
            self._meta = bytes(tag.payload)
        elif self._seg is None:
            self.dropped += 1
        else:
            self._media(tag, keyframe=False)

    # --- internals ---------------------------------------------------------------------

    def _config(self, tag: FlvTag, *, video: bool) -> None:
        payload = tag.payload
        current = self._vseq if video else self._aseq
        if current is not None and payload == current:
            return  # a repeated, identical header: not a cut
        value = bytes(payload)
        if video:
            self._vseq = value
        else:
            self._aseq = value
        seg = self._seg
        if seg is None:
            return
        if current is not None:
            self._close("video_config" if video else "audio_config")
            return
        # First config of a track that started after the segment (e.g. audio config after the
        # first keyframe): nothing to be inconsistent with, so it goes inline.
        rel = max(0, tag.timestamp - seg.base)
        self._append(seg, encode_tag(tag.type, rel, value))

    def _start(self, base_ts: int) -> None:
        index = self._next_index
        started = datetime.now(UTC)
        path = self._open_path(index, started)
        if path.suffix.lower() == ".mp4":  # the raw file must not take the remux's name
            path = path.with_suffix(".flv")
        self._next_index += 1
        has_audio = bool(self._stream_flags & 0x04) or self._aseq is not None
        has_video = self.video_expected or self._vseq is not None
        parts = [file_header((0x04 if has_audio else 0) | (0x01 if has_video else 0))]
        if self._meta is not None:
            parts.append(encode_tag(TAG_SCRIPT, 0, self._meta))
        if self._vseq is not None:
            parts.append(encode_tag(TAG_VIDEO, 0, self._vseq))
        if self._aseq is not None:
            parts.append(encode_tag(TAG_AUDIO, 0, self._aseq))
        preamble = b"".join(parts)
        info = SegmentInfo(
            index=index,
            path=path,
            started_at=started,
            bytes=len(preamble),
            first_ts=base_ts,
            last_ts=base_ts,
        )
        # The path taken (a -N variant if the name exists) is known once the file is created.
        file = self._io.create(path, then=lambda created: setattr(info, "path", created.path))
        self._seg = _Open(info, file, base_ts, preamble)
        self._raise_failed()  # inline, a failed create raises here, as the first write would

    def _media(self, tag: FlvTag, *, keyframe: bool) -> None:
        seg = self._seg
        assert seg is not None
        ts = tag.timestamp
        tag_type = tag.type
        last = self._last_ts.get(tag_type)
        if last is not None and ts < last - BACKWARD_JUMP_MS:
            # The source restarted its clock: a new timeline needs a new file.
            self._last_ts.clear()
            self._close("discontinuity")
            self.write(tag)
            return
        rel = ts - seg.base
        if rel < 0:
            self.dropped += 1  # e.g. audio stamped just before the segment's first keyframe
            return
        if (
            keyframe
            and self._max_segment_ms is not None
            and rel >= self._max_segment_ms
            and seg.info.tags
        ):
            self._close("split")
            self.write(tag)
            return
        if self._budget_ms is not None and self._closed_ms + rel >= self._budget_ms:
            self.limit_reached = True
            return
        self._last_ts[tag_type] = ts
        raw = tag.raw
        buf = seg.buf
        start = len(buf)
        buf += raw
        _U32.pack_into(buf, start + 4, timestamp_field(rel))
        info = seg.info
        info.bytes += len(raw)
        info.tags += 1
        info.last_ts = ts
        if tag_type == TAG_VIDEO:
            info.video_tags += 1
            if rel > seg.last_video_rel >= 0:
                seg.frame_ms = rel - seg.last_video_rel
            seg.last_video_rel = rel
        elif tag_type == TAG_AUDIO:
            info.audio_tags += 1
            if not info.video_tags and rel > seg.last_rel:
                seg.frame_ms = rel - seg.last_rel
        seg.last_rel = rel
        if rel > seg.max_rel:
            seg.max_rel = rel
        # The segment's first keyframe goes to disk at once, preamble and all: a new file
        # holds a playable start within a frame of the live's start, not 128 KB (~0.5 s) later.
        if info.tags == 1:
            self._flush(seg, urgent=True)
        elif len(buf) >= self._flush_bytes:
            self._flush(seg)

    def _append(self, seg: _Open, data: bytes) -> None:
        seg.buf += data
        seg.info.bytes += len(data)

    def _flush(self, seg: _Open, *, urgent: bool = False) -> None:
        if seg.buf:
            self._io.write(seg.file, seg.buf, urgent=urgent)  # the queue owns it now: a new one
            seg.buf = bytearray()
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._io.error is not None:
            raise self._io.error

    def _close(self, reason: str) -> SegmentInfo | None:
        seg, self._seg = self._seg, None
        if seg is None:
            return None
        info = seg.info
        if seg.buf:
            self._io.write(seg.file, seg.buf)
            seg.buf = bytearray()
        info.closed_at = datetime.now(UTC)
        info.cut_reason = reason
        info.duration_ms = seg.max_rel + seg.frame_ms
        if info.tags == 0:
            self._io.close(seg.file, discard=True)  # no media: not a recording
            self._raise_failed()
            return None
        self._closed_ms += info.duration_ms
        self.closed.append(info)
        file = seg.file
        self._io.close(file, then=lambda: self._closed_file(info, file))
        self._raise_failed()
        return info

    def _closed_file(self, info: SegmentInfo, file: SegmentFile) -> None:
        """The file is complete and closed: it may be remuxed (if it exists at all)."""
        if file.created and self._on_close is not None:
            self._on_close(info)
