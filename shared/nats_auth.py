"""Who may do what on NATS, and how a process proves who it is.

Server side: one NATS user per service, allowed only the subjects, streams, KV buckets and
``$JS.API`` calls that service uses, all derived from ``shared/subjects.py`` (events, durables,
buckets) and the ``nats.micro`` endpoints, so no subject is typed twice. No service user may
create, update, delete or purge a stream, a bucket or a consumer: the ``provisioner`` user
creates and updates them (``tlr up``, ``python -m tlr.nats_auth provision``), and the services
run with ``NATS_PROVISION=false``, checking that what they need exists.
:func:`authorization_conf` renders the ``authorization`` block of nats-server's config.

Client side: :func:`connect_options` turns the ``NATS_*`` settings (user and password or
password file, a credentials file, an NKey seed file, TLS CA / certificate / key) into
``nats.connect`` arguments. A setting that cannot work fails at start with its name
(:class:`shared.config.SettingsError`), never with a secret's value.
"""

from __future__ import annotations

import importlib.util
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.js.api import StreamConfig

from shared import egresses, files, notifications, watchers
from shared.events import (
    EgressAdded,
    EgressFailed,
    EgressRemoved,
    Event,
    FileDeleted,
    RecordingFinished,
    RecordingRequested,
    RecordingStarted,
    RoomLive,
    UploadDone,
    WatchDeleted,
    WatchPaused,
    WatchRequested,
    WatchResumed,
    WatchUpdated,
)
from shared.subjects import (
    BUCKETS,
    CLAIMS_BUCKET,
    DURABLES,
    INDEXER,
    JOB_CHANGES,
    JOB_REQUEST_CHANGES,
    JOBS_BUCKET,
    NOTIFIER,
    NOTIFIER_DELIVERIES,
    NOTIFY,
    RATELIMIT,
    RECORDERS,
    SCHEDULER,
    STREAMS,
    SUBSCRIPTIONS_BUCKET,
    UPLOADER,
    Durable,
    kv_stream_config,
    subject_for,
)

if TYPE_CHECKING:
    from shared.config import NatsClientSettings

JS_API = "$JS.API"
INBOX = "_INBOX.>"
PROVISIONER = "provisioner"
# The human operator's user for the `nats` CLI (docs/runbook.md: purge, consumer rm, reset):
# no limits, and given to no service.
OPERATOR = "operator"

# Never granted to a service user, whatever its allow list says (deny wins over allow):
# streams, buckets (KV_* streams) and consumers are created and changed by the provisioner
# only, and nobody here deletes, purges, snapshots, restores or steps anything down.
DESTRUCTIVE = (
    f"{JS_API}.STREAM.DELETE.>",
    f"{JS_API}.STREAM.PURGE.>",
    f"{JS_API}.STREAM.MSG.DELETE.>",
    f"{JS_API}.STREAM.SNAPSHOT.>",
    f"{JS_API}.STREAM.RESTORE.>",
    f"{JS_API}.STREAM.PEER.REMOVE.>",
    f"{JS_API}.STREAM.LEADER.STEPDOWN.>",
    f"{JS_API}.CONSUMER.DELETE.>",
    f"{JS_API}.CONSUMER.PAUSE.>",
    f"{JS_API}.CONSUMER.UNPIN.>",
    f"{JS_API}.CONSUMER.RESET.>",
    f"{JS_API}.CONSUMER.LEADER.STEPDOWN.>",
    f"{JS_API}.META.>",
    f"{JS_API}.SERVER.>",
    f"{JS_API}.ACCOUNT.>",
)
PROVISIONING = (
    f"{JS_API}.STREAM.CREATE.>",
    f"{JS_API}.STREAM.UPDATE.>",
    f"{JS_API}.CONSUMER.CREATE.>",
    f"{JS_API}.CONSUMER.DURABLE.CREATE.>",
)


@dataclass(frozen=True)
class Access:
    """What one service does on NATS, in the terms of shared/subjects.py."""

    publishes: tuple[type[Event], ...] = ()
    consumes: tuple[Durable, ...] = ()
    buckets: tuple[str, ...] = ()
    # Core subscriptions on other subjects (the recorder hears job requests change).
    listens: tuple[str, ...] = ()
    # nats.micro services it queries (tlr.<service>.>) and whether it pings them all.
    asks: tuple[str, ...] = ()
    # Single endpoints of another service it requests, and no other (the recorder's pick).
    requests: tuple[str, ...] = ()
    pings: bool = False
    # The gateway's rate-limit counters: publish with Nats-Incr, read by direct get.
    counters: bool = False
    # Work-queue streams it publishes to and reads queued messages of by subject (the
    # notifier's NOTIFY).
    queues: tuple[StreamConfig, ...] = ()


ACCESS: Mapping[str, Access] = {
    "gateway": Access(
        publishes=(
            WatchRequested,
            WatchDeleted,
            WatchPaused,
            WatchResumed,
            WatchUpdated,
            RecordingRequested,
            EgressAdded,
            EgressRemoved,
        ),
        buckets=(JOBS_BUCKET,),
        asks=(watchers.SERVICE, files.SERVICE, notifications.SERVICE),
        pings=True,
        counters=True,
    ),
    "scheduler": Access(
        publishes=(RoomLive,), consumes=(SCHEDULER,), buckets=(JOBS_BUCKET, CLAIMS_BUCKET)
    ),
    "recorder": Access(
        publishes=(RecordingStarted, RecordingFinished, EgressFailed),
        consumes=(RECORDERS,),
        buckets=(JOBS_BUCKET, CLAIMS_BUCKET),
        listens=(JOB_REQUEST_CHANGES,),
        requests=(egresses.PICK,),
    ),
    "uploader": Access(
        publishes=(UploadDone, FileDeleted),
        consumes=(UPLOADER,),
        buckets=(JOBS_BUCKET, CLAIMS_BUCKET),
    ),
    "indexer": Access(
        publishes=(FileDeleted,),
        consumes=(INDEXER,),
        buckets=(JOBS_BUCKET, CLAIMS_BUCKET),
        listens=(JOB_CHANGES,),
    ),
    "notifier": Access(
        consumes=(NOTIFIER, NOTIFIER_DELIVERIES),
        buckets=(JOBS_BUCKET, SUBSCRIPTIONS_BUCKET),
        queues=(NOTIFY,),
    ),
}
SERVICE_USERS = tuple(ACCESS)
USERS = (*SERVICE_USERS, PROVISIONER, OPERATOR)


@dataclass(frozen=True)
class Permissions:
    """A nats-server ``permissions`` map: allow lists, deny lists, replies to requests."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    allow_responses: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "publish": {"allow": list(self.publish_allow), "deny": list(self.publish_deny)},
            "subscribe": {"allow": list(self.subscribe_allow)},
        }
        if self.subscribe_deny:
            out["subscribe"]["deny"] = list(self.subscribe_deny)
        if self.allow_responses:
            out["allow_responses"] = True
        return out


def _stream_names() -> list[str]:
    return [str(s.name) for s in [*STREAMS, *(kv_stream_config(b) for b in BUCKETS)]]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def service_permissions(service: str) -> Permissions:
    """The permissions of ``service``'s user (KeyError for an unknown service)."""
    access = ACCESS[service]
    pub: list[str] = []
    sub: list[str] = [INBOX]  # replies: JetStream API, publish acks, requests
    # Readiness checks every stream and bucket; opening a bucket reads its stream's info.
    pub += [f"{JS_API}.STREAM.INFO.{name}" for name in _stream_names()]
    pub += [subject_for(event) for event in access.publishes]
    for durable in access.consumes:
        where = f"{durable.stream}.{durable.name}"
        pub += [
            f"{JS_API}.CONSUMER.INFO.{where}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{where}",
            f"$JS.ACK.{where}.>",  # ack, nak, in-progress, term
        ]
    for bucket in access.buckets:
        stream = f"KV_{bucket}"
        pub += [
            f"$KV.{bucket}.>",  # put, create, update, delete (KV-Operation headers)
            f"{JS_API}.DIRECT.GET.{stream}",
            f"{JS_API}.DIRECT.GET.{stream}.>",
            f"{JS_API}.STREAM.MSG.GET.{stream}",
        ]
    sub += list(access.listens)
    if access.counters:
        prefix = str(RATELIMIT.subjects[0]) if RATELIMIT.subjects else ""
        pub += [
            prefix,
            f"{JS_API}.DIRECT.GET.{RATELIMIT.name}",
            f"{JS_API}.DIRECT.GET.{RATELIMIT.name}.>",
        ]
    for queue in access.queues:
        pub += [*(str(s) for s in queue.subjects or ()), f"{JS_API}.STREAM.MSG.GET.{queue.name}"]
    pub += [f"tlr.{other}.>" for other in access.asks]
    pub += list(access.requests)
    if access.pings:
        pub.append("$SRV.PING")
    # Its own nats.micro service: $SRV.PING|INFO|STATS[.<name>[.<id>]] and tlr.<name>.*,
    # answered on the asker's reply subject (allow_responses).
    sub += ["$SRV.*", f"$SRV.*.{service}", f"$SRV.*.{service}.*", f"tlr.{service}.>"]
    return Permissions(
        publish_allow=_unique(pub),
        subscribe_allow=_unique(sub),
        publish_deny=(*PROVISIONING, *DESTRUCTIVE),
        allow_responses=True,
    )


def provisioner_permissions() -> Permissions:
    """Create and update every stream, bucket and durable; never delete or purge one."""
    pub = [f"{JS_API}.INFO"]
    for name in _stream_names():
        pub += [
            f"{JS_API}.STREAM.CREATE.{name}",
            f"{JS_API}.STREAM.UPDATE.{name}",
            f"{JS_API}.STREAM.INFO.{name}",
        ]
    for durable in DURABLES:
        where = f"{durable.stream}.{durable.name}"
        pub += [
            f"{JS_API}.CONSUMER.CREATE.{where}",
            f"{JS_API}.CONSUMER.CREATE.{where}.>",
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{where}",
            f"{JS_API}.CONSUMER.INFO.{where}",
        ]
    return Permissions(
        publish_allow=_unique(pub), subscribe_allow=(INBOX,), publish_deny=DESTRUCTIVE
    )


def permissions(user: str) -> Permissions | None:
    """The permissions of ``user``; None for the operator, who may do anything."""
    if user == OPERATOR:
        return None
    return provisioner_permissions() if user == PROVISIONER else service_permissions(user)


def _conf_value(value: Any, indent: int) -> str:
    """nats-server's config syntax is a superset of JSON: lists and maps as JSON, nested."""
    pad = "  " * indent
    if isinstance(value, dict):
        inner = "\n".join(f"{pad}  {k}: {_conf_value(v, indent + 1)}" for k, v in value.items())
        return "{\n" + inner + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        inner = "\n".join(f"{pad}  {json.dumps(v)}" for v in value)
        return "[\n" + inner + f"\n{pad}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if str(value).startswith("$") else json.dumps(value)


def authorization_conf(passwords: Mapping[str, str]) -> str:
    """The ``authorization`` block of nats-server's config: one user per entry of
    ``passwords`` (user -> password, or ``$VARIABLE`` for one the server reads from its
    environment), each with its :func:`permissions`. A client without credentials is refused.
    """
    users = []
    for user, password in passwords.items():
        entry: dict[str, Any] = {"user": user, "password": password}
        allowed = permissions(user)
        if allowed is not None:
            entry["permissions"] = allowed.as_dict()
        users.append("    " + _conf_value(entry, 2))
    return "authorization {\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n"


# --- client side ------------------------------------------------------------------------------


class _Secret(str):
    """A password whose repr never shows it (nats-py keeps it in ``options``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


@dataclass(frozen=True)
class ClientAuth:
    """What ``nats.connect`` needs besides the URLs; its repr holds no secret."""

    options: dict[str, Any] = field(default_factory=dict, repr=False)
    method: str = "none"
    tls: bool = False


def _password(settings: NatsClientSettings) -> str | None:
    if settings.nats_password_file is not None:
        from shared.config import SettingsError

        try:
            text = settings.nats_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:  # opened at validation, then failed
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            msg = f"NATS_PASSWORD_FILE: {settings.nats_password_file} cannot be read ({why})"
            raise SettingsError(msg) from None
        if not text:
            msg = f"NATS_PASSWORD_FILE: {settings.nats_password_file} is empty"
            raise SettingsError(msg)
        return text
    if settings.nats_password is not None:
        return settings.nats_password.get_secret_value()
    return None


def tls_context(settings: NatsClientSettings) -> ssl.SSLContext | None:
    """A verifying client context from NATS_TLS_CA / _CERT / _KEY, or None when TLS is off."""
    from shared.config import SettingsError

    ca, cert, key = settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        given, missing = (
            ("NATS_TLS_CERT", "NATS_TLS_KEY")
            if key is None
            else (
                "NATS_TLS_KEY",
                "NATS_TLS_CERT",
            )
        )
        msg = f"{given} is set but {missing} is not: a client certificate needs its key"
        raise SettingsError(msg)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except (ssl.SSLError, ValueError) as exc:
        msg = f"NATS_TLS_CA: {ca} holds no usable PEM certificate ({_reason(exc)})"
        raise SettingsError(msg) from None
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError) as exc:
            msg = (
                f"NATS_TLS_CERT / NATS_TLS_KEY: {cert} and {key} are not a PEM certificate "
                f"and its private key ({_reason(exc)})"
            )
            raise SettingsError(msg) from None
    return context


def _reason(exc: Exception) -> str:
    # ssl's messages name the failing step (e.g. "[SSL] PEM lib"), never the file's content.
    return getattr(exc, "reason", None) or type(exc).__name__


def check_client_settings(settings: NatsClientSettings) -> None:
    """Refuse settings that cannot connect, naming the setting (no value of a secret)."""
    from shared.config import SettingsError

    methods = [
        name
        for name, given in (
            ("NATS_USER", settings.nats_user is not None),
            ("NATS_CREDS_FILE", settings.nats_creds_file is not None),
            ("NATS_NKEY_SEED_FILE", settings.nats_nkey_seed_file is not None),
        )
        if given
    ]
    if len(methods) > 1:
        msg = f"{' and '.join(methods)} are both set: choose one way to authenticate to NATS"
        raise SettingsError(msg)
    has_password = settings.nats_password is not None or settings.nats_password_file is not None
    if settings.nats_password is not None and settings.nats_password_file is not None:
        msg = "NATS_PASSWORD and NATS_PASSWORD_FILE are both set: keep NATS_PASSWORD_FILE"
        raise SettingsError(msg)
    if has_password and settings.nats_user is None:
        msg = "NATS_PASSWORD_FILE (or NATS_PASSWORD) is set without NATS_USER"
        raise SettingsError(msg)
    if settings.nats_user is not None and not has_password:
        msg = "NATS_USER is set without NATS_PASSWORD_FILE (or NATS_PASSWORD)"
        raise SettingsError(msg)
    if settings.nats_nkey_seed_file is not None:
        head = settings.nats_nkey_seed_file.read_bytes()[:2]
        if head != b"SU":
            msg = (
                f"NATS_NKEY_SEED_FILE: {settings.nats_nkey_seed_file} does not hold a user "
                "NKey seed (one starts with SU)"
            )
            raise SettingsError(msg)
    if (settings.nats_creds_file or settings.nats_nkey_seed_file) and not _has_nkeys():
        name = "NATS_CREDS_FILE" if settings.nats_creds_file else "NATS_NKEY_SEED_FILE"
        msg = f"{name} needs the nkeys package (pip install nkeys), which is not installed"
        raise SettingsError(msg)
    _password(settings)  # an empty password file
    tls_context(settings)


def _has_nkeys() -> bool:
    return importlib.util.find_spec("nkeys") is not None


def connect_options(settings: NatsClientSettings) -> ClientAuth:
    """``nats.connect`` keyword arguments for the credentials and TLS of ``settings``."""
    options: dict[str, Any] = {}
    method = "none"
    password = _password(settings)
    if settings.nats_user is not None and password is not None:
        options.update(user=settings.nats_user, password=_Secret(password))
        method = "user"
    elif settings.nats_creds_file is not None:
        options["user_credentials"] = str(settings.nats_creds_file)
        method = "creds"
    elif settings.nats_nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
        method = "nkey"
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    return ClientAuth(options=options, method=method, tls=context is not None)


__all__ = [
    "ACCESS",
    "DESTRUCTIVE",
    "OPERATOR",
    "PROVISIONER",
    "SERVICE_USERS",
    "USERS",
    "ClientAuth",
    "Permissions",
    "authorization_conf",
    "connect_options",
    "permissions",
    "tls_context",
]
