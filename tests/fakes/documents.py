"""``Documents`` in a dict: the job store's backend in handler unit tests."""

from __future__ import annotations

from shared.documents import Conflict


class MemoryDocuments:
    """Versioned keys with compare-and-set, like a KV bucket (one revision counter for all)."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.revision = 0

    async def read(self, key: str) -> tuple[bytes, int] | None:
        return self.data.get(key)

    async def create(self, key: str, data: bytes) -> int:
        if key in self.data:
            raise Conflict(key)
        return self._write(key, data)

    async def update(self, key: str, data: bytes, revision: int) -> int:
        if key not in self.data or self.data[key][1] != revision:
            raise Conflict(key)
        return self._write(key, data)

    async def put(self, key: str, data: bytes) -> int:
        return self._write(key, data)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def _write(self, key: str, data: bytes) -> int:
        self.revision += 1
        self.data[key] = (data, self.revision)
        return self.revision
