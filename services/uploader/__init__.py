"""Uploader: consumes recording.finished when upload was asked; emits upload.done (and
file.deleted for local copies it removes once their upload is confirmed)."""
