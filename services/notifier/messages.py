"""The short human text of a chat or push notification, one line per event."""

from __future__ import annotations

from shared.events import (
    Event,
    FileDeleted,
    RecordedFile,
    RecordingFinished,
    RecordingStarted,
    RoomLive,
    UploadDone,
)

TITLE = "TikTok LIVE recorder"


def _who(unique_id: str | None, fallback: str | None) -> str:
    if unique_id:
        return f"@{unique_id.removeprefix('@')}"
    return fallback or "a watched room"


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def _segments(event: RecordingFinished) -> list[RecordedFile]:
    """The files recorded, without those joined from them (options.join): the same media."""
    return [f for f in event.files if not f.joined_from]


def _minutes(event: RecordingFinished) -> int:
    durations = [f.duration_s for f in _segments(event) if f.duration_s is not None]
    if durations:
        return round(sum(durations) / 60)
    if event.started_at is not None:
        return round(max(0.0, (event.ended_at - event.started_at).total_seconds()) / 60)
    return 0


def message(event: Event) -> str:
    """``@user is live: <title>``, ``recording finished: 2 files, 41 min``..."""
    match event:
        case RoomLive():
            who = _who(event.unique_id, event.watcher_key)
            return f"{who} is live: {event.title}" if event.title else f"{who} is live"
        case RecordingStarted():
            return f"recording started: room {event.room_id}"
        case RecordingFinished() if event.error_code and not event.files:
            return f"recording failed: {event.error_code}"
        case RecordingFinished():
            text = f"recording finished: {_files(len(_segments(event)))}, {_minutes(event)} min"
            joins = len(event.files) - len(_segments(event))
            if joins:
                text += ", joined into one" if joins == 1 else f", joined into {joins}"
            return f"{text} ({event.error_code})" if event.error_code else text
        case UploadDone():
            return f"uploaded: {_files(len(event.files))}"
        case FileDeleted():
            return f"file deleted ({event.reason}): {event.path.rsplit('/', 1)[-1]}"
    return event.type_name()
