"""Source media for the fake CDN: named profiles rendered once by ffmpeg, cached on disk."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from services.recorder.ffmpeg import choose_ffmpeg
from tlr.fake_tiktok.flv import LoopSource, parse_flv

DEFAULT_PROFILE = "h264_360p"
# Bump when the ffmpeg arguments change so stale cached files are not reused.
_CACHE_VERSION = 1

_PROFILE_RE = re.compile(
    r"^(?P<codec>h264|hevc)_(?P<height>\d+)p(?:_(?P<rate>\d+)(?P<unit>[km]))?$"
)
_SIZES = {360: (640, 360), 540: (960, 540), 720: (1280, 720), 1080: (1920, 1080)}
_DEFAULT_KBPS = {360: 800, 540: 1200, 720: 1600, 1080: 3000}
# Distinct tones make it easy to hear (or assert) which rendition a recording came from.
_TONES = {360: 440, 540: 550, 720: 660, 1080: 880}


@dataclass(frozen=True)
class Profile:
    """One rendition the fake broadcaster can stream, e.g. `h264_720p` or `h264_720p_2m`."""

    name: str
    codec: str
    width: int
    height: int
    video_kbps: int
    fps: int = 30
    gop: int = 60
    duration_s: int = 10
    audio_kbps: int = 64
    sample_rate: int = 44100

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def cache_filename(self) -> str:
        """File name encoding every parameter, so a cache hit is always the right content."""
        return (
            f"{self.codec}_{self.resolution}_{self.fps}fps_v{self.video_kbps}k_a{self.audio_kbps}k"
            f"_{self.sample_rate}hz_g{self.gop}_{self.duration_s}s_v{_CACHE_VERSION}.flv"
        )


def parse_profile(name: str) -> Profile:
    """Parse `<codec>_<height>p[_<bitrate><k|m>]`; raise ValueError for anything else."""
    match = _PROFILE_RE.match(name)
    if match is None or int(match["height"]) not in _SIZES:
        sizes = ", ".join(f"{h}p" for h in _SIZES)
        msg = f"unknown profile {name!r}: expected h264|hevc _ {sizes} [_<N>k|_<N>m]"
        raise ValueError(msg)
    height = int(match["height"])
    kbps = _DEFAULT_KBPS[height]
    if match["rate"]:
        kbps = int(match["rate"]) * (1000 if match["unit"] == "m" else 1)
    if not 50 <= kbps <= 50_000:
        msg = f"profile {name!r}: bitrate {kbps} kbit/s out of range"
        raise ValueError(msg)
    width, height = _SIZES[height]
    return Profile(name=name, codec=match["codec"], width=width, height=height, video_kbps=kbps)


def ffmpeg_binary() -> str:
    """The recorder's choice (FFMPEG_BIN, else a 6.1+ ffmpeg on PATH, else the bundled one):
    rendering HEVC as enhanced FLV needs the same ffmpeg 6.1 as remuxing it."""
    return choose_ffmpeg(os.environ.get("FFMPEG_BIN")).path


def default_media_dir() -> Path:
    return Path.home() / ".cache" / "tlr-fake-tiktok"


def ffmpeg_args(profile: Profile, output: Path) -> list[str]:
    """Arguments (after the binary) rendering `profile` as a short, GOP-aligned FLV file."""
    height = profile.height
    kbps = profile.video_kbps
    if profile.codec == "h264":
        video = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
        video += ["-g", str(profile.gop), "-keyint_min", str(profile.gop), "-sc_threshold", "0"]
    else:
        gop = profile.gop
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:log-level=error"
        video = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", params]
    return [
        "-nostdin",
        "-hide_banner",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={profile.resolution}:rate={profile.fps}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={_TONES.get(height, 440)}:sample_rate={profile.sample_rate}",
        *video,
        "-pix_fmt",
        "yuv420p",
        "-b:v",
        f"{kbps}k",
        # A VBV cap keeps the measured bitrate close to nominal, which the density benchmark needs.
        "-maxrate",
        f"{kbps}k",
        "-bufsize",
        f"{kbps * 2}k",
        "-c:a",
        "aac",
        "-b:a",
        f"{profile.audio_kbps}k",
        "-ac",
        "2",
        "-t",
        str(profile.duration_s),
        "-f",
        "flv",
        str(output),
    ]


async def ensure_media_file(profile: Profile, media_dir: Path) -> Path:
    """Return the cached FLV for `profile`, rendering it first if needed."""
    target = media_dir / profile.cache_filename
    if await asyncio.to_thread(target.is_file):
        return target
    await asyncio.to_thread(media_dir.mkdir, parents=True, exist_ok=True)
    # Render to a private name then rename: concurrent test processes never see a partial file.
    partial = media_dir / f".{profile.cache_filename}.{os.getpid()}.{secrets.token_hex(4)}.part"
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_binary(),
        *ffmpeg_args(profile, partial),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    await asyncio.to_thread(_publish, partial, target, proc.returncode == 0)
    if proc.returncode != 0:
        detail = stderr.decode(errors="replace").strip()
        msg = f"ffmpeg failed to render {profile.name} (exit {proc.returncode}): {detail}"
        raise RuntimeError(msg)
    return target


def _publish(partial: Path, target: Path, success: bool) -> None:
    if success and partial.is_file():
        partial.replace(target)
    else:
        partial.unlink(missing_ok=True)


def _load_sources(path: Path) -> tuple[LoopSource, LoopSource]:
    parsed = parse_flv(path.read_bytes())
    return LoopSource(parsed), LoopSource(parsed, audio_only=True)


@dataclass(frozen=True)
class ProfileMedia:
    """A loaded profile: the audio+video loop and its audio-only variant (only_audio=1)."""

    profile: Profile
    av: LoopSource
    audio: LoopSource

    def variant(self, *, audio_only: bool) -> LoopSource:
        return self.audio if audio_only else self.av


class MediaLibrary:
    """Profiles loaded in memory; each is rendered and parsed at most once per process."""

    def __init__(self, media_dir: Path | None = None) -> None:
        self.media_dir = media_dir if media_dir is not None else default_media_dir()
        self._loaded: dict[str, ProfileMedia] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def load(self, name: str) -> ProfileMedia:
        """Render (if needed) and parse profile `name`; raises ValueError for a bad name."""
        if name in self._loaded:
            return self._loaded[name]
        profile = parse_profile(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name not in self._loaded:
                path = await ensure_media_file(profile, self.media_dir)
                av, audio = await asyncio.to_thread(_load_sources, path)
                self._loaded[name] = ProfileMedia(profile, av, audio)
        return self._loaded[name]

    def get(self, name: str) -> ProfileMedia:
        """A profile already loaded with `load` (rooms only reference loaded profiles)."""
        return self._loaded[name]
