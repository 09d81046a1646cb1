"""The recorder's own settings, on top of the ones every service reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    recorder_engine: Literal["native", "tlr-cli"] = Field(
        "native", description="Engine of a job that names none in options.engine"
    )
    egress_media_direct: bool = Field(
        False,
        description="Pull the FLV of a job on a pool egress directly, not through its proxy "
        "(room lookups still go through it); a job's own proxy carries its media regardless",
    )
    tlr_root: Path | None = Field(
        None, description="Checkout of the upstream tiktok-live-recorder (the tlr-cli engine)"
    )
    tlr_python: Path | None = Field(
        None, description="Python that runs it (default: TLR_ROOT/.venv/bin/python, else ours)"
    )
    tlr_pin: str | None = Field(
        None, description="Commit the checkout must be at (a full SHA or a prefix of 7+)"
    )
    tlr_pin_override: bool = Field(False, description="Run the checkout even off TLR_PIN")
    tlr_stall_factor: float = Field(
        3.0, ge=1, le=60, description="No growth of its output for READ_TIMEOUT x this: killed"
    )
    tlr_pass_env: str = Field(
        "", description="Names of environment variables the CLI also gets, comma-separated"
    )
