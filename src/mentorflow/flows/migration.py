"""Move active sessions of older versions of a flow to its published version.

A publish leaves every session pinned to the version it started on. A mentor may instead
move the active ones along: a session can move when every answer it gave still fits the new
version; it goes to its current step if the new version still has it, else to the nearest
earlier step of its path that it has (and never past a required question of the new version
that it has not answered). Every other session stays pinned, with the reason.

Moving is a background job (``migrate_sessions``): each move is its own transaction that
locks the session, plans it again, writes it, appends a ``migrated`` step event and emits
``session.migrated``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from mentorflow.flows import authoring
from mentorflow.flows.document import takes_answer
from mentorflow.flows.engine import AnswerError, CompiledFlow
from mentorflow.flows.learner_sessions import announce_change
from mentorflow.flows.models import (
    EventKind,
    Flow,
    FlowVersion,
    LearnerSession,
    SessionStatus,
    StepEvent,
)
from mentorflow.jobs import runner
from mentorflow.jobs.models import Job
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import EventType, emit_event
from mentorflow.tenants import audit
from mentorflow.tenants.models import Org

log = logging.getLogger(__name__)

MIGRATE_SESSIONS = "migrate_sessions"


@dataclass(frozen=True)
class SessionMove:
    """What moving one session would do: its target step, or why it stays pinned."""

    session_id: str
    learner: str
    from_version: int
    from_step_id: str | None
    to_step_id: str | None
    reason: str | None = None

    @property
    def can_move(self) -> bool:
        return self.reason is None


def plan_step(
    old: CompiledFlow, new: CompiledFlow, answers: dict[str, Any], current_step_id: str | None
) -> tuple[str | None, str | None]:
    """Return (the step a session would resume at in ``new``, None) or (None, the reason)."""
    if current_step_id is None:
        return None, "the session is completed"
    keyed = {}
    for step_id in new.step_ids:
        step = new.step_view(step_id)
        if step.get("key") and takes_answer(step["type"]):
            keyed[step["key"]] = step_id
    for key, value in answers.items():
        if key not in keyed:
            continue  # an answer the new version does not ask for: kept, unused
        try:
            new.validate_answer(keyed[key], value)
        except AnswerError as exc:
            return None, f"the answer to '{key}' does not fit the new version ({exc})"
    try:
        path = old.position(answers, current_step_id).completed_step_ids
    except KeyError:
        path = []
    candidates = [current_step_id, *reversed(path)]
    target = next((step_id for step_id in candidates if new.has_step(step_id)), new.first_step_id)
    order = {step_id: index for index, step_id in enumerate(new.step_ids)}
    step_id: str | None = new.first_step_id
    while step_id is not None and order[step_id] < order[target]:
        step = new.step_view(step_id)
        if takes_answer(step["type"]) and step["required"] and answers.get(step["key"]) is None:
            return step_id, None  # a new question comes first
        step_id = new.next_step_id(step_id, answers)
    if step_id is None:
        return None, "with its answers, the new version would end before its current step"
    return step_id, None


def _label(session: LearnerSession) -> str:
    return session.name or session.email or session.external_user_id or f"Learner {session.id[:6]}"


def sessions_on_older_versions(flow: Flow, target: FlowVersion) -> sa.Select:
    """Return the query of the flow's active sessions pinned to versions before ``target``."""
    older = sa.select(FlowVersion.id).where(
        FlowVersion.flow_id == flow.id,
        FlowVersion.preview.is_(False),
        FlowVersion.number < target.number,
    )
    return sa.select(LearnerSession).where(
        LearnerSession.org_id == flow.org_id,
        LearnerSession.flow_id == flow.id,
        LearnerSession.status == SessionStatus.ACTIVE,
        LearnerSession.preview.is_(False),
        LearnerSession.flow_version_id.in_(older),
    )


def count_on_older_versions(flow: Flow, target: FlowVersion) -> dict[int, int]:
    """Return how many active sessions each older version of the flow has, by number."""
    query = sessions_on_older_versions(flow, target).subquery()
    rows = db.session.execute(
        sa.select(FlowVersion.number, sa.func.count())
        .join(query, query.c.flow_version_id == FlowVersion.id)
        .group_by(FlowVersion.number)
        .order_by(FlowVersion.number)
    ).all()
    return {number: count for number, count in rows}


def plan_session(session: LearnerSession, target: FlowVersion) -> SessionMove:
    """Return what moving ``session`` to ``target`` would do."""
    old = authoring.compiled_flow(session.flow_version)
    new = authoring.compiled_flow(target)
    step_id, reason = plan_step(old, new, dict(session.answers), session.current_step_id)
    return SessionMove(
        session_id=session.id,
        learner=_label(session),
        from_version=session.flow_version.number,
        from_step_id=session.current_step_id,
        to_step_id=step_id,
        reason=reason,
    )


def dry_run(flow: Flow, target: FlowVersion) -> list[SessionMove]:
    """Return, for every active session on an older version, whether and where it would move."""
    sessions = db.session.scalars(
        sessions_on_older_versions(flow, target).order_by(LearnerSession.created_at)
    ).all()
    return [plan_session(session, target) for session in sessions]


def move_session(org: Org, session_id: str, target: FlowVersion) -> SessionMove | None:
    """Lock the session, plan it again and move it if it can; flushes. None if it is gone."""
    session = db.session.scalars(
        sa.select(LearnerSession)
        .where(LearnerSession.id == session_id, LearnerSession.org_id == org.id)
        .with_for_update()
    ).first()
    if session is None or session.status != SessionStatus.ACTIVE:
        return None
    if session.flow_version.number >= target.number:
        return None  # moved already (a retried job)
    plan = plan_session(session, target)
    if not plan.can_move:
        return plan
    now = utcnow()
    seq = session.version
    from_number = session.flow_version.number
    session.flow_version_id = target.id
    session.flow_version = target
    session.current_step_id = plan.to_step_id
    session.version += 1
    session.updated_at = now
    db.session.add(
        StepEvent(
            session_id=session.id,
            seq=seq,
            org_id=org.id,
            step_id=plan.to_step_id,
            answer=None,
            from_step_id=plan.from_step_id,
            to_step_id=plan.to_step_id,
            kind=EventKind.MIGRATED,
            created_at=now,
        )
    )
    db.session.flush()
    emit_event(
        org.id,
        EventType.SESSION_MIGRATED,
        {
            "org": org.slug,
            "session_id": session.id,
            "flow": session.flow.slug,
            "flow_version": target.number,
            "from_version": from_number,
            "status": str(session.status),
            "distinct_id": session.external_user_id or session.id,
            "memory_container": session.memory_container,
            "occurred_at": now.isoformat(),
            "seq": seq,
            "step_id": plan.to_step_id,
            "from_step_id": plan.from_step_id,
        },
        session_id=session.id,
    )
    announce_change(session)
    return plan


def create_migration(org: Org, flow: Flow, target: FlowVersion, *, by: str | None = None) -> Job:
    """Add a pending job that moves the flow's movable sessions to ``target``."""
    if target.preview or target.flow_id != flow.id:
        raise runner.JobError("sessions move only to a published version of their flow")
    job = runner.create_job(
        org,
        MIGRATE_SESSIONS,
        {"flow_id": flow.id, "flow": flow.slug, "version": target.number},
        by=by,
    )
    audit.record(
        org.id,
        "flow.migration_started",
        f"flow:{flow.slug}",
        after={"version": target.number, "job": job.id},
    )
    return job


def run_migration(job: Job, progress: runner.Progress) -> dict[str, Any]:
    """Move each movable session in its own transaction; report who moved and who stayed."""
    org = db.session.get(Org, job.org_id)
    flow = db.session.get(Flow, job.params["flow_id"])
    if org is None or flow is None or flow.org_id != org.id:
        raise runner.JobError("the flow of this migration no longer exists")
    target = authoring.get_version(flow, job.params["version"])
    ids = list(
        db.session.scalars(
            sessions_on_older_versions(flow, target)
            .with_only_columns(LearnerSession.id)
            .order_by(LearnerSession.created_at)
        ).all()
    )
    db.session.rollback()
    moved: list[dict[str, Any]] = []
    pinned: list[dict[str, Any]] = []
    for done, session_id in enumerate(ids):
        begin_write(db.session)
        org = db.session.get(Org, job.org_id)
        target = db.session.get(FlowVersion, target.id)
        plan = move_session(org, session_id, target)  # type: ignore[arg-type]
        db.session.commit()
        if plan is not None:
            (moved if plan.can_move else pinned).append(asdict(plan))
        progress(done + 1, len(ids))
    log.info(
        "migration job %s: %d sessions moved to %s v%s, %d pinned",
        job.id,
        len(moved),
        job.params["flow"],
        job.params["version"],
        len(pinned),
    )
    return {"version": job.params["version"], "moved": moved, "pinned": pinned}


MIGRATION_JOB = runner.JobKind(MIGRATE_SESSIONS, run_migration)
