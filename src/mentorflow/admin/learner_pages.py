"""The console's learner pages: an org's learners, and one learner's sessions and timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from sqlalchemy.orm import selectinload

from mentorflow.admin.access import current_seat, for_org, requires, seat
from mentorflow.admin.jobs import hand_to_workers
from mentorflow.admin.learners import PAGE_SIZE, LearnerView, requested_page
from mentorflow.flows import erasure
from mentorflow.flows.analytics import build_timeline, session_progress
from mentorflow.flows.authoring import compiled_flow
from mentorflow.flows.learner_state import read_state, state_history
from mentorflow.flows.learners import learner_summary
from mentorflow.flows.models import Learner, LearnerSession, StepEvent
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role

#: The most moves a learner's timeline shows (the latest ones).
TIMELINE_LIMIT = 500
#: The latest versions of a learner's state the page lists.
STATE_HISTORY_LIMIT = 20


@dataclass
class LearnerMove:
    """One move of one of the learner's sessions, for the learner's timeline."""

    at: datetime
    session: LearnerSession
    entry: Any  # analytics.TimelineEntry


class LearnersView(LearnerView):
    """The org's learners (by the org's own user id) and each one's sessions across flows."""

    # Personal data, as on the session pages: mentors and up.
    def is_visible(self) -> bool:
        found = current_seat()
        return found is not None and found.can(Role.MENTOR)

    @expose("/")
    @requires(Role.MENTOR)
    def index(self) -> Any:
        org = seat().org
        search = (request.args.get("q") or "").strip()
        base = sa.select(Learner).where(Learner.org_id == org.id)
        if search:
            base = base.where(Learner.external_user_id.contains(search, autoescape=True))
        total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
        page, pages = requested_page(total)
        learners = db.session.scalars(
            base.order_by(Learner.last_active_at.desc(), Learner.id.desc())
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        ).all()
        return self.render(
            "console/learners/index.html",
            rows=[(learner, learner_summary(learner)) for learner in learners],
            search=search,
            total=total,
            page=page,
            pages=pages,
            page_size=PAGE_SIZE,
        )

    @expose("/<int:learner_id>")
    @requires(Role.MENTOR)
    def details(self, learner_id: int) -> Any:
        learner = for_org(Learner, learner_id)
        sessions = db.session.scalars(
            sa.select(LearnerSession)
            .where(LearnerSession.org_id == learner.org_id, LearnerSession.learner_id == learner.id)
            .options(selectinload(LearnerSession.flow), selectinload(LearnerSession.flow_version))
            .order_by(LearnerSession.updated_at.desc(), LearnerSession.id.desc())
        ).all()
        by_id = {session.id: session for session in sessions}
        events = db.session.scalars(
            sa.select(StepEvent)
            .where(StepEvent.org_id == learner.org_id, StepEvent.session_id.in_(list(by_id)))
            .order_by(StepEvent.created_at.desc(), StepEvent.seq.desc())
            .limit(TIMELINE_LIMIT)
        ).all()
        moves: list[LearnerMove] = []
        for session in sessions:
            own = sorted((e for e in events if e.session_id == session.id), key=lambda e: e.seq)
            engine = compiled_flow(session.flow_version)
            for entry in build_timeline(session, own, engine):
                moves.append(LearnerMove(entry.event.created_at, session, entry))
        moves.sort(key=lambda move: move.at, reverse=True)
        rows = [
            (session, session_progress(compiled_flow(session.flow_version), session))
            for session in sessions
        ]
        return self.render(
            "console/learners/details.html",
            learner=learner,
            summary=learner_summary(learner),
            rows=rows,
            moves=moves,
            timeline_limit=TIMELINE_LIMIT,
            state=read_state(learner.org_id, learner.id),
            state_history=state_history(learner, STATE_HISTORY_LIMIT),
            state_history_limit=STATE_HISTORY_LIMIT,
        )

    @expose("/<int:learner_id>/erase", methods=["POST"])
    @requires(Role.ADMIN)
    def erase(self, learner_id: int) -> Any:
        current = seat()
        learner = for_org(Learner, learner_id)
        ext = learner.external_user_id
        if (request.form.get("confirm") or "").strip() != ext:
            flash(f"Not erased: type {ext} to confirm.", "danger")
            return redirect(self.get_url(".details", learner_id=learner_id))
        begin_write(db.session)
        job = erasure.request_learner_erasure(current.org, ext, by=current.user.email)
        if job is None:
            abort(404)
        db.session.commit()
        hand_to_workers(job, f"Erasing {ext}: this page follows the job and shows its receipt.")
        return redirect(url_for("console_jobs.details", job_id=job.id))


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [LearnersView(name="Learners", endpoint="learner_pages", url="/admin/learners")]
