"""Console pages for learners: sessions, their timelines and deliveries, funnels, exports.

Who sees what: a learner's contact details and answers are personal data, so the session
list, its detail page, delivery retries and CSV exports (which carry every answer) need the
mentor role ("see sessions" in the role table). Viewers read aggregates only: the analytics
funnel and the list of jobs with their status.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, request, send_file
from flask_admin import expose
from sqlalchemy.orm import selectinload

from mentorflow.admin.access import ConsoleView, current_seat, for_org, requires, seat
from mentorflow.delivery import services as delivery
from mentorflow.flows.analytics import (
    TIMING_EVENT_LIMIT,
    answers_by_step,
    build_timeline,
    flow_funnel,
    flow_versions,
    format_elapsed,
    seconds_per_step,
    session_progress,
)
from mentorflow.flows.authoring import compiled_flow
from mentorflow.flows.export import create_export
from mentorflow.flows.models import (
    Flow,
    FlowVersion,
    LearnerSession,
    SessionStatus,
    StepEvent,
)
from mentorflow.jobs.models import Job, JobStatus
from mentorflow.jobs.runner import job_file
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent
from mentorflow.tenants.models import Role
from mentorflow.worker import tasks

PAGE_SIZE = 50
DEFAULT_RANGE_DAYS = 30
#: The job page reloads itself this often (seconds) until the job has finished.
JOB_REFRESH_SECONDS = 2


def parse_day(value: str | None) -> date | None:
    """Return the date of an ``<input type=date>`` value; raise ValueError on anything else."""
    if not value:
        return None
    return date.fromisoformat(value)


def day_range(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Return UTC bounds [start, end) covering the days ``since`` to ``until``, both included."""
    start = datetime.combine(since, time.min, tzinfo=UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC) if until else None
    return start, end


def _read_days(default_days: int | None) -> tuple[date | None, date | None]:
    """Return the ``since``/``until`` query arguments, flashing and defaulting bad ones."""
    today = utcnow().date()
    default_since = today - timedelta(days=default_days - 1) if default_days else None
    default_until = today if default_days else None
    try:
        since = parse_day(request.args.get("since")) or default_since
        until = parse_day(request.args.get("until")) or default_until
    except ValueError:
        flash("Dates are YYYY-MM-DD; showing the default range instead.", "warning")
        return default_since, default_until
    if since and until and since > until:
        flash("The start date was after the end date; they have been swapped.", "info")
        since, until = until, since
    return since, until


def _version_of(flow: Flow, number: int | None) -> FlowVersion | None:
    """Return version ``number`` of ``flow`` (None for all versions); 404 if it has none."""
    if number is None:
        return None
    version = db.session.scalars(
        sa.select(FlowVersion).where(FlowVersion.flow_id == flow.id, FlowVersion.number == number)
    ).first()
    if version is None:
        abort(404)
    return version


def _org_flows(org_id: int) -> list[Flow]:
    return list(
        db.session.scalars(
            sa.select(Flow)
            .where(Flow.org_id == org_id)
            .order_by(Flow.archived_at.is_not(None), Flow.title)
        ).all()
    )


def _page(total: int) -> tuple[int, int]:
    """Return the requested page number, kept within the pages ``total`` rows fill, and those."""
    pages = max(1, -(-total // PAGE_SIZE))
    return min(pages, max(1, request.args.get("page", 1, type=int))), pages


class LearnerView(ConsoleView):
    """A console page about learners: templates get the duration formatter."""

    def render(self, template: str, **kwargs: Any) -> str:
        kwargs.setdefault("duration", format_elapsed)
        return super().render(template, **kwargs)


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
        version = _version_of(flow, request.args.get("version", type=int)) if flow else None
        status = None
        if request.args.get("status"):
            try:
                status = SessionStatus(request.args["status"])
            except ValueError:
                flash(
                    f"Unknown status “{request.args['status']}”; showing every status.", "warning"
                )
        since, until = _read_days(None)
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

    def is_visible(self) -> bool:
        found = current_seat()
        return found is not None and found.can(Role.MENTOR)

    @expose("/")
    @requires(Role.MENTOR)
    def index(self) -> Any:
        org = seat().org
        filters = SessionFilters.from_request()
        base = filters.apply(sa.select(LearnerSession).where(LearnerSession.org_id == org.id))
        total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
        page, pages = _page(total)
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
            flows=_org_flows(org.id),
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
        return self.render(
            "console/sessions/details.html",
            session=session,
            engine=engine,
            progress=session_progress(engine, session),
            answers=answers,
            other_answers=other_answers,
            timeline=timeline,
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
        count = delivery.retry_deliveries(dead=True, event_id=event_uuid)
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


class AnalyticsView(LearnerView):
    """Funnels per flow and version over a date range: aggregates only, for every role."""

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        flows = _org_flows(org.id)
        flow_id = request.args.get("flow", type=int)
        flow = for_org(Flow, flow_id) if flow_id else (flows[0] if flows else None)
        version = _version_of(flow, request.args.get("version", type=int)) if flow else None
        since, until = _read_days(DEFAULT_RANGE_DAYS)
        funnel = None
        if flow is not None:
            funnel = flow_funnel(org.id, flow, version, *day_range(since, until))
        today = utcnow().date()
        quick_ranges = [(days, today - timedelta(days=days - 1), today) for days in (7, 30, 90)]
        return self.render(
            "console/analytics/index.html",
            flows=flows,
            flow=flow,
            version=version,
            versions=flow_versions(flow),
            since=since,
            until=until,
            funnel=funnel,
            quick_ranges=quick_ranges,
            timing_limit=TIMING_EVENT_LIMIT,
        )


class JobsView(LearnerView):
    """The org's background jobs; CSV exports of a flow's sessions start and download here."""

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        base = sa.select(Job).where(Job.org_id == org.id)
        total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
        page, pages = _page(total)
        rows = db.session.scalars(
            base.order_by(Job.created_at.desc(), Job.id.desc())
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        ).all()
        counts = dict(
            db.session.execute(
                sa.select(LearnerSession.flow_id, sa.func.count())
                .where(LearnerSession.org_id == org.id)
                .group_by(LearnerSession.flow_id)
            ).all()
        )
        return self.render(
            "console/jobs/index.html",
            jobs=rows,
            total=total,
            page=page,
            pages=pages,
            flows=_org_flows(org.id),
            counts=counts,
        )

    @expose("/export", methods=["POST"])
    @requires(Role.MENTOR)
    def export(self) -> Any:
        current = seat()
        flow_id = request.form.get("flow_id", type=int)
        if flow_id is None:
            abort(404)
        flow = for_org(Flow, flow_id)
        begin_write(db.session)
        job = create_export(current.org, flow.slug, by=current.user.email)
        db.session.commit()
        try:
            tasks.enqueue_job(job.id)
        except Exception as exc:  # the broker is down: the beat's sweep re-enqueues the job
            flash(
                f"Export of “{flow.title}” saved as job {job.id}, but the workers could not "
                f"be reached ({exc}); it stays pending and the periodic sweep starts it "
                "within a minute or two.",
                "warning",
            )
        else:
            flash(f"Exporting “{flow.title}”: this page follows the job.", "success")
        return redirect(self.get_url(".details", job_id=job.id))

    @expose("/<int:job_id>")
    def details(self, job_id: int) -> Any:
        job = for_org(Job, job_id)
        running = job.status in (JobStatus.PENDING, JobStatus.RUNNING)
        return self.render(
            "console/jobs/details.html",
            job=job,
            running=running,
            refresh=JOB_REFRESH_SECONDS if running else None,
            downloadable=_downloadable(job),
        )

    @expose("/<int:job_id>/download")
    @requires(Role.MENTOR)
    def download(self, job_id: int) -> Any:
        job = for_org(Job, job_id)
        if not _downloadable(job):
            abort(409, description=f"Job {job.id} is {job.status}; it has no file to download.")
        org = seat().org
        return send_file(
            job_file(job),
            mimetype="text/csv",
            as_attachment=True,
            download_name=f"{org.slug}-{job.params.get('flow', 'export')}-{job.id}.csv",
        )


def _downloadable(job: Job) -> bool:
    path = job_file(job)
    return job.status == JobStatus.COMPLETED and path is not None and path.is_file()


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [
        SessionsView(name="Sessions", endpoint="sessions", url="/admin/sessions"),
        AnalyticsView(name="Analytics", endpoint="analytics", url="/admin/analytics"),
        # "jobs" is the API's job-status blueprint.
        JobsView(name="Jobs", endpoint="console_jobs", url="/admin/jobs"),
    ]
