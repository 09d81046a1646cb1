"""FLV primitives for the fake CDN: parse a source file, then loop and re-stamp its tags forever."""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tlr.fake_tiktok.amf0 import amf0_decode_all, script_tag_data

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
TAG_HEADER_SIZE = 11
FLV_HEADER_SIZE = 9

# Legacy video codec ids whose second byte is an AVCPacketType (7 = AVC, 12 = the non-standard
# HEVC id Chinese CDNs use, 13 = AV1 in some forks).
_PACKETIZED_CODECS = frozenset({7, 12, 13})
# Enhanced-FLV video packet types that carry configuration rather than frames:
# 0 SequenceStart, 4 Metadata, 5 MPEG2TSSequenceStart (2, SequenceEnd, is handled apart).
_EX_CONFIG_PACKETS = frozenset({0, 4, 5})
_SOUND_FORMAT_AAC = 10

_TS_STRUCT = struct.Struct(">I")


class FlvError(ValueError):
    """The bytes are not an FLV file this module understands."""


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One FLV tag: its type, its timestamp in ms and its payload (without the 11-byte header)."""

    tag_type: int
    timestamp: int
    data: bytes

    @property
    def is_video(self) -> bool:
        return self.tag_type == TAG_VIDEO

    @property
    def is_audio(self) -> bool:
        return self.tag_type == TAG_AUDIO

    @property
    def is_keyframe(self) -> bool:
        # Frame type lives in bits 4-6 for both legacy and enhanced (bit 7 = IsExHeader) tags.
        return self.is_video and bool(self.data) and (self.data[0] >> 4) & 0x07 == 1

    @property
    def is_sequence_header(self) -> bool:
        """True for an AVC/HEVC decoder configuration record or an AAC AudioSpecificConfig."""
        return self._packet_kind() == "config"

    @property
    def is_sequence_end(self) -> bool:
        return self._packet_kind() == "end"

    @property
    def is_media(self) -> bool:
        return self._packet_kind() == "media"

    def _packet_kind(self) -> str:
        if self.tag_type == TAG_SCRIPT:
            return "script"
        if not self.data:
            return "media"
        first = self.data[0]
        if self.tag_type == TAG_AUDIO:
            is_aac = first >> 4 == _SOUND_FORMAT_AAC
            return "config" if is_aac and len(self.data) > 1 and self.data[1] == 0 else "media"
        if first & 0x80:  # enhanced FLV (IsExHeader), e.g. what ffmpeg >= 6.1 writes for HEVC
            packet_type = first & 0x0F
            if packet_type == 2:
                return "end"
            return "config" if packet_type in _EX_CONFIG_PACKETS else "media"
        if first & 0x0F in _PACKETIZED_CODECS and len(self.data) > 1:
            avc_packet_type = self.data[1]
            if avc_packet_type == 0:
                return "config"
            if avc_packet_type == 2:
                return "end"
        return "media"


def timestamp_field(ts: int) -> int:
    """The 32-bit value of the tag timestamp field: 24 low bits then the extended (high) byte."""
    return ((ts & 0xFFFFFF) << 8) | ((ts >> 24) & 0xFF)


def decode_timestamp_field(raw: bytes) -> int:
    """Inverse of `timestamp_field` for the 4 bytes at offset 4 of a tag header."""
    return (raw[3] << 24) | (raw[0] << 16) | (raw[1] << 8) | raw[2]


def encode_tag(tag_type: int, timestamp: int, data: bytes) -> bytes:
    """Serialise one tag followed by its PreviousTagSize."""
    size = len(data)
    header = (
        bytes((tag_type,)) + size.to_bytes(3, "big") + _TS_STRUCT.pack(timestamp_field(timestamp))
    )
    return header + b"\x00\x00\x00" + data + (TAG_HEADER_SIZE + size).to_bytes(4, "big")


def flv_header(*, audio: bool, video: bool) -> bytes:
    """The 9-byte FLV file header plus PreviousTagSize0."""
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return b"FLV\x01" + bytes((flags,)) + FLV_HEADER_SIZE.to_bytes(4, "big") + b"\x00\x00\x00\x00"


def parse_header(buf: bytes) -> tuple[int, int]:
    """Return (type flags, offset of the first tag) of an FLV byte string."""
    if len(buf) < FLV_HEADER_SIZE + 4 or buf[:3] != b"FLV":
        msg = "missing FLV signature"
        raise FlvError(msg)
    data_offset = int.from_bytes(buf[5:9], "big")
    return buf[4], data_offset + 4


def iter_tags(buf: bytes, offset: int) -> Iterator[FlvTag]:
    """Yield complete tags from `offset` (just past a PreviousTagSize); stop at a truncated tail."""
    end = len(buf)
    while offset + TAG_HEADER_SIZE <= end:
        tag_type = buf[offset] & 0x1F  # the top bits are "filter"/reserved flags
        size = int.from_bytes(buf[offset + 1 : offset + 4], "big")
        ts = decode_timestamp_field(buf[offset + 4 : offset + 8])
        data_start = offset + TAG_HEADER_SIZE
        if data_start + size + 4 > end:
            return
        yield FlvTag(tag_type, ts, bytes(buf[data_start : data_start + size]))
        offset = data_start + size + 4


def parse_tags(buf: bytes) -> tuple[int, list[FlvTag]]:
    """Parse a whole FLV byte string into (header flags, tags)."""
    flags, offset = parse_header(buf)
    return flags, list(iter_tags(buf, offset))


@dataclass(frozen=True)
class ParsedFlv:
    """The parts of a source file needed to serve it as an endless live stream."""

    metadata: dict[str, object]
    video_config: tuple[FlvTag, ...]
    audio_config: tuple[FlvTag, ...]
    media: tuple[FlvTag, ...]
    """Media tags in file order, starting at the first video keyframe."""
    period_ms: int
    """Length of one loop: the next loop's first tag is stamped `period_ms` after this one's."""
    frame_ms: int
    """Typical video frame duration (audio frame duration for a file without video)."""
    grid_ms: int
    """Smallest span holding a whole number of frames at an integer ms (100 ms at 30 fps)."""


def parse_flv(buf: bytes) -> ParsedFlv:
    """Split an FLV file into metadata, decoder configs and the loopable media tags."""
    _, tags = parse_tags(buf)
    metadata: dict[str, object] = {}
    video_config: list[FlvTag] = []
    audio_config: list[FlvTag] = []
    media: list[FlvTag] = []
    for tag in tags:
        if tag.tag_type == TAG_SCRIPT:
            values = amf0_decode_all(tag.data)
            is_meta = len(values) >= 2 and values[0] == "onMetaData"
            if not metadata and is_meta and isinstance(values[1], Mapping):
                metadata = {str(k): v for k, v in values[1].items()}
        elif tag.is_sequence_header:
            if not media:  # configs repeated mid-file are not expected from ffmpeg; ignore them
                (video_config if tag.is_video else audio_config).append(tag)
        elif tag.is_media and (media or tag.is_keyframe):
            media.append(tag)
    if not media:
        msg = "no video keyframe found"
        raise FlvError(msg)
    first_ts = media[0].timestamp
    # Audio stamped before the keyframe cannot be looped without going backwards: drop it.
    rebased = tuple(
        FlvTag(t.tag_type, t.timestamp - first_ts, t.data) for t in media if t.timestamp >= first_ts
    )
    # The loop period must keep each track strictly increasing across the wrap, with a normal
    # frame gap (players and muxers reject two frames at the same frame-rate tick).
    tracks = _track_timing(rebased)
    grid = _frame_grid(metadata)
    return ParsedFlv(
        metadata=metadata,
        video_config=tuple(video_config),
        audio_config=tuple(audio_config),
        media=rebased,
        period_ms=_round_up(max(last + frame for last, frame in tracks.values()), grid),
        frame_ms=tracks[TAG_VIDEO][1] if TAG_VIDEO in tracks else tracks[TAG_AUDIO][1],
        grid_ms=grid,
    )


def _frame_grid(metadata: Mapping[str, object]) -> int:
    # ffmpeg stamps frame k at round(k * 1000 / fps) ms. Shifting a loop or a switch by a
    # multiple of this grid keeps those stamps on the same frame-rate ticks; shifting by an
    # arbitrary amount makes ffmpeg's constant-frame-rate output (e.g. `-f null`) see two
    # frames on one tick and report "non monotonically increasing dts".
    fps = metadata.get("framerate")
    if isinstance(fps, float | int) and fps >= 1 and float(fps).is_integer():
        return 1000 // math.gcd(1000, int(fps))
    return 1


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _track_timing(media: tuple[FlvTag, ...]) -> dict[int, tuple[int, int]]:
    """Per track: (last timestamp, typical frame duration)."""
    timing: dict[int, tuple[int, int]] = {}
    for tag_type in (TAG_VIDEO, TAG_AUDIO):
        stamps = [t.timestamp for t in media if t.tag_type == tag_type]
        if stamps:
            deltas = [b - a for a, b in itertools.pairwise(stamps) if b > a]
            timing[tag_type] = (stamps[-1], round(statistics.median(deltas)) if deltas else 33)
    return timing


class LoopSource:
    """Pre-serialised loop of one rendition, shared read-only by every connection serving it.

    Tags are stored back to back as they go on the wire with relative timestamps; a cursor copies
    a run of them and patches only the 4 timestamp bytes of each tag, so serving costs one memcpy
    plus one `pack_into` per tag instead of re-encoding.
    """

    def __init__(self, parsed: ParsedFlv, *, audio_only: bool = False) -> None:
        self.audio_only = audio_only
        self.period_ms = parsed.period_ms
        self.frame_ms = parsed.frame_ms
        self.grid_ms = parsed.grid_ms
        tags = [t for t in parsed.media if t.is_audio] if audio_only else list(parsed.media)
        if not tags:
            msg = "source has no tags for this variant"
            raise FlvError(msg)
        has_audio = bool(parsed.audio_config) or any(t.is_audio for t in tags)
        self.header = flv_header(audio=has_audio, video=not audio_only)
        self.metadata = _live_metadata(parsed.metadata, audio_only=audio_only)
        configs = parsed.audio_config if audio_only else parsed.video_config + parsed.audio_config
        self.configs: tuple[tuple[int, bytes], ...] = tuple((t.tag_type, t.data) for t in configs)
        chunks: list[bytes] = []
        self.offsets: list[int] = []
        self.rel_ts: list[int] = []
        position = 0
        for tag in tags:
            encoded = encode_tag(tag.tag_type, tag.timestamp, tag.data)
            self.offsets.append(position)
            self.rel_ts.append(tag.timestamp)
            chunks.append(encoded)
            position += len(encoded)
        self.offsets.append(position)  # sentinel: end of the last tag
        self.loop_bytes = b"".join(chunks)

    @property
    def tag_count(self) -> int:
        return len(self.rel_ts)

    def config_tags(self, ts: int) -> bytes:
        """onMetaData plus the decoder configuration tags, stamped at `ts`."""
        parts = [encode_tag(TAG_SCRIPT, ts, script_tag_data("onMetaData", self.metadata))]
        parts.extend(encode_tag(tag_type, ts, data) for tag_type, data in self.configs)
        return b"".join(parts)


def _live_metadata(source: Mapping[str, object], *, audio_only: bool) -> dict[str, object]:
    """onMetaData as a live CDN sends it: duration 0 and no file size."""
    video_keys = {"width", "height", "videodatarate", "framerate", "videocodecid"}
    meta = {
        k: v
        for k, v in source.items()
        if k not in {"duration", "filesize"} and not (audio_only and k in video_keys)
    }
    return {"duration": 0.0, **meta}


class LoopCursor:
    """Position of one connection in an endless, monotonically re-stamped replay of a LoopSource."""

    def __init__(self, source: LoopSource, base_ts: int) -> None:
        self.source = source
        self._origin = base_ts
        self._loop_base = base_ts
        self._index = 0
        self.last_ts = base_ts

    def start(self) -> bytes:
        """FLV header, live onMetaData and decoder configs: the first bytes of every response."""
        return self.source.header + self.source.config_tags(self._loop_base)

    def next_ts(self) -> int:
        """Output timestamp of the next tag to be sent."""
        return self._loop_base + self.source.rel_ts[self._index]

    def take_until(self, media_ts: int) -> bytearray:
        """Serialise every pending tag stamped at or before `media_ts`, advancing the cursor."""
        out = bytearray()
        src = self.source
        while True:
            stop = bisect.bisect_right(src.rel_ts, media_ts - self._loop_base, lo=self._index)
            if stop > self._index:
                out += self._stamped(self._index, stop)
                self._index = stop
            if stop < src.tag_count:
                return out
            self._loop_base += src.period_ms
            self._index = 0

    def _stamped(self, first: int, stop: int) -> bytearray:
        src = self.source
        start_offset = src.offsets[first]
        chunk = bytearray(memoryview(src.loop_bytes)[start_offset : src.offsets[stop]])
        base = self._loop_base
        pack_into = _TS_STRUCT.pack_into
        for i in range(first, stop):
            pack_into(
                chunk, src.offsets[i] - start_offset + 4, timestamp_field(base + src.rel_ts[i])
            )
        self.last_ts = base + src.rel_ts[stop - 1]
        return chunk

    def switch(self, source: LoopSource) -> bytes:
        """Change rendition mid-stream: new onMetaData and configs, then the new loop's keyframe."""
        # A frame of headroom: the new keyframe lands a whole frame after anything already sent,
        # on the frame grid of the stream's first frame (see _frame_grid).
        earliest = self.last_ts + max(self.source.frame_ms, source.frame_ms)
        ts = self._origin + _round_up(earliest - self._origin, source.grid_ms)
        self.source = source
        self._loop_base = ts
        self._index = 0
        return source.config_tags(ts)
