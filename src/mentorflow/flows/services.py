"""Flow authoring and learner-session operations. They flush; the caller commits."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mentorflow.flows.document import checksum as definition_checksum
from mentorflow.flows.engine import Flow as CompiledFlow
from mentorflow.flows.models import (
    EventKind,
    Flow,
    FlowVersion,
    LearnerSession,
    PublishLog,
    SessionStatus,
    StepEvent,
)
from mentorflow.platform.auth import SESSION_TOKEN_PREFIX, generate_secret, hash_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import EventType, emit_event
from mentorflow.tenants.models import Org

SESSION_ID_RE = r"^[0-9a-f]{32}$"
_COMPILED_CACHE_SIZE = 256
_compiled: OrderedDict[tuple[int, str], CompiledFlow] = OrderedDict()


class FlowError(ValueError):
    """A flow operation was refused; the message says why, for people."""


class DraftConflict(FlowError):
    """The draft changed since the editor loaded it."""


class StepConflict(Exception):
    """The submitted step is not the session's current step (a stale tab, a racing submit)."""

    def __init__(self, session: LearnerSession, detail: str) -> None:
        super().__init__(detail)
        self.session = session
        self.detail = detail


class SessionClosed(StepConflict):
    """The session is completed and takes no more steps."""


class UnknownStep(LookupError):
    """The step id is not part of the session's flow version."""


def compiled_flow(version: FlowVersion) -> CompiledFlow:
    """Return the compiled engine flow of a version; versions are immutable, so it is cached."""
    # The checksum is part of the key so that a recycled id (a restored database) never
    # serves another definition.
    cache_key = (version.id, version.checksum)
    flow = _compiled.get(cache_key)
    if flow is None:
        flow = CompiledFlow(version.definition)
        _compiled[cache_key] = flow
        if len(_compiled) > _COMPILED_CACHE_SIZE:
            _compiled.popitem(last=False)
    return flow


def find_flow(org_id: int, slug: str) -> Flow | None:
    """Return the org's flow with ``slug``."""
    return db.session.scalars(
        sa.select(Flow).where(Flow.org_id == org_id, Flow.slug == slug)
    ).first()


def get_flow(org: Org, slug: str) -> Flow:
    """Return the org's flow with ``slug`` or raise ``FlowError``."""
    flow = find_flow(org.id, slug)
    if flow is None:
        raise FlowError(f"no flow '{slug}' in '{org.slug}'")
    return flow


def save_draft(
    org: Org, definition: dict[str, Any], *, expected_revision: int | None = None
) -> tuple[Flow, bool]:
    """Create the flow or replace its draft with a validated definition; return (flow, created)."""
    flow = find_flow(org.id, definition["slug"])
    if flow is None:
        flow = Flow(
            org_id=org.id,
            slug=definition["slug"],
            title=definition["title"],
            draft=definition,
            draft_revision=1,
        )
        db.session.add(flow)
        db.session.flush()
        return flow, True
    if expected_revision is not None and expected_revision != flow.draft_revision:
        raise DraftConflict(
            f"the draft of '{flow.slug}' was saved by someone else "
            f"(revision {flow.draft_revision}, you edited revision {expected_revision}); "
            "reload it and apply your change again"
        )
    if flow.draft != definition:
        flow.draft = definition
        flow.title = definition["title"]
        flow.draft_revision += 1
    flow.archived_at = None
    db.session.flush()
    return flow, False


def latest_version(flow: Flow) -> FlowVersion | None:
    """Return the highest-numbered version of ``flow``."""
    return db.session.scalars(
        sa.select(FlowVersion)
        .where(FlowVersion.flow_id == flow.id)
        .order_by(FlowVersion.number.desc())
        .limit(1)
    ).first()


def publish_version(
    flow: Flow, *, notes: str | None = None, by: str | None = None
) -> tuple[FlowVersion, bool]:
    """Publish the draft as a new immutable version; return (version, created).

    Publishing a draft identical to the published version changes nothing.
    """
    digest = definition_checksum(flow.draft)
    current = flow.published_version
    if current is not None and current.checksum == digest:
        return current, False
    latest = latest_version(flow)
    version = FlowVersion(
        flow_id=flow.id,
        number=(latest.number + 1) if latest else 1,
        definition=flow.draft,
        checksum=digest,
        published_by=by,
        published_at=utcnow(),
        notes=notes,
    )
    db.session.add(version)
    db.session.flush()
    _point_at(flow, version, by=by, notes=notes)
    return version, True


def get_version(flow: Flow, number: int | None = None) -> FlowVersion:
    """Return version ``number`` of ``flow`` (the published one when None)."""
    if number is None:
        if flow.published_version is None:
            raise FlowError(f"flow '{flow.slug}' has no published version")
        return flow.published_version
    version = db.session.scalars(
        sa.select(FlowVersion).where(FlowVersion.flow_id == flow.id, FlowVersion.number == number)
    ).first()
    if version is None:
        raise FlowError(f"flow '{flow.slug}' has no version {number}")
    return version


def rollback_flow(flow: Flow, number: int, *, by: str | None = None) -> FlowVersion:
    """Publish an older version again; sessions already started keep their own version."""
    version = get_version(flow, number)
    if flow.published_version_id == version.id:
        raise FlowError(f"version {number} of '{flow.slug}' is already the published one")
    _point_at(flow, version, by=by, notes=f"rollback to version {number}")
    return version


def _point_at(flow: Flow, version: FlowVersion, *, by: str | None, notes: str | None) -> None:
    previous = flow.published_version
    flow.published_version = version
    db.session.add(
        PublishLog(
            flow_id=flow.id,
            from_version=previous.number if previous else None,
            to_version=version.number,
            by=by,
            at=utcnow(),
            notes=notes,
        )
    )
    db.session.flush()


def find_published(org_id: int, slug: str) -> tuple[Flow, FlowVersion] | None:
    """Return a live flow and its published version, or None."""
    row = db.session.execute(
        sa.select(Flow, FlowVersion)
        .join(FlowVersion, FlowVersion.id == Flow.published_version_id)
        .where(Flow.org_id == org_id, Flow.slug == slug, Flow.archived_at.is_(None))
    ).first()
    return None if row is None else (row[0], row[1])


def start_session(
    org: Org,
    flow: Flow,
    version: FlowVersion,
    *,
    name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    external_user_id: str | None = None,
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
        current_step_id=compiled_flow(version).first_step_id,
        answers={},
        status=SessionStatus.ACTIVE,
        name=name,
        email=email,
        phone=phone,
        external_user_id=external_user_id,
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
    return session, token


def lock_session(org_id: int, session_id: str) -> LearnerSession | None:
    """Return the org's session, locked for update until the transaction ends."""
    return db.session.scalars(
        sa.select(LearnerSession)
        .where(LearnerSession.id == session_id, LearnerSession.org_id == org_id)
        .with_for_update(of=LearnerSession)
        .execution_options(populate_existing=True)
    ).first()


def find_session(org_id: int, session_id: str) -> LearnerSession | None:
    """Return the org's session."""
    return db.session.scalars(
        sa.select(LearnerSession).where(
            LearnerSession.id == session_id, LearnerSession.org_id == org_id
        )
    ).first()


def commit_step(org: Org, session: LearnerSession, step_id: str, answer: Any) -> LearnerSession:
    """Answer the current step and move on; raise on a stale step or an invalid answer."""
    if session.status == SessionStatus.COMPLETED:
        raise SessionClosed(session, "This session is completed and takes no more answers.")
    if step_id != session.current_step_id:
        raise StepConflict(
            session,
            f"Step '{step_id}' is not the current step; the session is at "
            f"'{session.current_step_id}'.",
        )
    flow = compiled_flow(session.flow_version)
    value = flow.validate_answer(step_id, answer)  # AnswerError: nothing has changed yet
    step = flow.step(step_id)
    answers = dict(session.answers)
    if step["type"] not in ("info", "video"):
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
    _touch(session, now)
    db.session.add(
        StepEvent(
            session_id=session.id,
            seq=seq,
            org_id=org.id,
            step_id=step_id,
            answer=value,
            from_step_id=step_id,
            to_step_id=next_step_id,
            kind=EventKind.ANSWERED,
            created_at=now,
        )
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
    emit_event(org.id, EventType.STEP_COMPLETED, payload, session_id=session.id)
    if next_step_id is None:
        emit_event(
            org.id,
            EventType.SESSION_COMPLETED,
            _event_payload(org, session, now),
            session_id=session.id,
        )
    db.session.flush()
    return session


def go_back(org: Org, session: LearnerSession, step_id: str) -> LearnerSession:
    """Move the session back to a step it already completed; answers are kept."""
    if session.status == SessionStatus.COMPLETED:
        raise SessionClosed(session, "This session is completed; it cannot go back.")
    flow = compiled_flow(session.flow_version)
    if not flow.has_step(step_id):
        raise UnknownStep(step_id)
    completed = flow.position(session.answers, session.current_step_id).completed_step_ids
    if step_id not in completed:
        raise StepConflict(session, f"Step '{step_id}' has not been completed in this session.")
    now = utcnow()
    db.session.add(
        StepEvent(
            session_id=session.id,
            seq=session.version,
            org_id=org.id,
            step_id=step_id,
            answer=None,
            from_step_id=session.current_step_id,
            to_step_id=step_id,
            kind=EventKind.BACK,
            created_at=now,
        )
    )
    session.current_step_id = step_id
    session.status = SessionStatus.ACTIVE
    _touch(session, now)
    db.session.flush()
    return session


def _touch(session: LearnerSession, now: datetime) -> None:
    session.version += 1
    session.updated_at = now
    session.last_activity_at = now
    if session.status == SessionStatus.ABANDONED:
        session.status = SessionStatus.ACTIVE


def _event_payload(org: Org, session: LearnerSession, now: datetime) -> dict[str, Any]:
    return {
        "org": org.slug,
        "session_id": session.id,
        "flow": session.flow.slug,
        "flow_version": session.flow_version.number,
        "status": str(session.status),
        "distinct_id": session.external_user_id or session.id,
        "memory_container": session.memory_container,
        "occurred_at": now.isoformat(),
    }


def session_state(org: Org, session: LearnerSession) -> dict[str, Any]:
    """Return ``{session, step}`` as the learner API shows them."""
    flow = compiled_flow(session.flow_version)
    position = flow.position(session.answers, session.current_step_id)
    return {
        "session": {
            "id": session.id,
            "org": org.slug,
            "flow": session.flow.slug,
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
            "created_at": session.created_at,
            "updated_at": session.updated_at,
            "completed_at": session.completed_at,
        },
        "step": flow.step(session.current_step_id) if session.current_step_id else None,
    }


def session_context(session: LearnerSession) -> dict[str, Any]:
    """Return what a chat or AI caller needs to know about where the learner is."""
    flow = compiled_flow(session.flow_version)
    position = flow.position(session.answers, session.current_step_id)
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
    """Mark active sessions idle past their org's TTL abandoned; emit ``session.abandoned``."""
    now = now or utcnow()
    abandoned = 0
    for org in db.session.scalars(sa.select(Org)).all():
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
        abandoned += len(sessions)
    db.session.flush()
    return abandoned
