"""Group commit: calls for one key that come while its last batch is being written go together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Batches(Generic[K, R]):
    """At most one ``write(key, n)`` in flight per key. A call that finds one in flight waits
    and is written with every other call that came meanwhile, in the next ``write``: a busy
    key costs one round trip per batch, an idle one a round trip per call, as before.

    ``write`` returns one result per call, in the order the calls came, or raises: then every
    call of that batch raises the same exception.
    """

    def __init__(self, write: Callable[[K, int], Awaitable[Sequence[R]]]) -> None:
        self._write = write
        self._queues: dict[K, list[asyncio.Future[R]]] = {}
        self._writers: set[asyncio.Task[None]] = set()  # referenced until done

    async def submit(self, key: K) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(future)  # the writer of this key takes it in its next batch
        else:
            self._queues[key] = [future]
            writer = asyncio.create_task(self._drain(key))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await future

    async def _drain(self, key: K) -> None:
        queue = self._queues[key]
        try:
            while queue:
                # A caller cancelled while it waited (its client left) is not counted.
                batch = [f for f in queue if not f.done()]
                queue.clear()
                if batch:
                    await self._settle(key, batch)
        finally:
            del self._queues[key]
            for future in queue:  # left only when this writer itself was cancelled
                future.cancel()

    async def _settle(self, key: K, batch: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._write(key, len(batch))
            if len(results) != len(batch):
                msg = f"{len(results)} results for {len(batch)} calls"
                raise RuntimeError(msg)
        except asyncio.CancelledError:
            for future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
