"""Incremental FLV tag reader for an HTTP-FLV byte stream arriving in arbitrary chunks.

Layout (TIKTOK.md §5.5): a 9-byte header (``FLV``, version, flags, data offset) and
PreviousTagSize0, then tags: type (1 byte), data size (3, big-endian), timestamp (3, then one
extended high byte), stream id (3), data, PreviousTagSize (4).

Cost matters (hundreds of streams per process), so:

- a chunk holding whole tags is parsed in place: each tag is a ``memoryview`` slice of the
  chunk (``bytes`` is immutable, so the slice stays valid however long it is kept);
- a tag split across chunks is completed by collecting the pieces and joining them once, when
  enough bytes have arrived (no re-copy per chunk, so a large keyframe costs one join);
- a tag header is decoded with one ``struct.unpack_from`` and the flags from two bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
FLV_HEADER_SIZE = 9
TAG_HEADER_SIZE = 11
PREV_TAG_SIZE = 4
# The size field (24 bits) cannot exceed 16 MiB; no live frame comes near 8 MiB (a 1080p
# keyframe is well under 1 MiB), so anything larger means the reader lost sync: garbage.
MAX_TAG_SIZE = 8 * 1024 * 1024
# A data offset beyond this is garbage: real files use 9.
_MAX_DATA_OFFSET = 1024

_TAG_TYPES = frozenset((TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT))
_HEADER = struct.Struct(">II")  # (type << 24 | size, timestamp field)
_U32 = struct.Struct(">I")

# Flag bits of FlvTag.flags.
F_VIDEO_CONFIG = 1
F_AUDIO_CONFIG = 2
F_KEYFRAME = 4
F_METADATA = 8
F_SEQUENCE_END = 16

_CODEC_AVC = 7
_CODEC_HEVC = 12  # the non-standard id Chinese CDNs (and TikTok) use for HEVC in legacy FLV
_PACKETIZED = frozenset((_CODEC_AVC, _CODEC_HEVC))  # codecs whose 2nd byte is a packet type
_SOUND_AAC = 10
_SOUND_EX_HEADER = 9  # enhanced-FLV audio: the packet type is in the low nibble
_EX_SEQUENCE_START = 0
_EX_SEQUENCE_END = 2
_ON_METADATA = b"\x02\x00\x0aonMetaData"  # AMF0 string "onMetaData"


class FlvFormatError(ValueError):
    """The bytes are not an FLV stream (bad signature, unknown tag type, absurd tag size)."""


class FlvHeader:
    """The stream's FLV header: its type flags (audio 0x04, video 0x01)."""

    __slots__ = ("flags",)

    def __init__(self, flags: int) -> None:
        self.flags = flags

    @property
    def has_audio(self) -> bool:
        return bool(self.flags & 0x04)

    @property
    def has_video(self) -> bool:
        return bool(self.flags & 0x01)


class FlvTag:
    """One complete tag.

    ``raw`` is the whole tag as on the wire: 11-byte header, data and PreviousTagSize. It is a
    view of the received chunk: copy it (``bytes(raw)``) only to keep it beyond writing it out.
    """

    __slots__ = ("flags", "raw", "timestamp", "type")

    def __init__(self, tag_type: int, timestamp: int, raw: memoryview, flags: int) -> None:
        self.type = tag_type
        self.timestamp = timestamp
        self.raw = raw
        self.flags = flags

    def __repr__(self) -> str:
        return (
            f"FlvTag(type={self.type}, ts={self.timestamp}, size={self.size}, flags={self.flags})"
        )

    @property
    def size(self) -> int:
        """Size of the tag data (the field of the tag header)."""
        return len(self.raw) - TAG_HEADER_SIZE - PREV_TAG_SIZE

    @property
    def payload(self) -> memoryview:
        """The tag data without its header and PreviousTagSize."""
        return self.raw[TAG_HEADER_SIZE : len(self.raw) - PREV_TAG_SIZE]

    @property
    def is_video(self) -> bool:
        return self.type == TAG_VIDEO

    @property
    def is_audio(self) -> bool:
        return self.type == TAG_AUDIO

    @property
    def is_script(self) -> bool:
        return self.type == TAG_SCRIPT

    @property
    def is_video_sequence_header(self) -> bool:
        """AVC/HEVC decoder configuration (legacy or enhanced-FLV SequenceStart)."""
        return bool(self.flags & F_VIDEO_CONFIG)

    @property
    def is_audio_sequence_header(self) -> bool:
        """AAC AudioSpecificConfig (or enhanced-FLV audio SequenceStart)."""
        return bool(self.flags & F_AUDIO_CONFIG)

    @property
    def is_sequence_header(self) -> bool:
        return bool(self.flags & (F_VIDEO_CONFIG | F_AUDIO_CONFIG))

    @property
    def is_keyframe(self) -> bool:
        """A video frame a decoder can start from (frame type 1, not a sequence header)."""
        return bool(self.flags & F_KEYFRAME)

    @property
    def is_metadata(self) -> bool:
        """A script tag carrying onMetaData."""
        return bool(self.flags & F_METADATA)

    @property
    def is_sequence_end(self) -> bool:
        """An AVC/HEVC end-of-sequence marker (carries no frame)."""
        return bool(self.flags & F_SEQUENCE_END)


def tag_flags(tag_type: int, data: bytes | memoryview, start: int, size: int) -> int:
    """Classify the tag whose data starts at ``data[start]`` and is ``size`` bytes long."""
    if size == 0:
        return 0
    b0 = data[start]
    if tag_type == TAG_VIDEO:
        frame_type = (b0 >> 4) & 0x07  # bit 7 is IsExHeader in enhanced FLV
        if b0 & 0x80:
            packet_type = b0 & 0x0F
            if packet_type == _EX_SEQUENCE_START:
                return F_VIDEO_CONFIG
            if packet_type == _EX_SEQUENCE_END:
                return F_SEQUENCE_END
            return F_KEYFRAME if frame_type == 1 else 0
        codec = b0 & 0x0F
        if codec in _PACKETIZED and size > 1:
            packet_type = data[start + 1]
            if packet_type == 0:
                return F_VIDEO_CONFIG
            if packet_type == 2:
                return F_SEQUENCE_END
        return F_KEYFRAME if frame_type == 1 else 0
    if tag_type == TAG_AUDIO:
        sound_format = b0 >> 4
        if sound_format == _SOUND_AAC:
            return F_AUDIO_CONFIG if size > 1 and data[start + 1] == 0 else 0
        if sound_format == _SOUND_EX_HEADER and b0 & 0x0F == _EX_SEQUENCE_START:
            return F_AUDIO_CONFIG
        return 0
    # Script data: only onMetaData matters to a recorder.
    if data[start : start + len(_ON_METADATA)] == _ON_METADATA:
        return F_METADATA
    return 0


class FlvReader:
    """Feed it the body of one HTTP-FLV response chunk by chunk; it returns complete tags.

    One reader per connection: a new connection starts with a new FLV header.
    """

    __slots__ = ("_have", "_max_tag_size", "_need", "_parts", "bytes_in", "header", "tags_out")

    def __init__(self, *, max_tag_size: int = MAX_TAG_SIZE) -> None:
        self.header: FlvHeader | None = None
        self.bytes_in = 0
        self.tags_out = 0
        self._max_tag_size = max_tag_size
        self._parts: list[bytes] = []
        self._have = 0
        # Bytes needed (from the start of the unparsed data) before parsing can progress.
        self._need = FLV_HEADER_SIZE

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a tag (an incomplete tail)."""
        return self._have

    def feed(self, chunk: bytes) -> list[FlvTag]:
        """Parse ``chunk``; return the tags it completed (possibly none).

        Raises:
            FlvFormatError: the stream is not FLV or is corrupt.
        """
        n = len(chunk)
        if n == 0:
            return []
        self.bytes_in += n
        if self._parts:
            self._parts.append(chunk)
            self._have += n
            if self._have < self._need:
                return []
            data = b"".join(self._parts)
            self._parts = []
        elif n < self._need:
            self._parts.append(bytes(chunk))
            self._have = n
            return []
        else:
            data = bytes(chunk)  # no copy for bytes; a bytearray must not change under our views
        self._have = 0

        pos = 0
        if self.header is None:
            pos = self._parse_header(data)
            if pos < 0:
                return []
        tags, pos = self._parse_tags(data, pos)
        end = len(data)
        if pos < end:
            tail = data[pos:]
            self._parts = [tail]
            self._have = len(tail)
            self._need = self._tag_need(tail)
        else:
            self._need = TAG_HEADER_SIZE
        self.tags_out += len(tags)
        return tags

    def _parse_header(self, data: bytes) -> int:
        """Offset of the first tag, or -1 (and the data kept) if the header is incomplete."""
        if data[:3] != b"FLV":
            msg = f"not an FLV stream (starts with {bytes(data[:16])!r})"
            raise FlvFormatError(msg)
        data_offset: int = _U32.unpack_from(data, 5)[0]
        if not FLV_HEADER_SIZE <= data_offset <= _MAX_DATA_OFFSET:
            msg = f"FLV header data offset {data_offset} is not plausible"
            raise FlvFormatError(msg)
        first_tag = data_offset + PREV_TAG_SIZE
        if len(data) < first_tag:
            self._parts = [data]
            self._have = len(data)
            self._need = first_tag
            return -1
        self.header = FlvHeader(data[4])
        return first_tag

    def _tag_need(self, tail: bytes) -> int:
        if len(tail) < TAG_HEADER_SIZE:
            return TAG_HEADER_SIZE
        head: int = _HEADER.unpack_from(tail, 0)[0]
        return TAG_HEADER_SIZE + (head & 0xFFFFFF) + PREV_TAG_SIZE

    def _parse_tags(self, data: bytes, pos: int) -> tuple[list[FlvTag], int]:
        out: list[FlvTag] = []
        append = out.append
        unpack = _HEADER.unpack_from
        view = memoryview(data)
        end = len(data)
        max_size = self._max_tag_size
        while pos + TAG_HEADER_SIZE <= end:
            head, ts_field = unpack(data, pos)
            size = head & 0xFFFFFF
            tag_type = (head >> 24) & 0x1F  # the top bits are reserved / the filter flag
            if tag_type not in _TAG_TYPES:
                msg = f"unknown FLV tag type {tag_type} at stream byte {self._abs(pos, end)}"
                raise FlvFormatError(msg)
            if size > max_size:
                msg = f"FLV tag of {size} bytes at stream byte {self._abs(pos, end)} is absurd"
                raise FlvFormatError(msg)
            stop = pos + TAG_HEADER_SIZE + size + PREV_TAG_SIZE
            if stop > end:
                break
            timestamp = (ts_field >> 8) | ((ts_field & 0xFF) << 24)
            flags = tag_flags(tag_type, data, pos + TAG_HEADER_SIZE, size)
            append(FlvTag(tag_type, timestamp, view[pos:stop], flags))
            pos = stop
        return out, pos

    def _abs(self, pos: int, end: int) -> int:
        return self.bytes_in - end + pos


# --- writing -------------------------------------------------------------------------------


def timestamp_field(ts: int) -> int:
    """The 32-bit timestamp field of a tag header: 24 low bits, then the extended high byte."""
    return ((ts & 0xFFFFFF) << 8) | ((ts >> 24) & 0xFF)


def file_header(flags: int) -> bytes:
    """The 9-byte FLV header plus PreviousTagSize0."""
    return b"FLV\x01" + bytes((flags & 0x05,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def encode_tag(tag_type: int, timestamp: int, data: bytes | memoryview) -> bytes:
    """Serialise one tag (stream id 0) followed by its PreviousTagSize."""
    size = len(data)
    if size > MAX_TAG_SIZE:
        msg = f"tag of {size} bytes is too large"
        raise ValueError(msg)
    head = _HEADER.pack((tag_type << 24) | size, timestamp_field(timestamp))
    return head + b"\x00\x00\x00" + bytes(data) + _U32.pack(TAG_HEADER_SIZE + size)


def trim_partial_tail(path: Path, *, chunk: int = 1 << 20) -> int:
    """Cut a raw FLV file after its last complete tag (blocking); the bytes removed.

    A write that failed midway (a full disk) leaves half a tag at the end, which a remux
    keeps and a player then decodes as damaged frames. A file that is not FLV is left alone.
    """
    reader = FlvReader()
    try:
        with path.open("rb") as f:
            while data := f.read(chunk):
                reader.feed(data)
    except (OSError, FlvFormatError):
        return 0
    cut = reader.buffered
    if cut == 0 or reader.header is None:
        return 0
    with path.open("r+b") as f:
        f.truncate(reader.bytes_in - cut)
    return cut
