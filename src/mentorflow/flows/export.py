"""CSV export of a flow's sessions and answers: a background job kind.

Each export leaves two files: the CSV, safe to open in a spreadsheet (a text cell that a
spreadsheet would run as a formula is prefixed with ``'``), and beside it a JSON-lines file
with the same sessions, their answers exactly as stored and their conversation (``messages``,
oldest first).
"""

from __future__ import annotations

import contextlib
import csv
import json
from typing import Any

import sqlalchemy as sa

from mentorflow.flows.conversations import session_messages
from mentorflow.flows.document import takes_answer
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession
from mentorflow.jobs import runner
from mentorflow.jobs.models import Job
from mentorflow.platform.extensions import db
from mentorflow.platform.files import make_private_dir, open_private
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
#: Sessions whose messages are read in one query.
MESSAGES_CHUNK = 200
RAW_SUFFIX = ".jsonl"
#: A text cell starting with one of these is a formula to a spreadsheet (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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
        .where(FlowVersion.flow_id == flow_id, FlowVersion.preview.is_(False))
        .order_by(FlowVersion.number)
    ).all()
    for definition in versions:
        for phase in definition["phases"]:
            for step in phase["steps"]:
                if step.get("key") and takes_answer(step["type"]):
                    keys.setdefault(step["key"], None)
    return list(keys)


def neutralize(text: str) -> str:
    """Return ``text`` as a spreadsheet shows it without running it: ``'`` before a formula."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        # A number's text is digits, sign, point and exponent: "-3" is minus three to a
        # spreadsheet, never a formula, so numeric answers stay numbers.
        return value
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    return neutralize(str(value))


def _session_fields(session: LearnerSession, numbers: dict[int, int]) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "flow_version": numbers.get(session.flow_version_id),
        "status": str(session.status),
        "current_step_id": session.current_step_id,
        "name": session.name,
        "email": session.email,
        "phone": session.phone,
        "external_user_id": session.external_user_id,
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
        "completed_at": session.completed_at.isoformat() if session.completed_at else None,
    }


def export_sessions(job: Job, report: runner.Progress) -> dict[str, Any]:
    """Write a CSV with one row per session and one column per answer key, across versions.

    Beside it, a JSON-lines file holds each session with its answers as stored. Both are
    written to partial files and renamed when complete; a failure removes them.
    """
    flow_id = job.params["flow_id"]
    columns = answer_columns(flow_id)
    base = sa.select(LearnerSession).where(
        LearnerSession.org_id == job.org_id,
        LearnerSession.flow_id == flow_id,
        LearnerSession.preview.is_(False),
    )
    total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
    numbers = dict(
        db.session.execute(
            sa.select(FlowVersion.id, FlowVersion.number).where(FlowVersion.flow_id == flow_id)
        ).all()
    )
    path = runner.job_file(job)
    raw_path = runner.job_file(job, RAW_SUFFIX)
    make_private_dir(path.parent)
    partials = [runner.partial_file(path), runner.partial_file(raw_path)]
    rows = messages = 0
    try:
        with (
            open_private(partials[0], "w", newline="", encoding="utf-8") as handle,
            open_private(partials[1], "w", encoding="utf-8") as raw,
        ):
            writer = csv.writer(handle)
            writer.writerow([neutralize(name) for name in SESSION_COLUMNS + columns])
            stream = db.session.scalars(
                base.order_by(LearnerSession.created_at, LearnerSession.id).execution_options(
                    yield_per=500
                )
            )
            # Closed on failure too: PostgreSQL streams the rows through a server-side cursor.
            with contextlib.closing(stream):
                chunk: list[dict[str, Any]] = []
                for session in stream:
                    fields = _session_fields(session, numbers)
                    writer.writerow(
                        [_cell(value) for value in fields.values()]
                        + [_cell(session.answers.get(key)) for key in columns]
                    )
                    chunk.append({**fields, "answers": session.answers})
                    if len(chunk) >= MESSAGES_CHUNK:
                        messages += _write_raw(raw, job.org_id, chunk)
                        chunk = []
                    rows += 1
                    if rows % PROGRESS_EVERY == 0:
                        report(rows, total)
                messages += _write_raw(raw, job.org_id, chunk)
        partials[1].replace(raw_path)
        partials[0].replace(path)
    except Exception as exc:
        for leftover in (*partials, raw_path, path):
            leftover.unlink(missing_ok=True)
        raise runner.JobError(
            f"The export stopped after {rows} of {total} sessions "
            f"({type(exc).__name__}: {exc}); no file was kept."
        ) from exc
    return {
        "rows": rows,
        "messages": messages,
        "columns": SESSION_COLUMNS + columns,
        "file": path.name,
        "raw_file": raw_path.name,
        "flow": job.params.get("flow"),
    }


def _write_raw(raw: Any, org_id: int, chunk: list[dict[str, Any]]) -> int:
    """Write the JSON lines of ``chunk`` (sessions), each with its messages; return how many
    messages were written."""
    found = session_messages(org_id, [line["session_id"] for line in chunk])
    written = 0
    for line in chunk:
        talk = [
            {**message, "created_at": message["created_at"].isoformat()}
            for message in found[line["session_id"]]
        ]
        written += len(talk)
        raw.write(json.dumps({**line, "messages": talk}) + "\n")
    return written


EXPORT_JOB = runner.JobKind(
    EXPORT_SESSIONS, export_sessions, file_suffix=".csv", extra_suffixes=(RAW_SUFFIX,)
)
