"""Indexer: consumes recording.finished and upload.done into a SQLite file index; answers file
queries over NATS request/reply; applies retention and emits file.deleted."""
