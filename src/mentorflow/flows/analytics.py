"""Learner analytics: step funnels, session timelines, answers by step, durations."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mentorflow.flows.authoring import compiled_flow, flow_versions
from mentorflow.flows.document import takes_answer
from mentorflow.flows.engine import CompiledFlow
from mentorflow.flows.models import (
    EventKind,
    Flow,
    FlowVersion,
    LearnerSession,
    SessionStatus,
    StepEvent,
)
from mentorflow.platform.extensions import db

#: Medians are computed in Python over at most this many step events of a cohort.
TIMING_EVENT_LIMIT = 50_000


def format_elapsed(seconds: float | None) -> str:
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
        if event.kind == EventKind.ANSWERED and step and takes_answer(step["type"]):
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
        key = step.get("key") if takes_answer(step["type"]) else None
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


def sessions_per_flow(org_id: int) -> dict[int, int]:
    """Return how many learner sessions each of an org's flows has, by flow id."""
    return dict(
        db.session.execute(
            sa.select(LearnerSession.flow_id, sa.func.count())
            .where(LearnerSession.org_id == org_id, LearnerSession.preview.is_(False))
            .group_by(LearnerSession.flow_id)
        ).all()
    )


def funnel_steps(flow: Flow, version: FlowVersion | None) -> list[tuple[dict[str, Any], list[int]]]:
    """Return the steps to chart, in flow order, each with the versions it is limited to.

    One version: its steps. All versions: the newest version's steps, then steps that only
    older versions have, each marked with the version numbers that have it.
    """
    versions = [version] if version is not None else flow_versions(flow)
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
    conditions = [
        LearnerSession.org_id == org_id,
        LearnerSession.flow_id == flow.id,
        LearnerSession.preview.is_(False),
    ]
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
