"""Console pages for learners: sessions, their timelines and deliveries, funnels, exports.

Who sees what: a learner's contact details and answers are personal data, so the session
list, its detail page, delivery retries and CSV exports (which carry every answer) need the
mentor role ("see sessions" in the role table). Viewers read aggregates only: the analytics
funnel and the list of jobs with their status.
"""

from __future__ import annotations

import json
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, request, send_file
from flask_admin import expose
from sqlalchemy.orm import selectinload

from mentorflow.admin.access import ConsoleView, current_seat, for_org, requires, seat
from mentorflow.delivery import services as delivery
from mentorflow.flows.authoring import compiled_flow
from mentorflow.flows.engine import Flow as CompiledFlow
from mentorflow.flows.export import create_export
from mentorflow.flows.models import (
    EventKind,
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
#: Medians are computed in Python over at most this many step events of a cohort.
TIMING_EVENT_LIMIT = 50_000
#: The job page reloads itself this often (seconds) until the job has finished.
JOB_REFRESH_SECONDS = 2


def format_duration(seconds: float | None) -> str:
    """Return a duration the way a person says it: 42 s, 3 min 5 s, 2 h 10 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def render_answer(step: dict[str, Any], value: Any) -> str:
    """Return an answer as a person reads it: option labels, Yes/No, contact fields."""
    if value is None:
        return "—"
    labels = {option["value"]: option["label"] for option in step.get("options") or ()}
    kind = step.get("type")
    if kind == "single_choice":
        return labels.get(value, str(value))
    if kind == "multi_choice" and isinstance(value, list):
        return ", ".join(labels.get(item, str(item)) for item in value)
    if kind == "boolean" or isinstance(value, bool):
        return "Yes" if value else "No"
    if kind == "contact" and isinstance(value, dict):
        return " · ".join(
            str(value[name]) for name in ("name", "email", "phone") if value.get(name)
        )
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


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


def _flow_versions(flow: Flow | None) -> list[FlowVersion]:
    if flow is None:
        return []
    return list(
        db.session.scalars(
            sa.select(FlowVersion)
            .where(FlowVersion.flow_id == flow.id)
            .order_by(FlowVersion.number.desc())
        ).all()
    )


def _page(total: int) -> tuple[int, int]:
    """Return the requested page number, kept within the pages ``total`` rows fill, and those."""
    pages = max(1, -(-total // PAGE_SIZE))
    return min(pages, max(1, request.args.get("page", 1, type=int))), pages


class LearnerView(ConsoleView):
    """A console page about learners: templates get the duration formatter."""

    def render(self, template: str, **kwargs: Any) -> str:
        kwargs.setdefault("duration", format_duration)
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


def session_progress(engine: CompiledFlow, session: LearnerSession) -> int | None:
    """Return a session's progress in percent, or None if its position is not in its version."""
    try:
        return engine.position(session.answers, session.current_step_id).progress.percent
    except KeyError:  # an imported session parked on a step its version lacks
        return None


@dataclass
class TimelineEntry:
    """One step event with the time the learner spent on the step they left."""

    event: StepEvent
    step: dict[str, Any] | None
    answer: str | None
    seconds: float


def build_timeline(
    session: LearnerSession, events: list[StepEvent], engine: CompiledFlow
) -> list[TimelineEntry]:
    """Return the session's step events with the time between each and the one before."""
    entries = []
    previous = session.created_at
    for event in events:
        step = engine.step(event.step_id) if engine.has_step(event.step_id) else None
        answer = None
        if event.kind == EventKind.ANSWERED and step and step["type"] not in ("info", "video"):
            answer = render_answer(step, event.answer)
        entries.append(
            TimelineEntry(event, step, answer, (event.created_at - previous).total_seconds())
        )
        previous = event.created_at
    return entries


def seconds_per_step(timeline: list[TimelineEntry]) -> dict[str, float]:
    """Return the total time spent on each step: an event closes the step it was made from."""
    totals: dict[str, float] = defaultdict(float)
    for entry in timeline:
        if entry.event.from_step_id:
            totals[entry.event.from_step_id] += entry.seconds
    return dict(totals)


@dataclass
class AnswerRow:
    """A step of the session's path: its prompt, the rendered answer and the time spent."""

    step: dict[str, Any]
    state: str  # answered | viewed | current | skipped
    answer: str
    seconds: float | None


def answers_by_step(
    session: LearnerSession, engine: CompiledFlow, spent: dict[str, float]
) -> tuple[list[AnswerRow], dict[str, Any]]:
    """Return the steps the session answered or passed, in flow order, and answers no step has."""
    try:
        path = set(engine.position(session.answers, session.current_step_id).completed_step_ids)
    except KeyError:
        path = set()
    answers = dict(session.answers or {})
    rows = []
    for step_id in engine.step_ids:
        step = engine.step(step_id)
        key = step.get("key") if step["type"] not in ("info", "video") else None
        if key and key in answers:
            value = answers.pop(key)
            rows.append(
                AnswerRow(
                    step,
                    "answered" if value is not None else "skipped",
                    render_answer(step, value),
                    spent.get(step_id),
                )
            )
        elif step_id == session.current_step_id:
            rows.append(AnswerRow(step, "current", "", spent.get(step_id)))
        elif step_id in path:
            rows.append(
                AnswerRow(step, "viewed" if not key else "skipped", "—", spent.get(step_id))
            )
    return rows, answers


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
            versions=_flow_versions(filters.flow),
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
        begin_write(db.session)
        count = delivery.retry_deliveries(dead=True, event_id=event_uuid)
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


@dataclass
class StepFunnel:
    """One step's row of the funnel."""

    step_id: str
    prompt: str
    phase_title: str
    type: str
    reached: int
    completed: int
    here_now: int
    median_seconds: float | None
    timed_sessions: int
    only_in: list[int] = field(default_factory=list)

    @property
    def drop_off(self) -> float | None:
        """Return the share (percent) of sessions that reached the step and did not answer it."""
        if not self.reached:
            return None
        return 100.0 * (self.reached - self.completed) / self.reached


@dataclass
class FlowFunnel:
    """A flow's funnel over a cohort of sessions (those started in the date range)."""

    started: int
    statuses: dict[str, int]
    steps: list[StepFunnel]
    timing_truncated: bool
    imported: int

    @property
    def completed(self) -> int:
        return self.statuses.get(str(SessionStatus.COMPLETED), 0)

    @property
    def completion_rate(self) -> float | None:
        return 100.0 * self.completed / self.started if self.started else None

    @property
    def biggest_drop_off(self) -> str | None:
        """Return the step that loses the most sessions, if any loses one."""
        losing = [step for step in self.steps if step.reached > step.completed]
        if not losing:
            return None
        return max(losing, key=lambda step: step.reached - step.completed).step_id


def funnel_steps(flow: Flow, version: FlowVersion | None) -> list[tuple[dict[str, Any], list[int]]]:
    """Return the steps to chart, in flow order, each with the versions it is limited to.

    One version: its steps. All versions: the newest version's steps, then steps that only
    older versions have, each marked with the version numbers that have it.
    """
    versions = [version] if version is not None else _flow_versions(flow)
    if not versions:
        return []
    seen: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for each in versions:  # newest first
        engine = compiled_flow(each)
        for step_id in engine.step_ids:
            if step_id in seen:
                seen[step_id][1].append(each.number)
            else:
                seen[step_id] = (engine.step(step_id), [each.number])
    every = {each.number for each in versions}
    return [
        (step, [] if set(numbers) == every or version is not None else sorted(numbers))
        for step, numbers in seen.values()
    ]


def cohort_conditions(
    org_id: int,
    flow: Flow,
    version: FlowVersion | None,
    start: datetime | None,
    end: datetime | None,
) -> list[Any]:
    """Return the WHERE clauses of the sessions a funnel counts."""
    conditions = [LearnerSession.org_id == org_id, LearnerSession.flow_id == flow.id]
    if version is not None:
        conditions.append(LearnerSession.flow_version_id == version.id)
    if start is not None:
        conditions.append(LearnerSession.created_at >= start)
    if end is not None:
        conditions.append(LearnerSession.created_at < end)
    return conditions


def median_step_seconds(
    rows: Iterable[tuple[str, datetime, str | None, datetime]],
) -> dict[str, tuple[float, int]]:
    """Return each step's median time per session and how many sessions it is taken over.

    ``rows`` are (session id, session start, event's from_step_id, event time), ordered by
    session and seq: the time on a step is the gap since the session's previous event (or
    its start), summed per session when the learner came back to the step.
    """
    per_step: dict[str, list[float]] = defaultdict(list)
    spent: dict[str, float] = {}
    current: str | None = None
    previous: datetime | None = None

    def close_session() -> None:
        for step_id, seconds in spent.items():
            per_step[step_id].append(seconds)
        spent.clear()

    for session_id, started_at, from_step_id, created_at in rows:
        if session_id != current:
            close_session()
            current, previous = session_id, started_at
        if from_step_id:
            spent[from_step_id] = (
                spent.get(from_step_id, 0.0) + (created_at - previous).total_seconds()
            )
        previous = created_at
    close_session()
    return {
        step_id: (statistics.median(values), len(values)) for step_id, values in per_step.items()
    }


def flow_funnel(
    org_id: int,
    flow: Flow,
    version: FlowVersion | None,
    start: datetime | None,
    end: datetime | None,
) -> FlowFunnel:
    """Count, per step, the cohort's sessions that reached and completed it, and time on it.

    Reached: the session's history has an event made from, to or at the step, or the step
    is the session's current one. Completed: an ``answered`` event for the step.
    """
    where = cohort_conditions(org_id, flow, version, start, end)
    cohort = sa.select(LearnerSession.id).where(*where)
    statuses = {
        str(status): count
        for status, count in db.session.execute(
            sa.select(LearnerSession.status, sa.func.count())
            .where(*where)
            .group_by(LearnerSession.status)
        ).all()
    }
    started = sum(statuses.values())
    in_cohort = [StepEvent.org_id == org_id, StepEvent.session_id.in_(cohort)]
    touched = sa.union(
        sa.select(
            StepEvent.session_id.label("session_id"), StepEvent.step_id.label("step_id")
        ).where(*in_cohort),
        sa.select(StepEvent.session_id, StepEvent.from_step_id).where(
            *in_cohort, StepEvent.from_step_id.is_not(None)
        ),
        sa.select(StepEvent.session_id, StepEvent.to_step_id).where(
            *in_cohort, StepEvent.to_step_id.is_not(None)
        ),
        sa.select(LearnerSession.id, LearnerSession.current_step_id).where(
            *where, LearnerSession.current_step_id.is_not(None)
        ),
    ).subquery()
    reached = dict(
        db.session.execute(
            sa.select(touched.c.step_id, sa.func.count()).group_by(touched.c.step_id)
        ).all()
    )
    completed = dict(
        db.session.execute(
            sa.select(StepEvent.step_id, sa.func.count(sa.distinct(StepEvent.session_id)))
            .where(*in_cohort, StepEvent.kind == EventKind.ANSWERED)
            .group_by(StepEvent.step_id)
        ).all()
    )
    here_now = dict(
        db.session.execute(
            sa.select(LearnerSession.current_step_id, sa.func.count())
            .where(*where, LearnerSession.status == SessionStatus.ACTIVE)
            .group_by(LearnerSession.current_step_id)
        ).all()
    )
    timing_rows = db.session.execute(
        sa.select(
            StepEvent.session_id,
            LearnerSession.created_at,
            StepEvent.from_step_id,
            StepEvent.created_at,
        )
        .join(LearnerSession, LearnerSession.id == StepEvent.session_id)
        .where(*where, StepEvent.org_id == org_id)
        .order_by(StepEvent.session_id, StepEvent.seq)
        .limit(TIMING_EVENT_LIMIT + 1)
    ).all()
    truncated = len(timing_rows) > TIMING_EVENT_LIMIT
    medians = median_step_seconds(tuple(row) for row in timing_rows[:TIMING_EVENT_LIMIT])
    imported = (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(LearnerSession)
            .where(
                *where,
                LearnerSession.legacy_id.is_not(None),
                ~sa.exists().where(StepEvent.session_id == LearnerSession.id),
            )
        )
        or 0
    )
    steps = []
    for step, only_in in funnel_steps(flow, version):
        median, timed = medians.get(step["id"], (None, 0))
        steps.append(
            StepFunnel(
                step_id=step["id"],
                prompt=step.get("prompt") or step["id"],
                phase_title=step["phase_title"],
                type=step["type"],
                reached=reached.get(step["id"], 0),
                completed=completed.get(step["id"], 0),
                here_now=here_now.get(step["id"], 0),
                median_seconds=median,
                timed_sessions=timed,
                only_in=only_in,
            )
        )
    return FlowFunnel(
        started=started,
        statuses=statuses,
        steps=steps,
        timing_truncated=truncated,
        imported=imported,
    )


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
            versions=_flow_versions(flow),
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
