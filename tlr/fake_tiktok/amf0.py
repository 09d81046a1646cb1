"""Minimal AMF0 codec for FLV script tags (onMetaData): the value types ffmpeg writes and reads."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

_NUMBER = 0x00
_BOOLEAN = 0x01
_STRING = 0x02
_OBJECT = 0x03
_NULL = 0x05
_UNDEFINED = 0x06
_ECMA_ARRAY = 0x08
_OBJECT_END = 0x09
_STRICT_ARRAY = 0x0A
_DATE = 0x0B
_LONG_STRING = 0x0C

_DOUBLE = struct.Struct(">d")


class Amf0Error(ValueError):
    """Malformed or unsupported AMF0 data."""


def _encode_key(key: str) -> bytes:
    raw = key.encode()
    return len(raw).to_bytes(2, "big") + raw


def amf0_encode(value: object) -> bytes:
    """Encode a Python value; dicts become ECMA arrays, as in every onMetaData seen in the wild."""
    if value is None:
        return bytes((_NULL,))
    if isinstance(value, bool):  # before int: bool is an int subclass
        return bytes((_BOOLEAN, int(value)))
    if isinstance(value, int | float):
        return bytes((_NUMBER,)) + _DOUBLE.pack(float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return bytes((_LONG_STRING,)) + len(raw).to_bytes(4, "big") + raw
        return bytes((_STRING,)) + len(raw).to_bytes(2, "big") + raw
    if isinstance(value, Mapping):
        body = b"".join(_encode_key(str(k)) + amf0_encode(v) for k, v in value.items())
        return bytes((_ECMA_ARRAY,)) + len(value).to_bytes(4, "big") + body + b"\x00\x00\x09"
    if isinstance(value, Sequence):
        items = b"".join(amf0_encode(v) for v in value)
        return bytes((_STRICT_ARRAY,)) + len(value).to_bytes(4, "big") + items
    msg = f"cannot encode {type(value).__name__} as AMF0"
    raise Amf0Error(msg)


def script_tag_data(name: str, value: object) -> bytes:
    """Payload of a script tag: the handler name followed by its argument."""
    return amf0_encode(name) + amf0_encode(value)


def amf0_decode_all(data: bytes) -> list[object]:
    """Decode consecutive AMF0 values, e.g. ["onMetaData", {...}] from a script tag."""
    values: list[object] = []
    pos = 0
    while pos < len(data):
        value, pos = _decode(data, pos)
        values.append(value)
    return values


def _need(data: bytes, pos: int, size: int) -> None:
    if pos + size > len(data):
        msg = "truncated AMF0 data"
        raise Amf0Error(msg)


def _read_key(data: bytes, pos: int) -> tuple[str, int]:
    _need(data, pos, 2)
    size = int.from_bytes(data[pos : pos + 2], "big")
    _need(data, pos + 2, size)
    return data[pos + 2 : pos + 2 + size].decode(errors="replace"), pos + 2 + size


def _decode_properties(data: bytes, pos: int) -> tuple[dict[str, object], int]:
    props: dict[str, object] = {}
    while True:
        _need(data, pos, 3)
        if data[pos : pos + 3] == b"\x00\x00\x09":
            return props, pos + 3
        key, pos = _read_key(data, pos)
        props[key], pos = _decode(data, pos)


def _decode(data: bytes, pos: int) -> tuple[object, int]:
    _need(data, pos, 1)
    marker = data[pos]
    pos += 1
    if marker == _NUMBER:
        _need(data, pos, 8)
        return _DOUBLE.unpack_from(data, pos)[0], pos + 8
    if marker == _BOOLEAN:
        _need(data, pos, 1)
        return bool(data[pos]), pos + 1
    if marker == _STRING:
        return _read_key(data, pos)
    if marker == _LONG_STRING:
        _need(data, pos, 4)
        size = int.from_bytes(data[pos : pos + 4], "big")
        _need(data, pos + 4, size)
        return data[pos + 4 : pos + 4 + size].decode(errors="replace"), pos + 4 + size
    if marker == _OBJECT:
        return _decode_properties(data, pos)
    if marker == _ECMA_ARRAY:
        _need(data, pos, 4)
        return _decode_properties(data, pos + 4)  # the count is advisory; the end marker rules
    if marker == _STRICT_ARRAY:
        _need(data, pos, 4)
        count = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        items: list[object] = []
        for _ in range(count):
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos
    if marker == _DATE:
        _need(data, pos, 10)
        return _DOUBLE.unpack_from(data, pos)[0], pos + 10
    if marker in (_NULL, _UNDEFINED):
        return None, pos
    msg = f"unsupported AMF0 marker 0x{marker:02x}"
    raise Amf0Error(msg)
