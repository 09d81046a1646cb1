"""Notifier: consumes room.live, recording.started, recording.finished, upload.done and
file.deleted; delivers them to the subscriptions that want them (signed webhooks, Apprise)."""
