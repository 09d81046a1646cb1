"""A webhook goes to a host the subscriber chose: the event, as declared, without the job's
sealed proxy and cookies (ciphertext of a secret is not for third parties, and an admin's
subscription hears every key's jobs)."""

from __future__ import annotations

from services.notifier.webhook import WebhookSender, signature
from shared import events as ev
from shared.notifications import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.webhook_receiver import WebhookReceiver

SEALED_PROXY = "gAAAAABsealed-proxy-ciphertext"
SEALED_COOKIES = "gAAAAABsealed-cookies-ciphertext"


async def test_a_webhook_body_has_no_sealed_proxy_or_cookies_and_is_signed_as_sent() -> None:
    options = ev.RecordingOptions(proxy=SEALED_PROXY, cookies=SEALED_COOKIES, quality="hd")
    event = ev.RoomLive(job_id="j1", room_id="75", watcher_key="@ann", title="hi", options=options)
    async with WebhookReceiver() as receiver, WebhookSender(timeout=5, allow_private=True) as s:
        await s.send(f"{receiver.url}/hook", "s3cret", event)
        await receiver.wait_for(1)
    (got,) = receiver.delivered
    assert SEALED_PROXY.encode() not in got.body
    assert SEALED_COOKIES.encode() not in got.body
    sent = ev.decode(got.body)  # still the event as the catalogue declares it
    assert isinstance(sent, ev.RoomLive)
    assert (sent.job_id, sent.title, sent.options.quality) == ("j1", "hi", "hd")
    assert (sent.options.proxy, sent.options.cookies) == (None, None)
    timestamp = got.headers[TIMESTAMP_HEADER.lower()]
    assert got.headers[SIGNATURE_HEADER.lower()] == signature("s3cret", timestamp, got.body)
