"""The gateway's commands decide without servers: options, watch targets, what a cancel ends."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from services.gateway import commands
from services.gateway.commands import EndWatch, Invalid, WatchTarget
from services.gateway.nats_link import NatsLink, NotConnected
from services.gateway.schemas import RecordingOptionsIn, WatcherOut
from services.gateway.settings import GatewaySettings
from shared.events import utc_now
from shared.jobs import JobRequest
from shared.secrets import SecretBox, new_key
from shared.watchers import Watcher

ROOM = "7503448765740976902"
PROXY = "http://user:hunter2@proxy.example:8080"


# --- options ------------------------------------------------------------------------------------


async def test_options_seal_the_proxy_and_keep_the_rest(tmp_path: Path) -> None:
    box = SecretBox(new_key())
    opts = RecordingOptionsIn(upload_s3=True, proxy=PROXY, quality="hd")
    options = await commands.recording_options(
        opts, "{room_id}.mp4", box, tmp_path, allow_private_proxies=False
    )
    assert options.proxy is not None
    assert "hunter2" not in options.proxy
    assert box.unseal(options.proxy) == PROXY
    assert (options.upload_s3, options.quality, options.output_template) == (
        True,
        "hd",
        "{room_id}.mp4",
    )


async def test_a_proxy_without_a_secret_key_is_invalid(tmp_path: Path) -> None:
    opts = RecordingOptionsIn(proxy=PROXY)
    with pytest.raises(Invalid, match="no SECRET_KEY") as caught:
        await commands.recording_options(opts, None, None, tmp_path, allow_private_proxies=False)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "proxy", ["http://u:hunter2@127.0.0.1:8080", "socks5://169.254.169.254:1080"]
)
async def test_a_private_proxy_is_invalid_unless_allowed(tmp_path: Path, proxy: str) -> None:
    box = SecretBox(new_key())
    opts = RecordingOptionsIn(proxy=proxy)
    with pytest.raises(Invalid, match=r"^options\.proxy: .*ALLOW_PRIVATE_PROXIES") as caught:
        await commands.recording_options(opts, None, box, tmp_path, allow_private_proxies=False)
    assert "hunter2" not in str(caught.value)
    options = await commands.recording_options(
        opts, None, box, tmp_path, allow_private_proxies=True
    )
    assert options.proxy is not None
    assert box.unseal(options.proxy) == proxy


async def test_cookies_must_load_from_the_cookies_dir(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("# nothing for tiktok.com\n")
    for name in ("missing.txt", "empty.txt"):
        opts = RecordingOptionsIn(cookies=name)
        with pytest.raises(Invalid, match=r"^options\.cookies: "):
            await commands.recording_options(
                opts, None, None, tmp_path, allow_private_proxies=False
            )


async def test_good_cookies_pass_and_are_named_not_read_into_the_options(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"sessionid": "s3cret"}')
    opts = RecordingOptionsIn(cookies="c.json")
    options = await commands.recording_options(
        opts, None, None, tmp_path, allow_private_proxies=False
    )
    assert options.cookies == "c.json"
    assert "s3cret" not in repr(options)


async def test_cookies_are_not_checked_on_a_host_without_the_folder(tmp_path: Path) -> None:
    # The recorders, which read the file, check it on their host.
    opts = RecordingOptionsIn(cookies="elsewhere.txt")
    options = await commands.recording_options(
        opts, None, None, tmp_path / "absent", allow_private_proxies=False
    )
    assert options.cookies == "elsewhere.txt"


# --- watch targets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("room_id", "url", "expected"),
    [
        (ROOM, None, WatchTarget(key=ROOM, room_id=ROOM)),
        (None, "@alice", WatchTarget(key="@alice", unique_id="alice")),
        (
            None,
            "https://www.tiktok.com/@alice/live",
            WatchTarget(key="@alice", unique_id="alice"),
        ),
        (None, f"https://www.tiktok.com/share/live/{ROOM}", WatchTarget(key=ROOM, room_id=ROOM)),
        (
            None,
            "https://vm.tiktok.com/ZMabc123/",
            WatchTarget(key="https://vm.tiktok.com/ZMabc123/"),
        ),
    ],
)
def test_watch_target_of_each_kind(room_id: str | None, url: str | None, expected: object) -> None:
    assert commands.watch_target(room_id, url) == expected


@pytest.mark.parametrize("url", ["https://example.com/@alice", "https://www.tiktok.com/explore"])
def test_a_url_that_names_nothing_to_watch_is_invalid(url: str) -> None:
    with pytest.raises(Invalid, match=r"^url: names no TikTok user"):
        commands.watch_target(None, url)


# --- cancelling a watch job ---------------------------------------------------------------------


def _watch_job(**changes: object) -> JobRequest:
    job = JobRequest(job_id="task-1", kind="watch", watcher_key="@alice")
    for name, value in changes.items():
        setattr(job, name, value)
    return job


def _watcher(task_id: str, **changes: object) -> Watcher:
    watcher = Watcher(key="@alice", task_id=task_id, created_at=utc_now())
    for name, value in changes.items():
        setattr(watcher, name, value)
    return watcher


def test_cancelling_a_watch_job_ends_its_watcher_and_stops_its_recording() -> None:
    job = _watch_job()
    watcher = _watcher("task-1", current_job_id="rec-1")
    assert commands.watch_to_end(job, watcher) == EndWatch(key="@alice", current_job_id="rec-1")


def test_a_watch_job_the_scheduler_has_not_registered_still_queues_the_delete() -> None:
    assert commands.watch_to_end(_watch_job(), None) == EndWatch(key="@alice")


def test_a_newer_watcher_of_the_same_key_is_left_alone() -> None:
    job = _watch_job()
    newer = _watcher("task-2", created_at=job.created_at + timedelta(seconds=5))
    assert commands.watch_to_end(job, newer) is None


def test_an_older_watcher_of_the_key_is_ended_but_its_recording_is_not_ours() -> None:
    job = _watch_job()
    older = _watcher("task-0", created_at=job.created_at - timedelta(seconds=5))
    older.current_job_id = "rec-0"
    assert commands.watch_to_end(job, older) == EndWatch(key="@alice")


@pytest.mark.parametrize("job", [_watch_job(desired="cancel"), _watch_job(watcher_key=None)])
def test_a_watch_job_cancelled_already_or_without_a_key_is_only_marked(job: JobRequest) -> None:
    assert commands.watch_to_end(job, None) is None


# --- before NATS was ever reached ---------------------------------------------------------------


async def test_commands_that_need_nats_refuse_before_it_is_reached() -> None:
    settings = GatewaySettings(api_keys=["k"], nats_url="nats://127.0.0.1:1")
    link = NatsLink(settings)  # never entered: no connection is attempted
    with pytest.raises(NotConnected):
        await commands.rebuild_file_index(link)


def test_a_watcher_that_cannot_be_polled_says_why_in_the_api() -> None:
    w = Watcher(key="@pia", task_id="t1", created_at=utc_now())
    w.error_code = "VALIDATION_ERROR"
    w.error_message = "options.proxy cannot be used: sealed with another key"
    out = WatcherOut.from_watcher(w)
    assert (out.error_code, out.error_message) == (w.error_code, w.error_message)
    assert (
        WatcherOut.from_watcher(Watcher(key="@tom", task_id="t2", created_at=utc_now())).error_code
        is None
    )
