"""Claiming due deliveries, calling their sinks, and recording the outcome.

A worker's deliveries flow, they don't march in batches: claims are grouped into sink calls
(one PostHog batch per project, one Supermemory call per org, one call per webhook endpoint
whose events go one request each, in turn, each within its own deadline), the calls run side
by side with a cap per org (see dispatch.py), the outcomes of the calls that have returned
are recorded together with the webhook attempts' log, and while calls run the worker keeps
claiming for the orgs that are not at their cap. So a slow or failing org delays only
itself: its calls end at their deadline (``SINK_TIMEOUT``), and another org's deliveries
neither wait in its line nor behind its batch.

A claim pushes ``next_attempt_at`` forward by the lease and counts the attempt, in a short
transaction of its own (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite), so no row lock is held while a sink is called. A worker that dies mid-batch leaves
its rows to come due again when the lease ends; sinks are idempotent per event, so a second
delivery of the same event is a no-op at the sink.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from mentorflow.delivery.dispatch import Call, Dispatcher
from mentorflow.delivery.sinks import DeliveryFailed, OutboundEvent, Sink, build_sink
from mentorflow.delivery.sinks.webhook import AttemptLog
from mentorflow.delivery.webhooks import build_webhook_sink, endpoint_id_of, record_attempts
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbound import deadline
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent
from mentorflow.tenants.models import Org

log = logging.getLogger(__name__)


#: How often a worker with calls running looks for more due deliveries.
_POLL_SECONDS = 0.25

Outcome = tuple["Claim", str | None, bool]
#: What a sink call returns: its outcomes, and the claims it gave back without attempting them.
Returned = tuple[list[Outcome], list["Claim"]]


@dataclass(frozen=True)
class Claim:
    event: OutboundEvent
    sink: str
    attempts: int
    org_id: int
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

    def add(self, other: BatchResult) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead


def claim_due_deliveries(
    limit: int, *, now: datetime | None = None, skip_orgs: set[int] | frozenset[int] = frozenset()
) -> list[Claim]:
    """Lease up to ``limit`` due deliveries to this worker and return them; none of the orgs
    in ``skip_orgs``."""
    now = now or utcnow()
    lease = timedelta(seconds=current_app.config["DELIVERY_LEASE_SECONDS"])
    due = (
        sa.select(Delivery.event_id, Delivery.sink)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    )
    if skip_orgs:
        due = due.where(
            ~sa.exists().where(
                OutboxEvent.id == Delivery.event_id, OutboxEvent.org_id.in_(skip_orgs)
            )
        )
        # A read first: a worker with calls running looks often, and most looks find nothing.
        if db.session.execute(due.limit(1)).first() is None:
            db.session.rollback()
            return []
        db.session.rollback()
    due = due.with_for_update(skip_locked=True)
    begin_write(db.session)
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
            Org.id.label("org_id"),
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
            row.org_id,
            row.settings,
        )
        for row in events
    }
    return [
        Claim(
            event=by_id[row.event_id][0],
            sink=row.sink,
            attempts=row.attempts,
            org_id=by_id[row.event_id][1],
            org_settings=by_id[row.event_id][2],
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


def group_claims(
    claims: list[Claim], sinks: SinkCache
) -> tuple[list[tuple[Sink, list[Claim]]], list[Outcome]]:
    """Return the sink calls ``claims`` make (claims that can share a call go together: one
    call per sink and org, as each sink's ``batch_key`` says), and the outcomes of the claims
    whose sink could not be built."""
    failed: list[Outcome] = []
    groups: dict[tuple[int, str], tuple[Sink, list[Claim]]] = {}
    for claim in claims:
        try:
            # Built here (building reads the app config) and shared, as the clients allow.
            sink = sinks.get(claim.sink, claim.event.org, claim.org_settings)
        except DeliveryFailed as exc:  # e.g. the org's own key cannot be decrypted
            failed.append((claim, str(exc), exc.retryable))
            continue
        key = (id(sink), sink.batch_key(claim.event))
        groups.setdefault(key, (sink, []))[1].append(claim)
    return list(groups.values()), failed


def _sink_call(sink: Sink, claims: list[Claim], seconds: float, start_by: float) -> Any:
    if getattr(sink, "request_per_event", False):

        def call() -> Returned:
            return _in_turn(sink, claims, seconds, start_by)

        return call

    def call_once() -> Returned:
        # One deadline for the call, the one-by-one retries after a crash included.
        with deadline(seconds):
            return _call_sink(sink, claims), []

    return call_once


def _in_turn(sink: Sink, claims: list[Claim], seconds: float, start_by: float) -> Returned:
    """Deliver a request-per-event sink's claims one after the other (on its kept-alive
    connection), each within a deadline of its own; give back, unattempted, those whose
    request could not end by ``start_by`` (before their lease does)."""
    outcomes: list[Outcome] = []
    for index, claim in enumerate(claims):
        if index and time.monotonic() + seconds > start_by:
            return outcomes, claims[index:]
        with deadline(seconds):
            outcomes += _call_sink(sink, [claim])
    return outcomes, []


def _call_sink(sink: Sink, claims: list[Claim]) -> list[Outcome]:
    try:
        failures = sink.deliver_batch([claim.event for claim in claims])
    except Exception as exc:  # a bug in a sink must not fail the other events
        # The exception's text may quote a reply: its type and where it was raised only.
        where = "".join(traceback.format_tb(exc.__traceback__))
        log.error(
            "sink %s crashed (%s) on %d events of org %s\n%s",
            sink.name,
            type(exc).__name__,
            len(claims),
            claims[0].event.org,
            where,
        )
        if len(claims) > 1:
            # Each event alone: only those at fault fail.
            return [outcome for claim in claims for outcome in _call_sink(sink, [claim])]
        return [(claims[0], f"The {sink.name} sink failed ({type(exc).__name__}).", True)]
    return [
        (claim, None, True) if failure is None else (claim, str(failure), failure.retryable)
        for claim, failure in zip(claims, failures, strict=True)
    ]


def record_outcomes(
    outcomes: list[Outcome],
    max_attempts: int,
    config: Mapping[str, Any],
    *,
    given_back: list[Claim] | tuple[()] = (),
    attempts: list[AttemptLog] | tuple[()] = (),
) -> BatchResult:
    """Write the outcomes of sink calls in one transaction: one statement for all the
    delivered; with them, the claims given back unattempted (due again now) and the webhook
    attempts made (their log)."""
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
    if given_back:
        db.session.execute(_given_back(given_back, now))
    connection = db.session.connection()
    if retries:
        connection.execute(_RETRY_LATER, retries)
    if deaths:
        connection.execute(_GIVE_UP, deaths)
    # The log of the requests made, in the same commit (one per attempt capped a worker).
    record_attempts(
        connection, list(attempts), disable_after=float(config["WEBHOOK_DISABLE_AFTER"])
    )
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
    """Sinks built once per (sink, org) for the life of a task, then closed; the webhook
    attempts their calls made, until :meth:`take_attempts`."""

    def __init__(self) -> None:
        self._sinks: dict[tuple[str, str], Sink] = {}
        # Appended to by the sink-call threads (a deque's ends are thread-safe).
        self._attempts: deque[AttemptLog] = deque()

    def get(self, name: str, org: str, org_settings: Mapping[str, Any]) -> Sink:
        key = (name, org)
        if key not in self._sinks:
            endpoint_id = endpoint_id_of(name)
            if endpoint_id is not None:
                self._sinks[key] = build_webhook_sink(
                    endpoint_id, current_app.config, self._attempts.append
                )
            else:
                self._sinks[key] = build_sink(name, org_settings, current_app.config)
        return self._sinks[key]

    def take_attempts(self) -> list[AttemptLog]:
        """Return the attempts made since the last call (each call's, once it has
        returned, among them)."""
        taken = []
        while self._attempts:
            taken.append(self._attempts.popleft())
        return taken

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()


def deliver_due(
    *, batch_size: int | None = None, budget_seconds: float | None = None
) -> BatchResult:
    """Deliver due deliveries until none are due or the budget (``DELIVERY_LEASE_SECONDS``
    by default) is spent; ``drained`` says whether none were left."""
    config = current_app.config
    size = batch_size or int(config["DELIVERY_BATCH_SIZE"])
    lease = float(config["DELIVERY_LEASE_SECONDS"])
    max_attempts = int(config["DELIVERY_MAX_ATTEMPTS"])
    call_deadline = float(config["SINK_TIMEOUT"])
    stop_claiming_at = time.monotonic() + (budget_seconds if budget_seconds is not None else lease)
    total = BatchResult()
    sinks = SinkCache()
    dispatcher = Dispatcher(
        int(config["DELIVERY_CONCURRENCY"]), int(config["DELIVERY_ORG_CONCURRENCY"])
    )

    def worth_starting(call: Call) -> bool:
        # A call that waited in its org's line for half the lease is given back instead of
        # started: its claims' lease could end mid-call, and another worker claim them.
        return time.monotonic() - call.queued_at < lease / 2

    last_look, found_none = 0.0, False
    try:
        while True:
            now = time.monotonic()
            look = (
                now < stop_claiming_at
                and dispatcher.has_room()
                and (dispatcher.idle() or not found_none or now - last_look >= _POLL_SECONDS)
            )
            if look:
                claims = claim_due_deliveries(size, skip_orgs=dispatcher.busy_orgs())
                last_look, found_none = now, not claims
                if not claims and dispatcher.idle():
                    total.drained = True
                    break
                groups, failed = group_claims(claims, sinks)
                if failed:
                    total.add(record_outcomes(failed, max_attempts, config))
                # A request-per-event call starts no request that could outlast three
                # quarters of its claims' lease.
                start_by = now + 0.75 * lease
                for sink, group in groups:
                    dispatcher.add(
                        Call(
                            group[0].org_id,
                            _sink_call(sink, group, call_deadline, start_by),
                            group,
                            queued_at=now,
                        )
                    )
            stale = dispatcher.start_ready(worth_starting)
            if stale:
                release_claims([claim for call in stale for claim in call.payload])
            if dispatcher.idle() and time.monotonic() >= stop_claiming_at:
                break
            # The outcomes of every call that has returned, and the attempts logged, in one
            # transaction: a commit waits for the disk, and one per call (a Supermemory call
            # per container, a webhook request) capped a worker at a few hundred a second.
            finished = dispatcher.wait(_POLL_SECONDS)
            if finished:
                # An org with room again is looked at once, not at the next poll: a look that
                # skipped it as busy found "nothing" only for the others.
                busy = dispatcher.busy_orgs()
                if any(call.org_id not in busy for call, _ in finished):
                    found_none = False
                outcomes = [outcome for _, (done, _) in finished for outcome in done]
                given_back = [claim for _, (_, back) in finished for claim in back]
                total.add(
                    record_outcomes(
                        outcomes,
                        max_attempts,
                        config,
                        given_back=given_back,
                        attempts=sinks.take_attempts(),
                    )
                )
    finally:
        never_started = dispatcher.close()
        sinks.close()
        if never_started:
            db.session.rollback()
            release_claims([claim for call in never_started for claim in call.payload])
        _log_attempts_left(sinks.take_attempts(), config)
    return total


def _log_attempts_left(attempts: list[AttemptLog], config: Mapping[str, Any]) -> None:
    """Log the attempts of calls whose outcomes were not recorded (the task stopped)."""
    if not attempts:
        return
    try:
        db.session.rollback()
        record_outcomes([], 0, config, attempts=attempts)
    except Exception:
        db.session.rollback()
        log.exception("could not log %d webhook attempts", len(attempts))


def release_claims(claims: list[Claim]) -> None:
    """Give claims back unattempted: due now, without the attempt their claim counted."""
    begin_write(db.session)
    db.session.execute(_given_back(claims, utcnow()))
    db.session.commit()


def _given_back(claims: list[Claim], now: datetime) -> sa.Update:
    return (
        _still_pending(sa.update(Delivery))
        .where(
            sa.tuple_(Delivery.event_id, Delivery.sink).in_(
                [(claim.event.id, claim.sink) for claim in claims]
            )
        )
        .values(next_attempt_at=now, attempts=Delivery.attempts - 1)
    )


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
