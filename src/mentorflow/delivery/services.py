"""Claiming due deliveries, calling their sinks, and recording the outcome.

A claim pushes ``next_attempt_at`` forward by the lease and counts the attempt, in a short
transaction of its own (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite), so no row lock is held while a sink is called. A worker that dies mid-batch leaves
its rows to come due again when the lease ends; sinks are idempotent per event, so a second
delivery of the same event is a no-op at the sink.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from mentorflow.delivery.sinks import DeliveryFailed, OutboundEvent, Sink, build_sink
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent
from mentorflow.tenants.models import Org

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    event: OutboundEvent
    sink: str
    attempts: int
    org_settings: Mapping[str, Any]


@dataclass
class BatchResult:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    #: Whether the last claim found nothing due (else the budget ran out first).
    drained: bool = False

    @property
    def claimed(self) -> int:
        return self.delivered + self.retried + self.dead


def claim_due_deliveries(limit: int, *, now: datetime | None = None) -> list[Claim]:
    """Lease up to ``limit`` due deliveries to this worker and return them."""
    now = now or utcnow()
    lease = timedelta(seconds=current_app.config["DELIVERY_LEASE_SECONDS"])
    begin_write(db.session)
    due = (
        sa.select(Delivery.event_id, Delivery.sink)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    # One statement leases the whole batch: push the due time past the lease, count the try.
    rows = db.session.execute(
        sa.update(Delivery)
        .where(sa.tuple_(Delivery.event_id, Delivery.sink).in_(due))
        .values(next_attempt_at=now + lease, attempts=Delivery.attempts + 1)
        .returning(Delivery.event_id, Delivery.sink, Delivery.attempts)
    ).all()
    if not rows:
        db.session.commit()
        return []
    events = db.session.execute(
        sa.select(
            OutboxEvent.id,
            OutboxEvent.type,
            OutboxEvent.payload,
            OutboxEvent.created_at,
            Org.slug,
            Org.settings,
        )
        .join(Org, Org.id == OutboxEvent.org_id)
        .where(OutboxEvent.id.in_({row.event_id for row in rows}))
    ).all()
    db.session.commit()
    by_id = {
        row.id: (
            OutboundEvent(
                id=row.id,
                org=row.slug,
                type=row.type,
                payload=row.payload,
                created_at=row.created_at,
            ),
            row.settings,
        )
        for row in events
    }
    return [
        Claim(
            event=by_id[row.event_id][0],
            sink=row.sink,
            attempts=row.attempts,
            org_settings=by_id[row.event_id][1],
        )
        for row in rows
        if row.event_id in by_id
    ]


def backoff(attempts: int, config: Mapping[str, Any]) -> timedelta:
    """Return the wait before attempt ``attempts + 1``: exponential with jitter, capped."""
    base = float(config["DELIVERY_BACKOFF_SECONDS"])
    ceiling = float(config["DELIVERY_BACKOFF_MAX_SECONDS"])
    delay = min(ceiling, base * 2 ** max(0, attempts - 1))
    # Jitter spreads retries of a sink that failed for everyone at once.
    return timedelta(seconds=delay * random.uniform(0.5, 1.5))


def deliver_claims(claims: list[Claim], sinks: SinkCache) -> BatchResult:
    """Call the claims' sinks and record delivered, retry later, or dead.

    Claims that can share a sink call (one PostHog batch per project, one Supermemory batch
    per memory container) go together; the calls of a batch run side by side.
    """
    config = current_app.config
    max_attempts = int(config["DELIVERY_MAX_ATTEMPTS"])
    outcomes: list[tuple[Claim, str | None, bool]] = []
    groups: dict[tuple[int, str], tuple[Sink, list[Claim]]] = {}
    for claim in claims:
        try:
            # Built up front (building reads the app config) and shared, as the clients allow.
            sink = sinks.get(claim.sink, claim.event.org, claim.org_settings)
        except DeliveryFailed as exc:  # e.g. the org's own key cannot be decrypted
            outcomes.append((claim, str(exc), exc.retryable))
            continue
        key = (id(sink), sink.batch_key(claim.event))
        groups.setdefault(key, (sink, []))[1].append(claim)
    workers = max(1, min(int(config["DELIVERY_CONCURRENCY"]), len(groups)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for group in pool.map(lambda group: _call_sink(*group), groups.values()):
            outcomes += group
    return record_outcomes(outcomes, max_attempts, config)


def _call_sink(sink: Sink, claims: list[Claim]) -> list[tuple[Claim, str | None, bool]]:
    try:
        failures = sink.deliver_batch([claim.event for claim in claims])
    except Exception as exc:  # a bug in a sink must not stop the batch
        log.exception("sink %s crashed on a batch of %d events", sink.name, len(claims))
        return [(claim, f"{type(exc).__name__}: {exc}", True) for claim in claims]
    return [
        (claim, None, True) if failure is None else (claim, str(failure), failure.retryable)
        for claim, failure in zip(claims, failures, strict=True)
    ]


def record_outcomes(
    outcomes: list[tuple[Claim, str | None, bool]], max_attempts: int, config: Mapping[str, Any]
) -> BatchResult:
    """Write the batch's results in one transaction: one statement for all the delivered."""
    now = utcnow()
    delivered: list[tuple[uuid.UUID, str]] = []
    retries: list[dict[str, Any]] = []
    deaths: list[dict[str, Any]] = []
    for claim, error, retryable in outcomes:
        if error is None:
            delivered.append((claim.event.id, claim.sink))
            continue
        row = {"claimed_event": claim.event.id, "claimed_sink": claim.sink, "error": error[:2000]}
        if retryable and claim.attempts < max_attempts:
            row["retry_at"] = now + backoff(claim.attempts, config)
            retries.append(row)
            log.warning(
                "delivery of event %s to %s failed (attempt %d, org %s): %s",
                claim.event.id,
                claim.sink,
                claim.attempts,
                claim.event.org,
                error,
            )
        else:
            deaths.append(row)
            log.error(
                "delivery of event %s to %s is dead after %d attempts (org %s): %s",
                claim.event.id,
                claim.sink,
                claim.attempts,
                claim.event.org,
                error,
            )
    result = BatchResult(delivered=len(delivered), retried=len(retries), dead=len(deaths))
    begin_write(db.session)
    # Only rows still pending are updated: an operator may have acted on them meanwhile.
    if delivered:
        db.session.execute(
            _still_pending(sa.update(Delivery))
            .where(sa.tuple_(Delivery.event_id, Delivery.sink).in_(delivered))
            .values(status=DeliveryStatus.DELIVERED, delivered_at=now, last_error=None)
        )
    connection = db.session.connection()
    if retries:
        connection.execute(_RETRY_LATER, retries)
    if deaths:
        connection.execute(_GIVE_UP, deaths)
    db.session.commit()
    return result


def _still_pending(stmt: sa.Update) -> sa.Update:
    return stmt.where(Delivery.status == DeliveryStatus.PENDING)


_ONE_DELIVERY = _still_pending(
    sa.update(Delivery).where(
        Delivery.event_id == sa.bindparam("claimed_event"),
        Delivery.sink == sa.bindparam("claimed_sink"),
    )
)
_RETRY_LATER = _ONE_DELIVERY.values(
    next_attempt_at=sa.bindparam("retry_at"), last_error=sa.bindparam("error")
)
_GIVE_UP = _ONE_DELIVERY.values(status=DeliveryStatus.DEAD, last_error=sa.bindparam("error"))


class SinkCache:
    """Sinks built once per (sink, org) for the life of a task, then closed."""

    def __init__(self) -> None:
        self._sinks: dict[tuple[str, str], Sink] = {}

    def get(self, name: str, org: str, org_settings: Mapping[str, Any]) -> Sink:
        key = (name, org)
        if key not in self._sinks:
            self._sinks[key] = build_sink(name, org_settings, current_app.config)
        return self._sinks[key]

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()


def deliver_due(*, batch_size: int | None = None, max_batches: int = 50) -> BatchResult:
    """Deliver due deliveries batch by batch until none are due or the budget is spent."""
    size = batch_size or int(current_app.config["DELIVERY_BATCH_SIZE"])
    total = BatchResult()
    sinks = SinkCache()
    try:
        for _ in range(max_batches):
            claims = claim_due_deliveries(size)
            if not claims:
                total.drained = True
                break
            batch = deliver_claims(claims, sinks)
            total.delivered += batch.delivered
            total.retried += batch.retried
            total.dead += batch.dead
    finally:
        sinks.close()
    return total


def count_due(now: datetime | None = None) -> int:
    """Return how many deliveries are due now."""
    return (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Delivery)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.next_attempt_at <= (now or utcnow()),
            )
        )
        or 0
    )


def retry_deliveries(*, dead: bool, event_id: uuid.UUID | None = None) -> int:
    """Make pending (and, with ``dead``, dead) deliveries due now; return how many."""
    statuses = [DeliveryStatus.PENDING] + ([DeliveryStatus.DEAD] if dead else [])
    stmt = sa.update(Delivery).where(Delivery.status.in_(statuses))
    if event_id is not None:
        stmt = stmt.where(Delivery.event_id == event_id)
    result = db.session.execute(
        stmt.values(status=DeliveryStatus.PENDING, next_attempt_at=utcnow(), attempts=0)
    )
    return result.rowcount or 0


def delivery_status(
    now: datetime | None = None, *, org_id: int | None = None
) -> list[dict[str, Any]]:
    """Return per-sink counts: pending, oldest pending age in seconds, delivered, dead."""
    now = now or utcnow()
    stmt = (
        sa.select(
            Delivery.sink, Delivery.status, sa.func.count(), sa.func.min(OutboxEvent.created_at)
        )
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .group_by(Delivery.sink, Delivery.status)
    )
    if org_id is not None:
        stmt = stmt.where(OutboxEvent.org_id == org_id)
    rows = db.session.execute(stmt).all()
    report: dict[str, dict[str, Any]] = {}
    for sink, status, count, oldest in rows:
        entry = report.setdefault(
            sink,
            {"sink": sink, "pending": 0, "delivered": 0, "dead": 0, "oldest_pending_seconds": None},
        )
        entry[str(status)] = count
        if status == DeliveryStatus.PENDING and oldest is not None:
            entry["oldest_pending_seconds"] = round((now - oldest).total_seconds(), 1)
    return [report[name] for name in sorted(report)]
