"""The TikTok client pool: one client per (proxy, cookies file), never one without its proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.config import Settings
from shared.events import RecordingOptions
from shared.secrets import SecretBox, SecretError, new_key
from shared.tiktok import CookiesError
from shared.tiktok.pool import IDLE_CLOSE, ClientPool
from tests.fakes.clock import ManualClock
from tests.helpers import eventually

PASSWORD = "hunter2"
PROXY = f"http://bob:{PASSWORD}@proxy.example:8080"
OTHER_PROXY = f"http://eve:{PASSWORD}@proxy.example:8081"
COOKIES = "#HttpOnly_.tiktok.com\tTRUE\t/\tTRUE\t0\tsessionid\tabc123\n"


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def cookies_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cookies"
    folder.mkdir()
    (folder / "a.txt").write_text(COOKIES)
    (folder / "b.txt").write_text(COOKIES)
    return folder


@pytest.fixture
async def pool(key: str, cookies_dir: Path) -> AsyncIterator[ClientPool]:
    pool = ClientPool(Settings(secret_key=key, cookies_dir=cookies_dir))
    yield pool
    await pool.aclose()


def sealed(key: str, proxy: str = PROXY) -> str:
    return SecretBox(key).seal(proxy)


async def test_one_client_per_proxy_and_cookies_file(pool: ClientPool, key: str) -> None:
    # Sealing the same proxy twice gives two tokens (random nonce): still one client.
    first = pool.client(RecordingOptions(proxy=sealed(key), cookies="a.txt"))
    assert pool.client(RecordingOptions(proxy=sealed(key), cookies="a.txt")) is first
    others = [
        pool.client(RecordingOptions()),
        pool.client(RecordingOptions(cookies="a.txt")),
        pool.client(RecordingOptions(proxy=sealed(key))),
        pool.client(RecordingOptions(proxy=sealed(key), cookies="b.txt")),
        pool.client(RecordingOptions(proxy=sealed(key, OTHER_PROXY), cookies="a.txt")),
    ]
    assert len({id(c) for c in [first, *others]}) == 6
    assert pool.client(RecordingOptions(upload_s3=True)) is others[0]  # other options: same


async def test_egress_names_the_proxy_without_showing_it(pool: ClientPool, key: str) -> None:
    assert pool.egress(RecordingOptions()) == "direct"
    egress = pool.egress(RecordingOptions(proxy=sealed(key)))
    assert egress.startswith("proxy-")
    assert len(egress) == len("proxy-") + 8
    assert PASSWORD not in egress
    assert pool.egress(RecordingOptions(proxy=sealed(key))) == egress
    assert pool.egress(RecordingOptions(proxy=sealed(key, OTHER_PROXY))) != egress


@pytest.mark.parametrize(
    ("pool_key", "token"),
    [
        ("another", "sealed by the test's key"),
        (None, "sealed by the test's key"),
        ("same", "damaged"),
        ("same", "not sealed"),
    ],
)
async def test_a_proxy_that_cannot_be_unsealed_raises_and_never_goes_direct(
    key: str, cookies_dir: Path, pool_key: str | None, token: str
) -> None:
    own = {"another": new_key(), "same": key, None: None}[pool_key]
    proxy = {
        "sealed by the test's key": sealed(key),
        "damaged": sealed(key)[:-6] + "AAAAAA",
        "not sealed": PROXY,
    }[token]
    options = RecordingOptions(proxy=proxy)
    pool = ClientPool(Settings(secret_key=own, cookies_dir=cookies_dir))
    try:
        with pytest.raises(SecretError, match=r"options\.proxy") as raised:
            pool.client(options)
        assert PASSWORD not in str(raised.value)
        assert proxy not in str(raised.value)
        with pytest.raises(SecretError):
            pool.egress(options)
    finally:
        await pool.aclose()


async def test_no_secret_key_names_it(cookies_dir: Path, key: str) -> None:
    pool = ClientPool(Settings(secret_key=None, cookies_dir=cookies_dir))
    try:
        with pytest.raises(SecretError, match="no SECRET_KEY"):
            pool.client(RecordingOptions(proxy=sealed(key)))
    finally:
        await pool.aclose()


@pytest.mark.parametrize("name", ["missing.txt", "../outside.txt"])
async def test_cookies_that_cannot_load_raise(
    pool: ClientPool, key: str, cookies_dir: Path, name: str
) -> None:
    (cookies_dir.parent / "outside.txt").write_text(COOKIES)
    with pytest.raises(CookiesError):
        pool.client(RecordingOptions(cookies=name))
    with pytest.raises(CookiesError):
        pool.client(RecordingOptions(proxy=sealed(key), cookies=name))


async def test_a_malformed_secret_key_fails_at_construction(cookies_dir: Path) -> None:
    with pytest.raises(SecretError, match="SECRET_KEY"):
        ClientPool(Settings(secret_key="too-short", cookies_dir=cookies_dir))


async def test_aclose_closes_every_client_and_makes_no_more(pool: ClientPool, key: str) -> None:
    clients = [pool.client(RecordingOptions()), pool.client(RecordingOptions(proxy=sealed(key)))]
    await pool.aclose()
    assert all(c.http.is_closed for c in clients)
    with pytest.raises(RuntimeError, match="closed"):
        pool.client(RecordingOptions())


async def test_a_client_unused_for_a_while_is_closed_unless_a_job_holds_it(
    key: str, cookies_dir: Path
) -> None:
    clock = ManualClock()
    pool = ClientPool(Settings(secret_key=key, cookies_dir=cookies_dir), clock=clock)
    try:
        gone = RecordingOptions(proxy=sealed(key, "http://u:p@gone.example:8080"))
        held = RecordingOptions(proxy=sealed(key))
        old = pool.client(gone)
        with pool.holding(held) as streaming:
            clock.now += IDLE_CLOSE + 1
            pool.client(RecordingOptions())  # any use sweeps
            assert pool.size == 2  # the held one and the direct one; the idle one is closed
            assert pool.client(held) is streaming
            assert pool.client(gone) is not old  # made again when needed

        async def closed() -> bool:
            return old.http.is_closed

        await eventually(closed, timeout=5)  # its close runs as a task of its own
    finally:
        await pool.aclose()
