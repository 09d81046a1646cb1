"""Uploader: consumes recording.finished when upload was asked; emits upload.done."""
