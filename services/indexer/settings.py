"""The indexer's own settings, on top of the ones every service reads."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.config import MIB, Settings


class IndexerSettings(Settings):
    """Settings of the indexer (file index, retention and quotas)."""

    index_db: Path = Field(Path("var/index.sqlite3"), description="SQLite file of the file index")
    retention_days: float = Field(
        0, ge=0, description="Delete local files older than this (0 = keep forever)"
    )
    quota_bytes_per_room: int = Field(
        0, ge=0, description="Local bytes a room may use; oldest files go first (0 = no quota)"
    )
    disk_free_min_bytes: int = Field(
        0, ge=0, description="Disk floor: delete oldest files while less is free (0 = off)"
    )
    disk_free_warn_bytes: int = Field(
        5 * 1024 * MIB, ge=0, description="Warn (log and metric) when less than this is free"
    )
    retention_interval: float = Field(
        300, gt=0, description="Seconds between two retention and disk checks"
    )
    ffmpeg_bin: str | None = Field(
        None, description="ffmpeg making thumbnails (unset: ffmpeg on PATH, else the bundled one)"
    )
    retention_uploaded_first: bool = Field(
        True, description="Delete files already safe in S3 before files that are not"
    )
