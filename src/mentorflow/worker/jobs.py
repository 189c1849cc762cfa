"""Background jobs: a row in ``jobs`` that a worker claims, runs, and reports progress on."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import current_app

from mentorflow.flows.legacy import LEGACY_IMPORT, run_import_job
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org
from mentorflow.worker.models import Job, JobStatus

log = logging.getLogger(__name__)

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

Progress = Callable[[int, int], None]


class JobError(Exception):
    """A job cannot run; the message is shown to the person who started it."""


def create_job(org: Org, kind: str, params: dict[str, Any], *, by: str | None = None) -> Job:
    """Add a pending job; the caller commits, then enqueues it."""
    if kind not in HANDLERS:
        raise JobError(f"unknown job kind '{kind}'")
    job = Job(
        org_id=org.id,
        kind=kind,
        params=params,
        status=JobStatus.PENDING,
        progress=0,
        created_by=by,
        created_at=utcnow(),
    )
    db.session.add(job)
    db.session.flush()
    return job


def create_export(org: Org, flow_slug: str, *, by: str | None = None) -> Job:
    """Add a pending CSV export of a flow's sessions and answers."""
    flow = db.session.scalars(
        sa.select(Flow).where(Flow.org_id == org.id, Flow.slug == flow_slug)
    ).first()
    if flow is None:
        raise JobError(f"no flow '{flow_slug}' in '{org.slug}'")
    return create_job(org, EXPORT_SESSIONS, {"flow_id": flow.id, "flow": flow.slug}, by=by)


def run(job_id: int) -> None:
    """Claim a pending job, run it, and record completed or failed."""
    begin_write(db.session)
    claimed = db.session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.PENDING)
        .values(status=JobStatus.RUNNING, started_at=utcnow())
    ).rowcount
    db.session.commit()
    if not claimed:
        log.info("job %s is not pending; another worker has it or it is done", job_id)
        return
    job = db.session.get(Job, job_id)
    try:
        result = HANDLERS[job.kind](job, _progress_reporter(job_id))
    except Exception as exc:
        db.session.rollback()
        log.exception("job %s (%s, org %s) failed", job_id, job.kind, job.org_id)
        _finish(
            job_id,
            JobStatus.FAILED,
            error=str(exc) if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}",
        )
        return
    _finish(job_id, JobStatus.COMPLETED, result=result)


def _finish(
    job_id: int, status: JobStatus, *, result: Any = None, error: str | None = None
) -> None:
    begin_write(db.session)
    values: dict[str, Any] = {
        "status": status,
        "completed_at": utcnow(),
        "error": error,
        "result": result,
    }
    if status == JobStatus.COMPLETED:
        values["progress"] = 100
    db.session.execute(sa.update(Job).where(Job.id == job_id).values(**values))
    db.session.commit()


def _progress_reporter(job_id: int) -> Progress:
    def report(done: int, total: int) -> None:
        percent = 100 if total == 0 else min(99, done * 100 // total)
        # Its own connection: the job's session is streaming rows and must not commit.
        with db.engine.begin() as connection:
            connection.execute(sa.update(Job).where(Job.id == job_id).values(progress=percent))

    return report


def export_path(job: Job) -> Path:
    """Return where a job's CSV file lives in the instance folder."""
    return Path(current_app.instance_path) / "exports" / str(job.org_id) / f"job-{job.id}.csv"


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
                if step.get("key") and step["type"] not in ("info", "video"):
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


def export_sessions(job: Job, report: Progress) -> dict[str, Any]:
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
    path = export_path(job)
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


HANDLERS: dict[str, Callable[[Job, Progress], dict[str, Any]]] = {
    EXPORT_SESSIONS: export_sessions,
    LEGACY_IMPORT: run_import_job,
}


def requeue_stale_pending(older_than_seconds: int = 60) -> list[int]:
    """Return ids of jobs still pending after ``older_than_seconds`` (their message was lost)."""
    threshold = utcnow() - timedelta(seconds=older_than_seconds)
    return list(
        db.session.scalars(
            sa.select(Job.id).where(Job.status == JobStatus.PENDING, Job.created_at < threshold)
        ).all()
    )
