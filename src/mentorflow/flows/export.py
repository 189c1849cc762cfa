"""CSV export of a flow's sessions and answers: a background job kind."""

from __future__ import annotations

import csv
import json
from typing import Any

import sqlalchemy as sa

from mentorflow.flows.document import takes_answer
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession
from mentorflow.jobs import runner
from mentorflow.jobs.models import Job
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

EXPORT_SESSIONS = "export_sessions"
SESSION_COLUMNS = [
    "session_id",
    "flow_version",
    "status",
    "current_step_id",
    "name",
    "email",
    "phone",
    "external_user_id",
    "created_at",
    "updated_at",
    "completed_at",
]
PROGRESS_EVERY = 200


def create_export(org: Org, flow_slug: str, *, by: str | None = None) -> Job:
    """Add a pending CSV export of a flow's sessions and answers."""
    flow = db.session.scalars(
        sa.select(Flow).where(Flow.org_id == org.id, Flow.slug == flow_slug)
    ).first()
    if flow is None:
        raise runner.JobError(f"no flow '{flow_slug}' in '{org.slug}'")
    return runner.create_job(org, EXPORT_SESSIONS, {"flow_id": flow.id, "flow": flow.slug}, by=by)


def answer_columns(flow_id: int) -> list[str]:
    """Return every answer key of every version of a flow, in first-seen order."""
    keys: dict[str, None] = {}
    versions = db.session.scalars(
        sa.select(FlowVersion.definition)
        .where(FlowVersion.flow_id == flow_id)
        .order_by(FlowVersion.number)
    ).all()
    for definition in versions:
        for phase in definition["phases"]:
            for step in phase["steps"]:
                if step.get("key") and takes_answer(step["type"]):
                    keys.setdefault(step["key"], None)
    return list(keys)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def export_sessions(job: Job, report: runner.Progress) -> dict[str, Any]:
    """Write a CSV with one row per session and one column per answer key, across versions."""
    flow_id = job.params["flow_id"]
    columns = answer_columns(flow_id)
    base = sa.select(LearnerSession).where(
        LearnerSession.org_id == job.org_id, LearnerSession.flow_id == flow_id
    )
    total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
    numbers = dict(
        db.session.execute(
            sa.select(FlowVersion.id, FlowVersion.number).where(FlowVersion.flow_id == flow_id)
        ).all()
    )
    path = runner.job_file(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    rows = 0
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SESSION_COLUMNS + columns)
        stream = db.session.scalars(
            base.order_by(LearnerSession.created_at, LearnerSession.id).execution_options(
                yield_per=500
            )
        )
        for session in stream:
            writer.writerow(
                [
                    session.id,
                    numbers.get(session.flow_version_id),
                    str(session.status),
                    session.current_step_id,
                    session.name,
                    session.email,
                    session.phone,
                    session.external_user_id,
                    session.created_at.isoformat(),
                    session.updated_at.isoformat(),
                    session.completed_at.isoformat() if session.completed_at else None,
                ]
                + [_cell(session.answers.get(key)) for key in columns]
            )
            rows += 1
            if rows % PROGRESS_EVERY == 0:
                report(rows, total)
    partial.replace(path)
    return {
        "rows": rows,
        "columns": SESSION_COLUMNS + columns,
        "file": path.name,
        "flow": job.params.get("flow"),
    }


EXPORT_JOB = runner.JobKind(EXPORT_SESSIONS, export_sessions, file_suffix=".csv")
