"""Webhook endpoints: an org's own HTTPS receivers, each a sink of the outbox.

An endpoint is a sink named ``webhook:<id>``: an outbox event of a type it subscribes to gets a
delivery row for it (see :func:`webhook_sinks`), which the workers claim, retry with backoff
and mark ``dead`` like any sink's. Each attempt is logged (:class:`WebhookAttempt`: outcome,
duration and response status, never the response body; kept 30 days), by a worker in the
transaction that records the outcomes of its calls; an endpoint that has failed without a
success for ``WEBHOOK_DISABLE_AFTER`` seconds is disabled, with a notice for the console.

The signing secret (``whsec_`` + base64 of 32 random bytes, as Standard Webhooks has it) is
stored encrypted. Rotating keeps the previous one for ``SECRET_OVERLAP`` (24 h): meanwhile
each request carries both signatures, so receivers can switch at their own pace.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement

from mentorflow.delivery.sinks import DeliveryFailed
from mentorflow.delivery.sinks.webhook import AttemptLog, WebhookSink
from mentorflow.platform.crypto import decrypt_secret, encrypt_secret
from mentorflow.platform.db import IMMEDIATE, DriverStatement, JSONType, fits_integer, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbound import OutboundPolicy, OutboundRefused, check_url
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent
from mentorflow.tenants import audit

log = logging.getLogger(__name__)

#: A webhook endpoint's sink name is this prefix and the endpoint id.
SINK_PREFIX = "webhook:"
SECRET_PREFIX = "whsec_"
#: How long a rotated-out secret keeps signing beside the new one.
SECRET_OVERLAP = timedelta(hours=24)
#: Every event type an endpoint may subscribe to (an empty list subscribes to all).
EVENT_TYPES = (
    "session.started",
    "step.completed",
    "step.reopened",
    "session.completed",
    "session.abandoned",
    "session.migrated",
    "session.claimed",
    "learner.state_changed",
    "message.created",
    "learner.erased",
    "session.erased",
)
MAX_ENDPOINTS_PER_ORG = 20
#: How long the delivery log keeps an attempt.
ATTEMPT_RETENTION = timedelta(days=30)


class WebhookError(ValueError):
    """A webhook change is refused; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class WebhookEndpoint(db.Model):
    """One of an org's webhook receivers."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(sa.String(2000))
    description: Mapped[str] = mapped_column(sa.String(500), default="")
    #: Subscribed event types; empty: every type.
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    secret_encrypted: Mapped[str] = mapped_column(sa.Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    previous_secret_expires_at: Mapped[datetime | None]
    #: When the current run of failures began (None after a success).
    failing_since: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def sink(self) -> str:
        """This endpoint's sink name in ``deliveries``."""
        return f"{SINK_PREFIX}{self.id}"


class WebhookAttempt(db.Model):
    """One request made to an endpoint (the delivery log): never the response's body."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_endpoint_at", "endpoint_id", "attempted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, index=True)
    event_type: Mapped[str] = mapped_column(sa.String(40))
    succeeded: Mapped[bool]
    response_status: Mapped[int | None]
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(sa.String(2000))
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)


def new_secret() -> str:
    """Return a new signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def endpoint_id_of(sink: str) -> int | None:
    """Return the endpoint id of a ``webhook:<id>`` sink name, else None."""
    if not sink.startswith(SINK_PREFIX):
        return None
    rest = sink[len(SINK_PREFIX) :]
    return int(rest) if rest.isdigit() else None


def subscribes(event_types: list[str] | None, event_type: str) -> bool:
    """Return whether an endpoint subscribed to ``event_types`` gets ``event_type``."""
    return not event_types or event_type in event_types


def webhook_sinks(connection: sa.Connection, org_id: int, event_type: str) -> list[str]:
    """Return the sinks of the org's enabled endpoints that subscribe to ``event_type``.

    The endpoints are read once per transaction and org (a batch of steps emits many events),
    on the driver's cursor: this runs on every step commit, also inside a pipeline.
    """
    transaction = connection.get_transaction()
    cached = connection.info.get(_ENDPOINTS_CACHE)
    if transaction is None or cached is None or cached[0] is not transaction:
        cached = (transaction, {})
        if transaction is not None:
            connection.info[_ENDPOINTS_CACHE] = cached
    rows = cached[1].get(org_id)
    if rows is None:
        rows = cached[1][org_id] = _ENABLED_ENDPOINTS.all(connection, {"org_id": org_id})
    return [
        f"{SINK_PREFIX}{row['id']}" for row in rows if subscribes(row["event_types"], event_type)
    ]


def prime_endpoints(connection: sa.Connection, org_id: int, listed: Any) -> None:
    """Take the org's enabled endpoints as read by :func:`endpoints_column` in a statement of
    this transaction, so that :func:`webhook_sinks` needs no read of its own (a step commit
    stays at four round trips)."""
    transaction = connection.get_transaction()
    if transaction is None:
        return
    pairs = json.loads(listed) if isinstance(listed, str) else listed or []
    cached = connection.info.get(_ENDPOINTS_CACHE)
    if cached is None or cached[0] is not transaction:
        cached = connection.info[_ENDPOINTS_CACHE] = (transaction, {})
    cached[1][org_id] = [{"id": pair[0], "event_types": pair[1]} for pair in pairs]


class _endpoint_pairs(FunctionElement):  # named as what it aggregates
    """``[[id, event_types], ...]`` of the selected webhook endpoints, as JSON text."""

    type = sa.Text()
    inherit_cache = True


@compiles(_endpoint_pairs, "postgresql")
def _endpoint_pairs_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return (
        "coalesce(json_agg(json_build_array(webhook_endpoints.id, "
        "webhook_endpoints.event_types))::text, '[]')"
    )


@compiles(_endpoint_pairs)
def _endpoint_pairs_default(element: Any, compiler: Any, **kw: Any) -> str:
    return "json_group_array(json_array(webhook_endpoints.id, json(webhook_endpoints.event_types)))"


def endpoints_column(org_id: Any) -> Any:
    """A column for a statement that reads a row of org ``org_id`` (a column of it): the
    org's enabled endpoints, for :func:`prime_endpoints`."""
    return (
        sa.select(_endpoint_pairs())
        .select_from(WebhookEndpoint.__table__)
        .where(WebhookEndpoint.org_id == org_id, WebhookEndpoint.enabled.is_(True))
        .scalar_subquery()
        .label("webhook_endpoints")
    )


_ENDPOINTS_CACHE = "mentorflow.webhook_endpoints"
_ENABLED_ENDPOINTS = DriverStatement(
    sa.select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
        WebhookEndpoint.org_id == sa.bindparam("org_id"), WebhookEndpoint.enabled.is_(True)
    )
)


def check_endpoint_url(url: str, config: Mapping[str, Any]) -> str:
    """Return ``url`` if events may go there; raise WebhookError saying why not."""
    allow_private = bool(config.get("ALLOW_PRIVATE_SINKS"))
    if not isinstance(url, str) or not url.strip():
        raise WebhookError("url", "is required")
    url = url.strip()
    if len(url) > 2000:
        raise WebhookError("url", "must be at most 2000 characters")
    # https only: a signed body still carries answers. Plain http for local development.
    if not url.startswith("https://") and not (allow_private and url.startswith("http://")):
        raise WebhookError("url", "must be an https:// URL")
    try:
        check_url(url, allow_private=allow_private)
    except OutboundRefused as exc:
        raise WebhookError("url", f"can't receive events: {exc.reason}") from exc
    return url


def check_event_types(event_types: list[str]) -> list[str]:
    """Return the event types without duplicates; raise WebhookError for an unknown one."""
    unknown = [name for name in event_types if name not in EVENT_TYPES]
    if unknown:
        raise WebhookError(
            "event_types", f"unknown event type {unknown[0]!r}; expected any of {EVENT_TYPES}"
        )
    return list(dict.fromkeys(event_types))


def list_endpoints(org_id: int) -> list[WebhookEndpoint]:
    """Return the org's endpoints, oldest first."""
    return list(
        db.session.scalars(
            sa.select(WebhookEndpoint)
            .where(WebhookEndpoint.org_id == org_id)
            .order_by(WebhookEndpoint.id)
        )
    )


def get_endpoint(org_id: int, endpoint_id: int) -> WebhookEndpoint | None:
    """Return the org's endpoint ``endpoint_id``; None for another org's or none."""
    if not fits_integer(endpoint_id):  # past what the column holds: matches nothing
        return None
    return db.session.scalar(
        sa.select(WebhookEndpoint).where(
            WebhookEndpoint.org_id == org_id, WebhookEndpoint.id == endpoint_id
        )
    )


def create_endpoint(
    org_id: int,
    config: Mapping[str, Any],
    *,
    url: str,
    event_types: list[str] | None = None,
    enabled: bool = True,
    description: str = "",
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint; return it with its signing secret (shown once, stored encrypted)."""
    count = db.session.scalar(sa.select(sa.func.count()).where(WebhookEndpoint.org_id == org_id))
    if (count or 0) >= MAX_ENDPOINTS_PER_ORG:
        raise WebhookError("url", f"an org has at most {MAX_ENDPOINTS_PER_ORG} endpoints")
    secret = new_secret()
    endpoint = WebhookEndpoint(
        org_id=org_id,
        url=check_endpoint_url(url, config),
        event_types=check_event_types(event_types or []),
        enabled=enabled,
        description=description or "",
        secret_encrypted=encrypt_secret(secret, config),
    )
    db.session.add(endpoint)
    db.session.flush()
    audit.record(org_id, "webhook.created", endpoint.sink, after=_summary(endpoint))
    return endpoint, secret


def _summary(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """What an audit entry says of an endpoint (never its secret)."""
    return {
        "url": endpoint.url,
        "event_types": list(endpoint.event_types or []),
        "enabled": endpoint.enabled,
        "description": endpoint.description,
    }


def update_endpoint(
    endpoint: WebhookEndpoint, config: Mapping[str, Any], changes: Mapping[str, Any]
) -> WebhookEndpoint:
    """Change an endpoint's url, event types, description or enabled; re-enabling clears its
    disabled notice and failure run."""
    before = _summary(endpoint)
    if "url" in changes:
        endpoint.url = check_endpoint_url(changes["url"], config)
    if "event_types" in changes:
        endpoint.event_types = check_event_types(changes["event_types"] or [])
    if "description" in changes:
        endpoint.description = changes["description"] or ""
    if "enabled" in changes:
        endpoint.enabled = bool(changes["enabled"])
        if endpoint.enabled:
            endpoint.disabled_at = None
            endpoint.disabled_reason = None
            endpoint.failing_since = None
    endpoint.updated_at = utcnow()
    db.session.flush()
    audit.record(
        endpoint.org_id, "webhook.updated", endpoint.sink, before=before, after=_summary(endpoint)
    )
    return endpoint


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint, its deliveries and its log."""
    audit.record(endpoint.org_id, "webhook.deleted", endpoint.sink, before=_summary(endpoint))
    db.session.execute(sa.delete(Delivery).where(Delivery.sink == endpoint.sink))
    db.session.execute(sa.delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint.id))
    db.session.delete(endpoint)
    db.session.flush()


def rotate_secret(endpoint: WebhookEndpoint, config: Mapping[str, Any]) -> str:
    """Give the endpoint a new secret; the current one keeps signing for 24 h. Return it."""
    secret = new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = utcnow() + SECRET_OVERLAP
    endpoint.secret_encrypted = encrypt_secret(secret, config)
    endpoint.updated_at = utcnow()
    db.session.flush()
    audit.record(
        endpoint.org_id,
        "webhook.secret_rotated",
        endpoint.sink,
        after={"previous_secret_valid_until": endpoint.previous_secret_expires_at.isoformat()},
    )
    return secret


def signing_secrets(
    endpoint: WebhookEndpoint | Any, config: Mapping[str, Any], now: datetime | None = None
) -> list[str]:
    """Return the secrets that sign a request now: the current one, and the previous one
    during its overlap. Raise ValueError if one can't be decrypted."""
    now = now or utcnow()
    found = [decrypt_secret(endpoint.secret_encrypted, config)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        found.append(decrypt_secret(endpoint.previous_secret_encrypted, config))
    return found


def list_attempts(endpoint: WebhookEndpoint, limit: int = 50) -> list[WebhookAttempt]:
    """Return the endpoint's most recent attempts, newest first."""
    return list(
        db.session.scalars(
            sa.select(WebhookAttempt)
            .where(WebhookAttempt.endpoint_id == endpoint.id)
            .order_by(WebhookAttempt.attempted_at.desc(), WebhookAttempt.id.desc())
            .limit(limit)
        )
    )


def list_deliveries(
    endpoint: WebhookEndpoint, *, status: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Return the endpoint's deliveries, newest event first, with their event's type."""
    stmt = (
        sa.select(Delivery, OutboxEvent.type, OutboxEvent.created_at)
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .where(Delivery.sink == endpoint.sink)
        .order_by(OutboxEvent.created_at.desc())
        .limit(limit)
    )
    if status:
        stmt = stmt.where(Delivery.status == DeliveryStatus(status))
    return [
        {
            "event_id": delivery.event_id,
            "event_type": event_type,
            "event_created_at": created_at,
            "status": str(delivery.status),
            "attempts": delivery.attempts,
            "last_error": delivery.last_error,
            "next_attempt_at": delivery.next_attempt_at,
            "delivered_at": delivery.delivered_at,
        }
        for delivery, event_type, created_at in db.session.execute(stmt).all()
    ]


def replay_delivery(endpoint: WebhookEndpoint, event_id: uuid.UUID) -> bool:
    """Send one event to the endpoint again (delivered or dead alike); return whether the
    endpoint has a delivery of it."""
    result = db.session.execute(
        sa.update(Delivery)
        .where(Delivery.sink == endpoint.sink, Delivery.event_id == event_id)
        .values(
            status=DeliveryStatus.PENDING,
            next_attempt_at=utcnow(),
            attempts=0,
            delivered_at=None,
        )
    )
    if result.rowcount:
        audit.record(
            endpoint.org_id, "webhook.replayed", endpoint.sink, after={"event_id": str(event_id)}
        )
    return bool(result.rowcount)


def replay_failed(endpoint: WebhookEndpoint, since: datetime) -> int:
    """Send again every delivery to the endpoint that failed (dead, or pending after an
    error) of events since ``since``; return how many."""
    events_since = sa.select(OutboxEvent.id).where(
        OutboxEvent.org_id == endpoint.org_id, OutboxEvent.created_at >= since
    )
    result = db.session.execute(
        sa.update(Delivery)
        .where(
            Delivery.sink == endpoint.sink,
            Delivery.event_id.in_(events_since),
            sa.or_(
                Delivery.status == DeliveryStatus.DEAD,
                sa.and_(
                    Delivery.status == DeliveryStatus.PENDING, Delivery.last_error.is_not(None)
                ),
            ),
        )
        .values(status=DeliveryStatus.PENDING, next_attempt_at=utcnow(), attempts=0)
    )
    audit.record(
        endpoint.org_id,
        "webhook.failed_replayed",
        endpoint.sink,
        after={"since": since.isoformat(), "replayed": result.rowcount or 0},
    )
    return result.rowcount or 0


def prune_attempts(now: datetime | None = None) -> int:
    """Delete logged attempts older than :data:`ATTEMPT_RETENTION`; return how many."""
    cutoff = (now or utcnow()) - ATTEMPT_RETENTION
    result = db.session.execute(
        sa.delete(WebhookAttempt).where(WebhookAttempt.attempted_at < cutoff)
    )
    return result.rowcount or 0


def record_attempts(
    connection: sa.Connection, attempts: list[AttemptLog], *, disable_after: float
) -> None:
    """Log attempts (one INSERT for them all) in the caller's transaction, and keep each
    endpoint's failure run: a success ends it; an endpoint failing for longer than
    ``disable_after`` seconds is disabled with a notice."""
    if not attempts:
        return
    connection.execute(
        sa.insert(WebhookAttempt),
        [
            {
                "endpoint_id": attempt.endpoint_id,
                "event_id": attempt.event.id,
                "event_type": attempt.event.type,
                "succeeded": attempt.succeeded,
                "response_status": attempt.response_status,
                "duration_ms": attempt.duration_ms,
                "error": (attempt.error or None) and attempt.error[:2000],
                "attempted_at": attempt.attempted_at,
            }
            for attempt in attempts
        ],
    )
    by_endpoint: dict[int, list[AttemptLog]] = {}  # each endpoint's attempts, oldest first
    for attempt in sorted(attempts, key=lambda attempt: attempt.attempted_at):
        by_endpoint.setdefault(attempt.endpoint_id, []).append(attempt)
    for endpoint_id, logged in by_endpoint.items():
        _keep_failure_run(connection, endpoint_id, logged, disable_after)


def _keep_failure_run(
    connection: sa.Connection, endpoint_id: int, logged: list[AttemptLog], disable_after: float
) -> None:
    table = WebhookEndpoint.__table__
    last = logged[-1]
    if last.succeeded:
        connection.execute(
            sa.update(table)
            .where(table.c.id == endpoint_id, table.c.failing_since.is_not(None))
            .values(failing_since=None)
        )
        return
    successes = [index for index, attempt in enumerate(logged) if attempt.succeeded]
    # After a success among them, the run began at the failure that followed it; else the
    # endpoint's run goes on (or begins at the first of them).
    began = sa.update(table).where(table.c.id == endpoint_id)
    if not successes:
        began = began.where(table.c.failing_since.is_(None))
    first = logged[successes[-1] + 1 if successes else 0]
    connection.execute(began.values(failing_since=first.attempted_at))
    cutoff = last.attempted_at - timedelta(seconds=disable_after)
    connection.execute(
        sa.update(table)
        .where(table.c.id == endpoint_id, table.c.enabled, table.c.failing_since <= cutoff)
        .values(
            enabled=False,
            disabled_at=last.attempted_at,
            disabled_reason=(
                f"Disabled automatically: every attempt failed for over "
                f"{_duration(disable_after)} (last: {last.error or 'failed'}). Fix the "
                "receiver, enable the endpoint, then replay the failed deliveries."
            )[:500],
        )
    )


_WRITE = {IMMEDIATE: True}


def _duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds)} s"


def build_webhook_sink(
    endpoint_id: int,
    config: Mapping[str, Any],
    on_attempt: Callable[[AttemptLog], None] | None = None,
) -> WebhookSink:
    """Return the sink of endpoint ``endpoint_id`` (read now, in the worker's own thread).

    Each attempt goes to ``on_attempt``: a worker collects them and logs them in the
    transaction of its outcomes (:func:`record_attempts`); without one (the console's test
    event), each attempt is logged in a transaction of its own.

    Raise DeliveryFailed (not retryable) for an endpoint deleted or disabled meanwhile, or whose
    secret can't be decrypted: its deliveries go ``dead``, to be replayed once it is fixed.
    """
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    try:
        if endpoint is None:
            raise DeliveryFailed("The webhook endpoint was deleted.", retryable=False)
        if not endpoint.enabled:
            raise DeliveryFailed(
                "The webhook endpoint is disabled; enable it and replay.", retryable=False
            )
        try:
            secrets_now = signing_secrets(endpoint, config)
        except ValueError as exc:
            raise DeliveryFailed(str(exc), retryable=False) from exc
        url = endpoint.url
    finally:
        # A read only: the worker's next claim starts a write transaction of its own.
        db.session.rollback()
    if on_attempt is None:
        on_attempt = _logger_of_attempts(db.engine, float(config["WEBHOOK_DISABLE_AFTER"]))
    return WebhookSink(
        endpoint_id,
        url,
        secrets_now,
        policy=OutboundPolicy.from_config(config),
        on_attempt=on_attempt,
    )


def _logger_of_attempts(engine: sa.Engine, disable_after: float) -> Callable[[AttemptLog], None]:
    def log_attempt(attempt: AttemptLog) -> None:
        # Its own connection and transaction, never the session's.
        try:
            with engine.connect().execution_options(**_WRITE) as connection, connection.begin():
                record_attempts(connection, [attempt], disable_after=disable_after)
        except Exception:
            log.exception("could not log an attempt of webhook endpoint %s", attempt.endpoint_id)

    return log_attempt
