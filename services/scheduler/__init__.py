"""Scheduler: owns watcher state (SQLite); consumes watch commands; emits room.live."""
