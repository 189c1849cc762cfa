"""Learner sessions: start, commit a step, go back, read state, abandon. They flush."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mentorflow.delivery import webhooks
from mentorflow.flows.authoring import VersionInfo, version_info
from mentorflow.flows.document import takes_answer
from mentorflow.flows.engine import PRIVATE_STEP_FIELD
from mentorflow.flows.models import (
    EventKind,
    Flow,
    FlowVersion,
    LearnerSession,
    SessionStatus,
    StepEvent,
)
from mentorflow.platform.crypto import generate_secret, hash_secret
from mentorflow.platform.db import DriverStatement, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import EventType, WriteTransaction, emit_event, write_in
from mentorflow.platform.push import Change, announce_after_commit
from mentorflow.tenants.credentials import SESSION_TOKEN_PREFIX, session_token_expired
from mentorflow.tenants.models import Org

SESSION_ID_RE = r"^[0-9a-f]{32}$"

log = logging.getLogger(__name__)


class StepConflict(Exception):
    """The submitted step is not the session's current step (a stale tab, a racing submit)."""

    def __init__(self, session: SessionRecord, detail: str) -> None:
        super().__init__(detail)
        self.session = session
        self.detail = detail


class SessionClosed(StepConflict):
    """The session is completed and takes no more steps."""


class UnknownStep(LookupError):
    """The step id is not part of the session's flow version."""


def start_session(
    org: Org,
    flow: Flow,
    version: FlowVersion,
    *,
    name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    external_user_id: str | None = None,
    learner_id: int | None = None,
) -> tuple[LearnerSession, str]:
    """Start a session pinned to ``version``; return it with its token (shown once)."""
    now = utcnow()
    session_id = secrets.token_hex(16)
    token = generate_secret(SESSION_TOKEN_PREFIX)
    session = LearnerSession(
        id=session_id,
        org_id=org.id,
        flow_id=flow.id,
        flow_version_id=version.id,
        current_step_id=version_info(version.id, version.checksum).engine.first_step_id,
        answers={},
        status=SessionStatus.ACTIVE,
        name=name,
        email=email,
        phone=phone,
        external_user_id=external_user_id,
        learner_id=learner_id,
        memory_container=f"mentorflow-{org.slug}-{session_id}",
        token_hash=hash_secret(token),
        version=1,
        created_at=now,
        updated_at=now,
        last_activity_at=now,
    )
    session.flow, session.flow_version = flow, version
    db.session.add(session)
    db.session.flush()
    emit_event(
        org.id, EventType.SESSION_STARTED, _event_payload(org, session, now), session_id=session.id
    )
    announce_change(session)
    return session, token


#: Columns of a session the learner API reads and the step commit writes.
_SESSION_COLUMNS = [
    LearnerSession.id,
    LearnerSession.org_id,
    LearnerSession.flow_id,
    LearnerSession.flow_version_id,
    LearnerSession.current_step_id,
    LearnerSession.answers,
    LearnerSession.status,
    LearnerSession.name,
    LearnerSession.email,
    LearnerSession.phone,
    LearnerSession.external_user_id,
    LearnerSession.learner_id,
    LearnerSession.memory_container,
    LearnerSession.token_hash,
    LearnerSession.version,
    LearnerSession.created_at,
    LearnerSession.updated_at,
    LearnerSession.completed_at,
]


def session_token_owner(token_hash: str) -> tuple[str, int] | None:
    """Return (session id, org id) of the session a token opens, if any (and not expired)."""
    row = db.session.execute(
        sa.select(
            LearnerSession.id,
            LearnerSession.org_id,
            LearnerSession.status,
            LearnerSession.completed_at,
            LearnerSession.updated_at,
        ).where(LearnerSession.token_hash == token_hash)
    ).first()
    if row is None or session_token_expired(closed_at(row)):
        return None
    return (row.id, row.org_id)


def closed_at(session: Any) -> datetime | None:
    """Return when a session completed or was abandoned; None while it is active."""
    if session.status == SessionStatus.COMPLETED:
        return session.completed_at or session.updated_at
    if session.status == SessionStatus.ABANDONED:
        return session.updated_at  # the sweep stamps it when it abandons the session
    return None


@dataclass
class SessionRecord:
    """A learner session as the hot path handles it: plain values, written back with Core."""

    id: str
    org_id: int
    flow_id: int
    flow_version_id: int
    current_step_id: str | None
    answers: dict[str, Any]
    status: SessionStatus
    name: str | None
    email: str | None
    phone: str | None
    external_user_id: str | None
    learner_id: int | None
    memory_container: str
    token_hash: str
    version: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    flow_version: VersionInfo


def session_query(*, for_update: bool) -> sa.Select:
    """Select a session's columns and its version's checksum, by ``session_id`` and
    ``org_id``."""
    stmt = (
        sa.select(*_SESSION_COLUMNS, FlowVersion.checksum)
        .join(FlowVersion, FlowVersion.id == LearnerSession.flow_version_id)
        .where(
            LearnerSession.id == sa.bindparam("session_id"),
            LearnerSession.org_id == sa.bindparam("org_id"),
        )
    )
    if not for_update:
        return stmt
    # The org's webhook endpoints come with the lock: the events of the commit need them.
    return stmt.add_columns(webhooks.endpoints_column(LearnerSession.org_id)).with_for_update(
        of=LearnerSession
    )


# Built once: the hot path runs these on the driver's cursor of its write transaction's
# connection (``DriverStatement``), bypassing the ORM and SQLAlchemy's per-execution work.
_FIND_SESSION = DriverStatement(session_query(for_update=False))
_LOCK_SESSION = DriverStatement(session_query(for_update=True))
_UPDATE_SESSION = DriverStatement(
    LearnerSession.__table__.update().where(
        LearnerSession.__table__.c.id == sa.bindparam("session_id")
    ),
    column_keys=[
        "answers",
        "current_step_id",
        "status",
        "completed_at",
        "name",
        "email",
        "phone",
        "version",
        "updated_at",
        "last_activity_at",
    ],
)
_INSERT_STEP_EVENT = DriverStatement(
    StepEvent.__table__.insert(),
    column_keys=[
        "session_id",
        "seq",
        "org_id",
        "step_id",
        "answer",
        "from_step_id",
        "to_step_id",
        "kind",
        "created_at",
    ],
)


def record_of_row(row: dict[str, Any] | None) -> SessionRecord | None:
    """Return the record of a row of :func:`session_query` (consumed), or None."""
    if row is None:
        return None
    checksum = row.pop("checksum")
    row["status"] = SessionStatus(row["status"])
    return SessionRecord(**row, flow_version=version_info(row["flow_version_id"], checksum))


def lock_session(
    org_id: int, session_id: str, connection: sa.Connection | None = None
) -> SessionRecord | None:
    """Return the org's session, its row locked until the transaction ends."""
    params = {"session_id": session_id, "org_id": org_id}
    connection = connection or db.session.connection()
    row = _LOCK_SESSION.first(connection, params)
    if row is not None:
        webhooks.prime_endpoints(connection, org_id, row.pop("webhook_endpoints"))
    return record_of_row(row)


def find_session(
    org_id: int, session_id: str, connection: sa.Connection | None = None
) -> SessionRecord | None:
    """Return the org's session."""
    params = {"session_id": session_id, "org_id": org_id}
    return record_of_row(_FIND_SESSION.first(connection or db.session.connection(), params))


def find_sessions(*conditions: Any, order_by: list[Any], limit: int) -> list[SessionRecord]:
    """Return the sessions matching ``conditions`` in ``order_by`` order, at most ``limit``."""
    stmt = (
        sa.select(*_SESSION_COLUMNS, FlowVersion.checksum)
        .join(FlowVersion, FlowVersion.id == LearnerSession.flow_version_id)
        .where(*conditions)
        .order_by(*order_by)
        .limit(limit)
    )
    return [record_of_row(dict(row)) for row in db.session.execute(stmt).mappings()]  # type: ignore[misc]


def session_record(session: LearnerSession) -> SessionRecord:
    """Return the record of an ORM session (after start_session)."""
    db.session.flush()
    found = find_session(session.org_id, session.id)
    assert found is not None
    return found


def commit_step(
    org: Org,
    session: SessionRecord,
    step_id: str,
    answer: Any,
    transaction: WriteTransaction | None = None,
) -> SessionRecord:
    """Answer the current step and move on; raise on a stale step or an invalid answer.

    Writes in ``transaction``, else in the ORM session's transaction.
    """
    if session.status == SessionStatus.COMPLETED:
        raise SessionClosed(session, "This session is completed and takes no more answers.")
    if step_id != session.current_step_id:
        raise StepConflict(
            session,
            f"Step '{step_id}' is not the current step; the session is at "
            f"'{session.current_step_id}'.",
        )
    flow = session.flow_version.engine
    value = flow.validate_answer(step_id, answer)  # AnswerError: nothing has changed yet
    step = flow.step_view(step_id)
    answers = dict(session.answers)
    if takes_answer(step["type"]):
        answers[step["key"]] = value
    next_step_id = flow.next_step_id(step_id, answers)
    now = utcnow()
    seq = session.version
    if step["type"] == "contact" and value:
        for field in ("name", "email", "phone"):
            if value.get(field):
                setattr(session, field, value[field])
    session.answers = answers
    session.current_step_id = next_step_id
    session.status = SessionStatus.ACTIVE if next_step_id else SessionStatus.COMPLETED
    session.completed_at = None if next_step_id else now
    _save_move(
        transaction,
        org,
        session,
        now,
        step_id=step_id,
        answer=value,
        kind=EventKind.ANSWERED,
        from_step_id=step_id,
    )
    payload = _event_payload(org, session, now)
    payload.update(
        seq=seq,
        step_id=step_id,
        phase=step["phase_id"],
        prompt=step.get("prompt"),
        step_type=step["type"],
        key=step.get("key"),
        answer=value,
    )
    emit_event(
        org.id,
        EventType.STEP_COMPLETED,
        payload,
        session_id=session.id,
        transaction=transaction,
    )
    if next_step_id is None:
        emit_event(
            org.id,
            EventType.SESSION_COMPLETED,
            _event_payload(org, session, now),
            session_id=session.id,
            transaction=transaction,
        )
    announce_change(session, transaction)
    return session


def go_back(
    org: Org,
    session: SessionRecord,
    step_id: str,
    transaction: WriteTransaction | None = None,
) -> SessionRecord:
    """Move the session back to a step it already completed; answers are kept.

    Emits ``step.reopened``, so the change feed shows the move and the answer given again.
    """
    check_back_target(session, step_id)
    from_step_id = session.current_step_id
    seq = session.version
    now = utcnow()
    session.current_step_id = step_id
    session.status = SessionStatus.ACTIVE
    _save_move(
        transaction,
        org,
        session,
        now,
        step_id=step_id,
        answer=None,
        kind=EventKind.BACK,
        from_step_id=from_step_id,
    )
    payload = _event_payload(org, session, now)
    payload.update(seq=seq, step_id=step_id, from_step_id=from_step_id)
    emit_event(
        org.id, EventType.STEP_REOPENED, payload, session_id=session.id, transaction=transaction
    )
    announce_change(session, transaction)
    return session


def announce_change(
    session: SessionRecord | LearnerSession, transaction: WriteTransaction | None = None
) -> None:
    """Push the session's new version to its open streams once the transaction commits."""
    announce_after_commit(
        Change(session.org_id, session.flow_id, session.id, session.version, session.learner_id),
        transaction,
    )


def check_back_target(session: SessionRecord, step_id: str) -> None:
    """Raise unless the session can go back to ``step_id`` (a step it completed)."""
    if session.status == SessionStatus.COMPLETED:
        raise SessionClosed(session, "This session is completed; it cannot go back.")
    flow = session.flow_version.engine
    if not flow.has_step(step_id):
        raise UnknownStep(step_id)
    completed = flow.position(session.answers, session.current_step_id).completed_step_ids
    if step_id not in completed:
        raise StepConflict(session, f"Step '{step_id}' has not been completed in this session.")


def public_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """Return a published definition as learners may read it: without ``legacy_key``."""
    return {
        **definition,
        "phases": [
            {
                **phase,
                "steps": [
                    {name: value for name, value in step.items() if name != PRIVATE_STEP_FIELD}
                    for step in phase.get("steps", [])
                ],
            }
            for phase in definition.get("phases", [])
        ],
    }


def _save_move(
    transaction: WriteTransaction | None,
    org: Org,
    session: SessionRecord,
    now: datetime,
    *,
    step_id: str,
    answer: Any,
    kind: EventKind,
    from_step_id: str | None,
) -> None:
    """Write the session's new position and append its step event (one event per version)."""
    seq = session.version
    if session.status == SessionStatus.ABANDONED:
        session.status = SessionStatus.ACTIVE
    session.version += 1
    session.updated_at = now
    write_in(
        transaction,
        _UPDATE_SESSION,
        {
            "session_id": session.id,
            "answers": session.answers,
            "current_step_id": session.current_step_id,
            "status": session.status,
            "completed_at": session.completed_at,
            "name": session.name,
            "email": session.email,
            "phone": session.phone,
            "version": session.version,
            "updated_at": now,
            "last_activity_at": now,
        },
    )
    write_in(
        transaction,
        _INSERT_STEP_EVENT,
        {
            "session_id": session.id,
            "seq": seq,
            "org_id": org.id,
            "step_id": step_id,
            "answer": answer,
            "from_step_id": from_step_id,
            "to_step_id": session.current_step_id,
            "kind": kind,
            "created_at": now,
        },
    )


def _event_payload(
    org: Org, session: SessionRecord | LearnerSession, now: datetime
) -> dict[str, Any]:
    if isinstance(session, SessionRecord):
        flow_slug, number = session.flow_version.flow_slug, session.flow_version.number
    else:
        flow_slug, number = session.flow.slug, session.flow_version.number
    if session.flow_version.preview:
        return {"preview": True}  # emit_event drops a preview session's events
    return {
        "org": org.slug,
        "session_id": session.id,
        "flow": flow_slug,
        "flow_version": number,
        "status": str(session.status),
        "distinct_id": session.external_user_id or session.id,
        "memory_container": session.memory_container,
        "occurred_at": now.isoformat(),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def session_state(org: Org, session: SessionRecord) -> dict[str, Any]:
    """Return ``{session, step}`` as the learner API shows them, ready for JSON."""
    flow = session.flow_version.engine
    position = flow.position(session.answers, session.current_step_id)
    return {
        "session": {
            "id": session.id,
            "org": org.slug,
            "flow": session.flow_version.flow_slug,
            "flow_version": session.flow_version.number,
            "status": str(session.status),
            "current_step_id": session.current_step_id,
            "answers": session.answers,
            "completed_step_ids": position.completed_step_ids,
            "progress": _progress(position),
            "name": session.name,
            "email": session.email,
            "phone": session.phone,
            "external_user_id": session.external_user_id,
            "memory_container": session.memory_container,
            "version": session.version,
            "created_at": _iso(session.created_at),
            "updated_at": _iso(session.updated_at),
            "completed_at": _iso(session.completed_at),
        },
        "step": flow.step_view(session.current_step_id) if session.current_step_id else None,
    }


def session_context(session: SessionRecord) -> dict[str, Any]:
    """Return what a chat or AI caller needs to know about where the learner is."""
    position = session.flow_version.engine.position(session.answers, session.current_step_id)
    return {
        "answers": session.answers,
        "completed_step_ids": position.completed_step_ids,
        "completed_phases": position.completed_phases,
        "current_phase": position.current_phase,
        "progress": _progress(position),
        "contact": {"name": session.name, "email": session.email, "phone": session.phone},
    }


def _progress(position: Any) -> dict[str, int]:
    progress = position.progress
    return {"completed": progress.completed, "total": progress.total, "percent": progress.percent}


def abandon_inactive_sessions(
    default_ttl: int, *, now: datetime | None = None, limit: int = 500
) -> int:
    """Mark active sessions idle past their org's TTL abandoned; emit ``session.abandoned``.

    Each org runs in its own savepoint: one org's failure (a setting no check let through, a
    database error) is logged with the org named and undone, and the other orgs proceed.
    """
    now = now or utcnow()
    abandoned = 0
    for org in db.session.scalars(sa.select(Org).order_by(Org.id)).all():
        slug, org_id = org.slug, org.id
        try:
            with db.session.begin_nested():
                abandoned += _abandon_org_sessions(org, default_ttl, now, limit)
        except Exception:
            log.exception("abandonment sweep failed for org %s (id %s)", slug, org_id)
    return abandoned


def _abandon_org_sessions(org: Org, default_ttl: int, now: datetime, limit: int) -> int:
    cutoff = now - timedelta(seconds=org.abandon_after(default_ttl))
    sessions = db.session.scalars(
        sa.select(LearnerSession)
        .where(
            LearnerSession.org_id == org.id,
            LearnerSession.status == SessionStatus.ACTIVE,
            LearnerSession.last_activity_at < cutoff,
        )
        .order_by(LearnerSession.last_activity_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for session in sessions:
        session.status = SessionStatus.ABANDONED
        session.version += 1
        session.updated_at = now
        emit_event(
            org.id,
            EventType.SESSION_ABANDONED,
            _event_payload(org, session, now),
            session_id=session.id,
        )
        announce_change(session)
    db.session.flush()
    return len(sessions)
