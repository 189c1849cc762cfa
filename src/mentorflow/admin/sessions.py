"""The console's session pages: the list, a session's answers, timeline and deliveries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from sqlalchemy.orm import selectinload

from mentorflow.admin.access import current_seat, for_org, requires, seat
from mentorflow.admin.jobs import hand_to_workers
from mentorflow.admin.learners import (
    PAGE_SIZE,
    LearnerView,
    day_range,
    org_flows,
    read_days,
    requested_page,
    version_of,
)
from mentorflow.delivery import services as delivery
from mentorflow.flows import erasure
from mentorflow.flows.analytics import (
    answers_by_step,
    build_timeline,
    seconds_per_step,
    session_progress,
)
from mentorflow.flows.authoring import compiled_flow, flow_versions
from mentorflow.flows.conversations import session_messages
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession, SessionStatus, StepEvent
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent
from mentorflow.tenants import audit
from mentorflow.tenants.models import Role
from mentorflow.worker import tasks


@dataclass
class SessionFilters:
    """The session list's filters, read from the query string."""

    flow: Flow | None = None
    version: FlowVersion | None = None
    status: SessionStatus | None = None
    since: date | None = None
    until: date | None = None
    email: str = ""

    @classmethod
    def from_request(cls) -> SessionFilters:
        """Read the filters; another org's flow or a version it lacks is a 404."""
        flow_id = request.args.get("flow", type=int)
        flow = for_org(Flow, flow_id) if flow_id else None
        version = version_of(flow, request.args.get("version", type=int)) if flow else None
        status = None
        if request.args.get("status"):
            try:
                status = SessionStatus(request.args["status"])
            except ValueError:
                flash(
                    f"Unknown status “{request.args['status']}”; showing every status.", "warning"
                )
        since, until = read_days(None)
        email = (request.args.get("email") or "").strip()
        return cls(flow, version, status, since, until, email)

    def apply(self, stmt: sa.Select) -> sa.Select:
        """Return ``stmt`` narrowed by these filters."""
        if self.flow is not None:
            stmt = stmt.where(LearnerSession.flow_id == self.flow.id)
        if self.version is not None:
            stmt = stmt.where(LearnerSession.flow_version_id == self.version.id)
        if self.status is not None:
            stmt = stmt.where(LearnerSession.status == self.status)
        start, end = day_range(self.since, self.until)
        if start is not None:
            stmt = stmt.where(LearnerSession.created_at >= start)
        if end is not None:
            stmt = stmt.where(LearnerSession.created_at < end)
        if self.email:
            stmt = stmt.where(
                sa.func.lower(LearnerSession.email).contains(self.email.lower(), autoescape=True)
            )
        return stmt

    def args(self) -> dict[str, Any]:
        """Return the filters as query arguments (for pagination links)."""
        values = {
            "flow": self.flow.id if self.flow else None,
            "version": self.version.number if self.version else None,
            "status": str(self.status) if self.status else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "email": self.email or None,
        }
        return {name: value for name, value in values.items() if value is not None}


class SessionsView(LearnerView):
    """Learner sessions of the current org: filters, answers, timelines, deliveries."""

    # A learner's contact details and answers are personal data: mentors and up only
    # ("see sessions" in the role table); viewers read the aggregates on Analytics.
    def is_visible(self) -> bool:
        found = current_seat()
        return found is not None and found.can(Role.MENTOR)

    @expose("/")
    @requires(Role.MENTOR)
    def index(self) -> Any:
        org = seat().org
        filters = SessionFilters.from_request()
        base = filters.apply(
            sa.select(LearnerSession).where(
                LearnerSession.org_id == org.id, LearnerSession.preview.is_(False)
            )
        )
        total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
        page, pages = requested_page(total)
        sessions = db.session.scalars(
            base.options(
                selectinload(LearnerSession.flow), selectinload(LearnerSession.flow_version)
            )
            .order_by(LearnerSession.created_at.desc(), LearnerSession.id.desc())
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        ).all()
        rows = [
            (session, session_progress(compiled_flow(session.flow_version), session))
            for session in sessions
        ]
        return self.render(
            "console/sessions/index.html",
            rows=rows,
            filters=filters,
            total=total,
            page=page,
            pages=pages,
            page_size=PAGE_SIZE,
            flows=org_flows(org.id),
            versions=flow_versions(filters.flow),
            statuses=list(SessionStatus),
        )

    @expose("/<session_id>")
    @requires(Role.MENTOR)
    def details(self, session_id: str) -> Any:
        session = for_org(LearnerSession, session_id)
        engine = compiled_flow(session.flow_version)
        events = list(
            db.session.scalars(
                sa.select(StepEvent)
                .where(StepEvent.session_id == session.id)
                .order_by(StepEvent.seq)
            ).all()
        )
        timeline = build_timeline(session, events, engine)
        spent = seconds_per_step(timeline)
        answers, other_answers = answers_by_step(session, engine, spent)
        outbox = db.session.scalars(
            sa.select(OutboxEvent)
            .where(OutboxEvent.org_id == session.org_id, OutboxEvent.session_id == session.id)
            .options(selectinload(OutboxEvent.deliveries))
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
        ).all()
        messages = session_messages(session.org_id, [session.id])[session.id]
        by_step: dict[str | None, list[dict[str, Any]]] = {}
        for message in messages:
            by_step.setdefault(message["step_id"], []).append(message)
        shown = {row.step["id"] for row in answers}
        # The conversation beside each step's answer; the rest (no step, a step not listed)
        # below the table. The timeline interleaves moves and messages by time.
        loose = [m for m in messages if m["step_id"] not in shown]
        moves = [("move", entry.event.created_at, entry) for entry in timeline]
        talk = [("message", message["created_at"], message) for message in messages]
        merged = sorted(moves + talk, key=lambda item: item[1])
        return self.render(
            "console/sessions/details.html",
            session=session,
            engine=engine,
            progress=session_progress(engine, session),
            answers=answers,
            other_answers=other_answers,
            timeline=timeline,
            merged_timeline=merged,
            messages_by_step=by_step,
            loose_messages=loose,
            message_count=len(messages),
            outbox=outbox,
            total_seconds=sum(spent.values()),
        )

    @expose("/<session_id>/events/<event_id>/retry", methods=["POST"])
    @requires(Role.MENTOR)
    def retry(self, session_id: str, event_id: str) -> Any:
        session = for_org(LearnerSession, session_id)
        try:
            event_uuid = uuid.UUID(event_id)
        except ValueError:
            abort(404)
        event = db.session.get(OutboxEvent, event_uuid)
        if event is None or event.org_id != session.org_id or event.session_id != session.id:
            abort(404)
        begin_write(db.session)
        count = delivery.retry_deliveries(dead=True, event_id=event_uuid)
        audit.record(
            session.org_id,
            "delivery.retried",
            f"event:{event_uuid}",
            after={"session_id": session.id, "deliveries": count},
        )
        db.session.commit()
        target = self.get_url(".details", session_id=session.id) + f"#event-{event_uuid}"
        if not count:
            flash("Nothing to retry: every delivery of that event has been delivered.", "info")
            return redirect(target)
        deliveries = f"{count} deliver{'y' if count == 1 else 'ies'}"
        try:
            tasks.deliver_due_deliveries.apply_async(retry=False)
        except Exception as exc:  # the broker is down: the periodic sweep delivers anyway
            flash(
                f"Queued {deliveries} again, but the workers could not be woken ({exc}); "
                "the periodic sweep will send them within a minute.",
                "warning",
            )
        else:
            flash(f"Queued {deliveries} again; the workers are on it.", "success")
        return redirect(target)

    @expose("/<session_id>/erase", methods=["POST"])
    @requires(Role.ADMIN)
    def erase(self, session_id: str) -> Any:
        current = seat()
        session = for_org(LearnerSession, session_id)
        if (request.form.get("confirm") or "").strip() != session.id:
            flash("Not erased: type the session id to confirm.", "danger")
            return redirect(self.get_url(".details", session_id=session_id))
        begin_write(db.session)
        job = erasure.request_session_erasure(current.org, session_id, by=current.user.email)
        if job is None:
            abort(404)
        db.session.commit()
        hand_to_workers(
            job, "Erasing the session: this page follows the job and shows its receipt."
        )
        return redirect(url_for("console_jobs.details", job_id=job.id))


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [SessionsView(name="Sessions", endpoint="sessions", url="/admin/sessions")]
