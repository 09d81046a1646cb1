"""Recorder: claims recording work (room.live, recording.requested) through the shared durable
``recorders``; emits recording.started and recording.finished and writes its part of KV ``jobs``."""
