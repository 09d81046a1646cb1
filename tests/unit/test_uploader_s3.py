"""The uploader's pure parts: keys, ETags, part ranges, path checks, error classification."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from services.uploader.files import plan
from services.uploader.s3 import (
    IntegrityError,
    _checked,
    etag_is_md5,
    is_transient,
    local_etag,
    multipart_etag,
    object_key,
    part_ranges,
    read_part,
)
from services.uploader.settings import UploaderSettings
from shared.events import RecordedFile


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("prefix", "relative", "key"),
    [
        ("", "7001/a.mp4", "7001/a.mp4"),
        ("archive", "7001/a.mp4", "archive/7001/a.mp4"),
        ("/archive/tlr/", "7001/a.mp4", "archive/tlr/7001/a.mp4"),
    ],
)
def test_object_key(prefix: str, relative: str, key: str) -> None:
    assert object_key(prefix, relative) == key


def test_part_ranges_cover_the_file_once() -> None:
    assert part_ranges(12, 5) == [(0, 5), (5, 5), (10, 2)]
    assert part_ranges(10, 5) == [(0, 5), (5, 5)]
    assert part_ranges(0, 5) == [(0, 0)]


def test_local_etags_follow_s3(tmp_path: Path) -> None:
    data = os.urandom(2500)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert local_etag(path, 2500, multipart=False, part_size=1000) == hashlib.md5(data).hexdigest()
    digests = [hashlib.md5(data[i : i + 1000]).digest() for i in range(0, 2500, 1000)]
    expected = hashlib.md5(b"".join(digests)).hexdigest() + "-3"
    assert local_etag(path, 2500, multipart=True, part_size=1000) == expected
    assert multipart_etag(digests) == expected


def test_a_file_shorter_than_announced_is_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    with pytest.raises(IntegrityError):
        read_part(path, 0, 10)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), True),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), True),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"), True),
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("NoSuchBucket", 404), True),
        (IntegrityError("etag"), True),
        (client_error("AccessDenied", 403), False),
        (client_error("InvalidAccessKeyId", 403), False),
        (botocore.exceptions.NoCredentialsError(), False),
    ],
)
def test_transient_errors(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.mark.parametrize(
    "path", ["../x.mp4", "/etc/passwd", "", ".", "a/../../x.mp4", "a/../b.mp4", "link/x.mp4"]
)
def test_paths_outside_the_recordings_dir_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "rec"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    settings = UploaderSettings(recordings_dir=root)
    with pytest.raises(ValueError, match="RECORDINGS_DIR"):
        plan(settings, [RecordedFile(path=path, size=1)])


def test_plan_maps_paths_to_keys(tmp_path: Path) -> None:
    settings = UploaderSettings(recordings_dir=tmp_path, s3_prefix="p")
    [planned] = plan(settings, [RecordedFile(path="7001/./2025//a.mp4", size=1)])
    assert planned.key == "p/7001/2025/a.mp4"
    assert planned.path == tmp_path.resolve() / "7001/2025/a.mp4"


@pytest.mark.parametrize(
    ("reply", "md5"),
    [
        ({}, True),
        ({"ServerSideEncryption": "AES256"}, True),
        ({"ServerSideEncryption": "aws:kms"}, False),
        ({"ServerSideEncryption": "aws:kms:dsse"}, False),
        ({"SSECustomerAlgorithm": "AES256"}, False),
    ],
)
def test_which_etags_can_be_md5s(reply: dict[str, str], md5: bool) -> None:
    assert etag_is_md5(reply) is md5


def test_an_opaque_etag_is_taken_not_compared_for_ever() -> None:
    digest = hashlib.md5(b"x").hexdigest()
    assert _checked({"ETag": f'"{digest}"'}, digest, "k") == digest
    with pytest.raises(IntegrityError):
        _checked({"ETag": '"0123"'}, digest, "k")
    kms = {"ETag": '"0123"', "ServerSideEncryption": "aws:kms"}
    assert _checked(kms, digest, "k") == "0123"
