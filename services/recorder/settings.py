"""The recorder's own settings, on top of the ones every service reads."""

from __future__ import annotations

from pydantic import Field

from shared.config import Settings


class RecorderSettings(Settings):
    """Settings of a recorder process."""

    max_recordings: int = Field(50, ge=1, le=1000, description="Recordings one recorder runs")
    max_startups: int = Field(
        32,
        ge=1,
        le=1000,
        description="Jobs one recorder starts at once (lookups, lease, claim); the rest wait",
    )
    max_loop_lag: float = Field(
        1.0,
        gt=0,
        description="Seconds late the event loop may run before new start-ups wait (overload)",
    )
    ffmpeg_bin: str | None = Field(
        None, description="ffmpeg to use (else a 6.1+ ffmpeg on PATH, else the bundled one)"
    )
    output_template: str = Field(
        "{room_id}/{YYYY}/{MM}/{DD}/{timestamp}_{title}.mp4",
        description="Default name of recorded files, relative to RECORDINGS_DIR",
    )
    quality: str = Field("origin,uhd,hd,sd,ld", description="Stream quality preference, best first")
    read_timeout: float = Field(
        10.0, gt=0, description="Seconds without a byte before a stream counts as stalled"
    )
