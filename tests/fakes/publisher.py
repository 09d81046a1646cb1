"""A ``Publisher`` that keeps what was published, deduplicated by event id like JetStream."""

from __future__ import annotations

from shared.events import Event


class MemoryPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._ids: set[str] = set()

    async def publish(self, event: Event) -> object:
        if event.event_id not in self._ids:  # JetStream's duplicate window drops a repeat
            self._ids.add(event.event_id)
            self.events.append(event)
        return None

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]
