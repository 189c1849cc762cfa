"""Erasure: remove everything of a learner or a session, everywhere it was kept.

What is removed is a table-driven list: :data:`SESSION_ROWS` names each table with rows of an
erased session (by its session id, or through the session's outbox events), in the order they
are deleted; :data:`LEARNER_ROWS` the tables with rows of an erased learner. A feature that
keeps personal data in a new table adds one entry to one of these lists. Files follow: the
org's export files that mention an erased session, and the lines of the dry-run sink files.

The erasure runs as a background job (kind :data:`ERASE_JOB`); its result is the receipt: what
was removed where, and the downstream deletions queued. It commits the deletions and, in the
same transaction, emits ``learner.erased`` / ``session.erased`` (ids only), which each sink
carries out: Supermemory deletes the memory containers, PostHog deletes the persons, webhooks
receive the event. An erased session is gone: reading it is a 404, as for one that never
existed (no tombstone is kept that would confirm it did).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import current_app

from mentorflow.delivery.sinks.jsonlines import forget_lines
from mentorflow.delivery.webhooks import WebhookAttempt
from mentorflow.flows.conversation_models import Message
from mentorflow.flows.learner_state import LearnerState, LearnerStateChange
from mentorflow.flows.models import (
    Learner,
    LearnerSession,
    LearnerToken,
    SessionStatus,
    StepEvent,
)
from mentorflow.jobs import runner
from mentorflow.jobs.models import Job
from mentorflow.platform.db import begin_write, checkpoint_sqlite, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.idempotency import IdempotencyKey, SessionStartKey
from mentorflow.platform.outbox import Delivery, EventType, OutboxEvent, emit_event
from mentorflow.tenants import audit
from mentorflow.tenants.models import Org

log = logging.getLogger(__name__)

ERASE_JOB = "erase"
#: Bounds of an org's ``retention_days``.
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650
#: Ids per ``IN (...)`` list.
_CHUNK = 500


@dataclass(frozen=True)
class SessionRows:
    """Rows of ``table`` that belong to erased sessions: ``column`` holds the session id, or
    (``via_events``) the id of one of the sessions' outbox events."""

    label: str
    table: sa.Table
    column: str = "session_id"
    via_events: bool = False


@dataclass(frozen=True)
class LearnerRows:
    """Rows of ``table`` that belong to an erased learner: ``column`` holds the learner's id
    (``match="id"``) or external user id (``match="external_user_id"``, within the org)."""

    label: str
    table: sa.Table
    column: str = "learner_id"
    match: str = "id"


#: Every table holding rows of a session, deleted in this order (the sessions last).
SESSION_ROWS: list[SessionRows] = [
    SessionRows("webhook attempts", WebhookAttempt.__table__, "event_id", via_events=True),
    SessionRows("deliveries", Delivery.__table__, "event_id", via_events=True),
    SessionRows("outbox events", OutboxEvent.__table__),
    SessionRows("step events", StepEvent.__table__),
    SessionRows("idempotent responses", IdempotencyKey.__table__),
    SessionRows("session start responses", SessionStartKey.__table__),
    SessionRows("messages", Message.__table__),
    SessionRows("sessions", LearnerSession.__table__, "id"),
]
#: Every table holding rows of a learner beyond their sessions (the learner row last).
LEARNER_ROWS: list[LearnerRows] = [
    LearnerRows("learner tokens", LearnerToken.__table__),
    LearnerRows("learner start responses", SessionStartKey.__table__),
    LearnerRows("learner state history", LearnerStateChange.__table__),
    LearnerRows("learner states", LearnerState.__table__),
    LearnerRows("learners", Learner.__table__, "id"),
]


class ErasureError(ValueError):
    """An erasure can't be requested; the message says why."""


def request_learner_erasure(org: Org, external_user_id: str, *, by: str | None) -> Job | None:
    """Add a pending job erasing the org's learner; None if the org has no such learner."""
    if (
        not _learner_session_ids(org.id, external_user_id)
        and _find_learner(org.id, external_user_id) is None
    ):
        return None
    job = runner.create_job(
        org, ERASE_JOB, {"scope": "learner", "external_user_id": external_user_id}, by=by
    )
    # The entry of an erasure outlives it: it names the job, never the person.
    audit.record(org.id, "learner.erasure_requested", f"job:{job.id}", after={"job": job.id})
    return job


def request_session_erasure(org: Org, session_id: str, *, by: str | None) -> Job | None:
    """Add a pending job erasing one of the org's sessions; None if it has no such session."""
    found = db.session.scalar(
        sa.select(LearnerSession.id).where(
            LearnerSession.org_id == org.id, LearnerSession.id == session_id
        )
    )
    if found is None:
        return None
    job = runner.create_job(org, ERASE_JOB, {"scope": "session", "session_id": session_id}, by=by)
    audit.record(org.id, "session.erasure_requested", f"job:{job.id}", after={"job": job.id})
    return job


def run_erasure(job: Job, report: runner.Progress) -> dict[str, Any]:
    """Run an erase job: erase its learner, session or the org's expired sessions; return the
    receipt."""
    org = db.session.get(Org, job.org_id)
    params = dict(job.params)
    begin_write(db.session)
    if params["scope"] == "learner":
        receipt = erase_learner(org, params["external_user_id"], job_id=job.id)
    elif params["scope"] == "session":
        receipt = erase_sessions(org, [params["session_id"]], job_id=job.id)
    else:
        receipt = erase_expired(org, int(params["retention_days"]), job_id=job.id)
    db.session.commit()
    checkpoint_sqlite(db.session)
    report(1, 1)
    return receipt


ERASE = runner.JobKind(name=ERASE_JOB, run=run_erasure)


def erase_learner(org: Org, external_user_id: str, *, job_id: int | None = None) -> dict[str, Any]:
    """Erase a learner: every session of theirs, their learner rows, then emit
    ``learner.erased``. Flushes; the caller commits."""
    session_ids = _learner_session_ids(org.id, external_user_id)
    containers = _containers(session_ids)
    removed = _delete_sessions(org, session_ids)
    _delete_learner_events(org, external_user_id, removed)
    learner = _find_learner(org.id, external_user_id)
    if learner is not None:
        for entry in LEARNER_ROWS:
            table = entry.table
            value = learner.id if entry.match == "id" else external_user_id
            stmt = sa.delete(table).where(table.c[entry.column] == value)
            if entry.match != "id" and "org_id" in table.c:
                stmt = stmt.where(table.c.org_id == org.id)
            _count(removed["database"], entry.label, db.session.execute(stmt).rowcount)
        db.session.expire_all()
    payload = {
        "org": org.slug,
        "external_user_id": external_user_id,
        "session_ids": session_ids,
        # PostHog persons: the learner's, and each session's from before it had a learner.
        "distinct_ids": [external_user_id, *session_ids],
        "memory_containers": containers,
        "erased_at": utcnow().isoformat(),
        "job_id": job_id,
    }
    event_id = emit_event(org.id, EventType.LEARNER_ERASED, payload)
    return _receipt(
        "learner", removed, event_id, str(EventType.LEARNER_ERASED), payload, external_user_id
    )


def erase_sessions(
    org: Org, session_ids: list[str], *, job_id: int | None = None, scope: str = "session"
) -> dict[str, Any]:
    """Erase sessions of the org, then emit ``session.erased`` for each. Flushes; the caller
    commits."""
    rows = db.session.execute(
        sa.select(LearnerSession.id, LearnerSession.memory_container).where(
            LearnerSession.org_id == org.id, LearnerSession.id.in_(session_ids)
        )
    ).all()
    found = [row.id for row in rows]
    containers = {row.id: row.memory_container for row in rows}
    removed = _delete_sessions(org, found)
    events = []
    for session_id in found:
        payload = {
            "org": org.slug,
            "session_id": session_id,
            "session_ids": [session_id],
            # The session's own PostHog person (its events before it had a learner, or all
            # of them for an anonymous session); a learner's person is erased with them.
            "distinct_ids": [session_id],
            "memory_containers": [containers[session_id]],
            "erased_at": utcnow().isoformat(),
            "job_id": job_id,
        }
        events.append(emit_event(org.id, EventType.SESSION_ERASED, payload, session_id=None))
    receipt = _receipt(scope, removed, None, str(EventType.SESSION_ERASED), None, None)
    receipt["session_ids"] = found
    receipt["events"] = [str(event_id) for event_id in events]
    receipt["downstream"] = _downstream(events[0]) if events else []
    return receipt


def _expired(org_id: int, retention_days: int) -> sa.Select:
    cutoff = utcnow() - timedelta(days=retention_days)
    closed_at = sa.func.coalesce(LearnerSession.completed_at, LearnerSession.last_activity_at)
    return (
        sa.select(LearnerSession.id)
        .where(
            LearnerSession.org_id == org_id,
            LearnerSession.status.in_([SessionStatus.COMPLETED, SessionStatus.ABANDONED]),
            closed_at < cutoff,
        )
        .order_by(closed_at)
    )


def create_retention_job(org_id: int, retention_days: int) -> int | None:
    """Add a pending retention job for the org when it has sessions past ``retention_days``;
    return its id (None: nothing to erase). Commits."""
    begin_write(db.session)
    org = db.session.get(Org, org_id)
    if org is None or db.session.scalar(_expired(org_id, retention_days).limit(1)) is None:
        db.session.rollback()
        return None
    job = runner.create_job(
        org, ERASE_JOB, {"scope": "retention", "retention_days": retention_days}, by="retention"
    )
    db.session.commit()
    return job.id


def erase_expired(org: Org, retention_days: int, *, job_id: int | None = None) -> dict[str, Any]:
    """Erase a batch of the org's closed sessions older than ``retention_days``."""
    session_ids = list(
        db.session.scalars(
            _expired(org.id, retention_days).limit(int(current_app.config["RETENTION_BATCH_SIZE"]))
        )
    )
    receipt = erase_sessions(org, session_ids, job_id=job_id, scope="retention")
    receipt["retention_days"] = retention_days
    return receipt


def retention_days_of(org: Org) -> int | None:
    """Return the org's ``retention_days`` setting, or None when it keeps sessions."""
    value = (org.settings or {}).get("retention_days")
    return int(value) if value else None


def check_retention_days(value: int | None) -> int | None:
    """Return ``value`` if it is a valid ``retention_days`` (None or 0: keep forever)."""
    if value in (None, 0):
        return None
    if not isinstance(value, int) or not MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS:
        raise ErasureError(
            f"retention days must be a whole number from {MIN_RETENTION_DAYS} to "
            f"{MAX_RETENTION_DAYS} (or 0 to keep sessions)"
        )
    return value


def set_retention_days(org: Org, value: int | None) -> Org:
    """Set (or with None/0 clear) the org's ``retention_days``. Flushes."""
    days = check_retention_days(value)
    settings = dict(org.settings)
    if days is None:
        settings.pop("retention_days", None)
    else:
        settings["retention_days"] = days
    org.settings = settings
    db.session.flush()
    return org


def orgs_with_retention() -> list[tuple[int, int]]:
    """Return ``(org id, retention days)`` of every org with a retention setting."""
    return [
        (org.id, days)
        for org in db.session.scalars(sa.select(Org).order_by(Org.id))
        if (days := retention_days_of(org)) is not None
    ]


def _find_learner(org_id: int, external_user_id: str) -> Learner | None:
    return db.session.scalar(
        sa.select(Learner).where(
            Learner.org_id == org_id, Learner.external_user_id == external_user_id
        )
    )


def _learner_session_ids(org_id: int, external_user_id: str) -> list[str]:
    learner = _find_learner(org_id, external_user_id)
    owner = LearnerSession.external_user_id == external_user_id
    if learner is not None:
        owner = sa.or_(owner, LearnerSession.learner_id == learner.id)
    stmt = (
        sa.select(LearnerSession.id)
        .where(LearnerSession.org_id == org_id, owner)
        .order_by(LearnerSession.created_at)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # A step being committed finishes first; its rows are then erased with the rest.
        stmt = stmt.with_for_update()
    return list(db.session.scalars(stmt))


def _containers(session_ids: list[str]) -> list[str]:
    found: list[str] = []
    for chunk in _chunks(session_ids):
        found += db.session.scalars(
            sa.select(LearnerSession.memory_container).where(LearnerSession.id.in_(chunk))
        )
    return sorted(set(found))


def _delete_sessions(org: Org, session_ids: list[str]) -> dict[str, Any]:
    database: dict[str, int] = {entry.label: 0 for entry in SESSION_ROWS}
    for chunk in _chunks(session_ids):
        events = sa.select(OutboxEvent.id).where(OutboxEvent.session_id.in_(chunk))
        for entry in SESSION_ROWS:
            column = entry.table.c[entry.column]
            where = column.in_(events) if entry.via_events else column.in_(chunk)
            deleted = db.session.execute(sa.delete(entry.table).where(where)).rowcount
            _count(database, entry.label, deleted)
    db.session.expire_all()
    files = _erase_files(org, session_ids)
    return {"database": database, "files": files}


def _delete_learner_events(org: Org, external_user_id: str, removed: dict[str, Any]) -> None:
    """Delete the learner's events that belong to no session (their state's changes, which
    carry the state), with their deliveries, and their lines in the dry-run sink files."""
    events = sa.select(OutboxEvent.id).where(
        OutboxEvent.org_id == org.id,
        OutboxEvent.session_id.is_(None),
        OutboxEvent.payload["external_user_id"].as_string() == external_user_id,
    )
    database = removed["database"]
    for entry in SESSION_ROWS:
        if entry.via_events:
            where = entry.table.c[entry.column].in_(events)
        elif entry.table is OutboxEvent.__table__:
            where = OutboxEvent.id.in_(events)
        else:
            continue
        _count(
            database, entry.label, db.session.execute(sa.delete(entry.table).where(where)).rowcount
        )
    needle = [
        f'"{field}": "{external_user_id}"'.encode() for field in ("external_user_id", "distinct_id")
    ]
    for path in sorted(Path(current_app.config["INSTANCE_PATH"]).glob("outbox-*.jsonl")):
        removed["files"]["dry_run_lines"] += forget_lines(path, needle)


def _erase_files(org: Org, session_ids: list[str]) -> dict[str, Any]:
    """Delete the org's export files that mention an erased session; drop their lines from
    the dry-run sink files."""
    if not session_ids:
        return {"export_files": [], "dry_run_lines": 0}
    needles = [session_id.encode() for session_id in session_ids]
    removed: list[str] = []
    folder = runner.exports_folder() / str(org.id)
    if folder.is_dir():
        for path in sorted(folder.glob("job-*")):
            if _mentions(path, needles):
                path.unlink(missing_ok=True)
                removed.append(path.name)
    lines = 0
    for path in sorted(Path(current_app.config["INSTANCE_PATH"]).glob("outbox-*.jsonl")):
        lines += forget_lines(path, needles)
    return {"export_files": removed, "dry_run_lines": lines}


def _mentions(path: Path, needles: list[bytes]) -> bool:
    try:
        with path.open("rb") as handle:
            for line in handle:
                if any(needle in line for needle in needles):
                    return True
    except FileNotFoundError:
        return False
    return False


def _downstream(event_id: Any) -> list[dict[str, str]]:
    sinks = db.session.scalars(
        sa.select(Delivery.sink).where(Delivery.event_id == event_id).order_by(Delivery.sink)
    )
    return [{"sink": sink, "action": _ACTIONS.get(sink, "receives the event")} for sink in sinks]


_ACTIONS = {
    "posthog": "deletes the persons (distinct ids) with the org's personal API key",
    "memory": "deletes the memory containers' documents",
}


def _receipt(
    scope: str,
    removed: dict[str, Any],
    event_id: Any,
    event_type: str,
    payload: dict[str, Any] | None,
    external_user_id: str | None,
) -> dict[str, Any]:
    receipt: dict[str, Any] = {
        "scope": scope,
        "event_type": event_type,
        "removed": removed,
        "erased_at": utcnow().isoformat(),
    }
    if external_user_id is not None:
        receipt["external_user_id"] = external_user_id
    if payload is not None:
        receipt["session_ids"] = payload["session_ids"]
        receipt["memory_containers"] = payload["memory_containers"]
    if event_id is not None:
        receipt["events"] = [str(event_id)]
        receipt["downstream"] = _downstream(event_id)
    return receipt


def _count(counts: dict[str, int], label: str, rowcount: int | None) -> None:
    counts[label] = counts.get(label, 0) + max(0, rowcount or 0)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
