"""The notifier's wiring: its two durables (fan-out and deliveries), its senders and the
subscription endpoints the gateway asks (create, get, list, delete)."""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

import msgspec
from nats.micro.request import Request, ServiceError
from nats.micro.service import Group

from services.notifier.chat import AppriseSender
from services.notifier.handlers import NotifierDeps, Sender, on_event, on_notification
from services.notifier.queue import NotifyQueue
from services.notifier.settings import NotifierSettings
from services.notifier.store import KvSubscriptions, SubscriptionExists
from services.notifier.webhook import WebhookSender
from shared.consumer import Delivery
from shared.documents import KvDocuments
from shared.events import Event
from shared.job_store import JobStore
from shared.logging import get_logger
from shared.notifications import (
    Subscription,
    SubscriptionDeleted,
    SubscriptionRef,
    SubscriptionsQuery,
    SubscriptionsReply,
)
from shared.secrets import SecretBox, SecretError
from shared.service import BaseService
from shared.subjects import JOBS_BUCKET, NOTIFIER, NOTIFIER_DELIVERIES, SUBSCRIPTIONS_BUCKET

log = get_logger(__name__)

BAD_REQUEST, NOT_FOUND, CONFLICT = "400", "404", "409"  # nats.micro error codes


class NotifierService(BaseService[NotifierSettings]):
    name = "notifier"
    description = "Delivers events to subscriptions: signed webhooks and Apprise targets"
    durables = (NOTIFIER, NOTIFIER_DELIVERIES)
    settings_type = NotifierSettings

    async def start(self, group: Group) -> None:
        settings = self.settings
        if not settings.secret_key:
            # Targets and webhook secrets are stored sealed: without the key nothing can be sent.
            log.warning("notifier.no_secret_key")
        self._exit = contextlib.AsyncExitStack()
        webhooks = await self._exit.enter_async_context(
            WebhookSender(
                timeout=settings.notify_timeout, allow_private=settings.allow_private_webhooks
            )
        )
        senders: dict[str, Sender] = {
            "webhook": webhooks,
            "apprise": AppriseSender(
                timeout=settings.notify_timeout, allow_private=settings.allow_private_webhooks
            ),
        }
        self.store = KvSubscriptions(await self.bus.kv(SUBSCRIPTIONS_BUCKET))
        self.deps = NotifierDeps(
            settings=settings,
            subscriptions=self.store,
            attempts=self.store,
            jobs=JobStore(KvDocuments(await self.bus.kv(JOBS_BUCKET))),
            queue=NotifyQueue(self.bus.js),
            senders=senders,
            secrets=SecretBox(settings.secret_key) if settings.secret_key else _NoKey(),
        )
        # Literal subjects: the event catalogue's test finds every endpoint in the code.
        await group.add_endpoint(
            name="subscriptions_create", subject="subscriptions.create", handler=self._on_create
        )
        await group.add_endpoint(
            name="subscriptions_get", subject="subscriptions.get", handler=self._on_get
        )
        await group.add_endpoint(
            name="subscriptions_list", subject="subscriptions.list", handler=self._on_list
        )
        await group.add_endpoint(
            name="subscriptions_delete", subject="subscriptions.delete", handler=self._on_delete
        )
        # The endpoints answer before start returns: their subscriptions reach the server now.
        await self.bus.nc.flush()
        self.consume(NOTIFIER, self._fan_out)
        self.consume(NOTIFIER_DELIVERIES, self._deliver, concurrency=settings.notify_concurrency)

    async def stop(self) -> None:
        await self._exit.aclose()

    async def _fan_out(self, event: Event, delivery: Delivery) -> None:  # noqa: ARG002
        await on_event(event, self.deps)

    async def _deliver(self, event: Event, delivery: Delivery) -> None:
        await on_notification(event, delivery, self.deps)

    # --- the gateway's endpoints ----------------------------------------------------------------

    async def _on_create(self, req: Request) -> None:
        sub = _decode(req, Subscription)
        try:
            await self.store.create(sub)
        except SubscriptionExists:
            raise ServiceError(CONFLICT, "subscription exists") from None
        log.info("notifier.subscription_created", subscription=sub.id, kind=sub.kind)
        await req.respond(msgspec.json.encode(sub))

    async def _on_get(self, req: Request) -> None:
        sub = await self.store.get(_decode(req, SubscriptionRef).id)
        if sub is None:
            raise ServiceError(NOT_FOUND, "no such subscription")
        await req.respond(msgspec.json.encode(sub))

    async def _on_list(self, req: Request) -> None:
        owner = _decode(req, SubscriptionsQuery).owner
        subs = [s for s in await self.store.all() if owner is None or s.owner == owner]
        subs.sort(key=lambda s: (s.created_at, s.id))
        await req.respond(msgspec.json.encode(SubscriptionsReply(items=subs)))

    async def _on_delete(self, req: Request) -> None:
        sub_id = _decode(req, SubscriptionRef).id
        deleted = await self.store.delete(sub_id)
        if deleted:
            log.info("notifier.subscription_deleted", subscription=sub_id)
        await req.respond(msgspec.json.encode(SubscriptionDeleted(deleted=deleted)))

    def status(self) -> dict[str, Any]:
        return {"allow_private_webhooks": self.settings.allow_private_webhooks}


T = TypeVar("T")


def _decode(req: Request, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(req.data, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ServiceError(BAD_REQUEST, "bad request") from exc


class _NoKey:
    """Unsealing without SECRET_KEY: every attempt fails, visibly, until the key is set."""

    def unseal(self, token: str) -> str:  # noqa: ARG002
        msg = "SECRET_KEY is not set: the notifier cannot open targets"
        raise SecretError(msg)
