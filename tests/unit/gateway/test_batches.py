"""Group commit of rate-limit hits: who waits for whom, what each call gets back."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.batches import Batches


class Writer:
    """A write that waits until released, and records the sizes it was asked for."""

    def __init__(self) -> None:
        self.sizes: list[tuple[str, int]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None
        self.total: dict[str, int] = {}

    async def __call__(self, key: str, n: int) -> list[int]:
        self.sizes.append((key, n))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        start = self.total.get(key, 0)
        self.total[key] = start + n
        return list(range(start + 1, start + n + 1))


async def test_calls_during_a_write_go_together_in_the_next() -> None:
    writer = Writer()
    batches: Batches[str, int] = Batches(writer)
    first = asyncio.create_task(batches.submit("k"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert writer.sizes == [("k", 1)]
    rest = [asyncio.create_task(batches.submit("k")) for _ in range(5)]
    await asyncio.sleep(0)
    writer.release.set()
    # Each call gets its own result, in the order the calls came.
    assert await first == 1
    assert await asyncio.gather(*rest) == [2, 3, 4, 5, 6]
    assert writer.sizes == [("k", 1), ("k", 5)]


async def test_keys_are_written_apart_and_an_idle_key_once_per_call() -> None:
    writer = Writer()
    writer.release.set()
    batches: Batches[str, int] = Batches(writer)
    assert list(await asyncio.gather(batches.submit("a"), batches.submit("b"))) == [1, 1]
    assert await batches.submit("a") == 2
    assert await batches.submit("a") == 3
    assert sorted(writer.sizes) == [("a", 1), ("a", 1), ("a", 1), ("b", 1)]


async def test_a_failed_write_fails_every_call_of_its_batch_only() -> None:
    writer = Writer()
    writer.fail = RuntimeError("unreachable")
    batches: Batches[str, int] = Batches(writer)
    calls = [asyncio.create_task(batches.submit("k")) for _ in range(3)]
    await asyncio.sleep(0)
    writer.release.set()
    for call in calls:
        with pytest.raises(RuntimeError, match="unreachable"):
            await call
    writer.fail = None
    assert await batches.submit("k") == 1


async def test_a_caller_that_left_before_its_batch_is_not_counted() -> None:
    writer = Writer()
    batches: Batches[str, int] = Batches(writer)
    first = asyncio.create_task(batches.submit("k"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batches.submit("k")) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    writer.release.set()
    assert await first == 1
    assert await waiting[0] == 2
    assert await waiting[2] == 3
    assert writer.sizes == [("k", 1), ("k", 2)]


async def test_a_write_of_the_wrong_size_fails_its_calls_instead_of_leaving_them_waiting() -> None:
    async def short(_key: str, _n: int) -> list[int]:
        return []

    batches: Batches[str, int] = Batches(short)
    with pytest.raises(RuntimeError, match="0 results for 1 calls"):
        await batches.submit("k")
