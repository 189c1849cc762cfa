"""Background jobs: a row in ``jobs`` that a worker claims, runs, and reports progress on.

What a job does is its kind's business: each kind (an export, a legacy import) is a
:class:`JobKind` that the app factory registers with :func:`register_job_kinds`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app

from mentorflow.jobs.models import Job, JobStatus
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import call_after_commit
from mentorflow.tenants.models import Org

log = logging.getLogger(__name__)

_KINDS = "mentorflow.job_kinds"
#: A job's file while it is being written.
PARTIAL_SUFFIX = ".partial"
#: A partial file untouched this long is a dead worker's: the purge deletes it.
PARTIAL_ABANDONED_SECONDS = 3600

#: Reports ``(done, total)`` while a job runs.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class JobKind:
    """One kind of background job: its name, what runs it, and the file it leaves, if any."""

    name: str
    run: Callable[[Job, Progress], dict[str, Any]]
    #: The suffix of the file a completed job leaves for download (see :func:`job_file`).
    file_suffix: str | None = None
    #: Suffixes of the other files it leaves beside that one (a raw copy, say).
    extra_suffixes: tuple[str, ...] = ()

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Every suffix of the files a completed job of this kind leaves."""
        return (self.file_suffix, *self.extra_suffixes) if self.file_suffix else ()


def register_job_kinds(app: Flask, *kinds: JobKind) -> None:
    """Make ``kinds`` known to ``app``: jobs of other kinds are refused."""
    registry = app.extensions.setdefault(_KINDS, {})
    for kind in kinds:
        registry[kind.name] = kind


_ENQUEUER = "mentorflow.job_enqueuer"


def register_job_enqueuer(app: Flask, enqueue: Callable[[int], Any]) -> None:
    """Make ``enqueue(job_id)`` the way ``app`` hands a job to the workers."""
    app.extensions[_ENQUEUER] = enqueue


def enqueue_after_commit(job_id: int) -> None:
    """Hand the job to the workers once the current transaction commits (a lost message is
    found by the stale-job sweep)."""
    enqueue = current_app.extensions.get(_ENQUEUER)
    if enqueue is not None:
        call_after_commit(lambda: enqueue(job_id), None)


def job_kind(name: str) -> JobKind | None:
    """Return the registered kind called ``name``."""
    return current_app.extensions.get(_KINDS, {}).get(name)


class JobError(Exception):
    """A job cannot run; the message is shown to the person who started it."""


def create_job(org: Org, kind: str, params: dict[str, Any], *, by: str | None = None) -> Job:
    """Add a pending job; the caller commits, then enqueues it."""
    if job_kind(kind) is None:
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


def run_job(job_id: int) -> None:
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
        kind = job_kind(job.kind)
        if kind is None:
            raise JobError(f"unknown job kind '{job.kind}'")
        result = kind.run(job, _progress_reporter(job_id))
    except Exception as exc:
        db.session.rollback()
        # A failed job leaves nothing to download, not even half a file of personal data.
        _remove_files(job)
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


def job_file(job: Job, suffix: str | None = None) -> Path | None:
    """Return where a job of a file-leaving kind keeps its file (or the one with ``suffix``)."""
    kind = job_kind(job.kind)
    if kind is None or kind.file_suffix is None:
        return None
    suffix = suffix or kind.file_suffix
    if suffix not in kind.suffixes:
        return None
    return exports_folder() / str(job.org_id) / f"job-{job.id}{suffix}"


def job_files(job: Job) -> list[Path]:
    """Return every file a job of its kind leaves when it completes."""
    kind = job_kind(job.kind)
    paths = [job_file(job, suffix) for suffix in (kind.suffixes if kind else ())]
    return [path for path in paths if path is not None]


def exports_folder() -> Path:
    """Return the instance folder's home of job files, one subfolder per org."""
    return Path(current_app.instance_path) / "exports"


def partial_file(path: Path) -> Path:
    """Return where ``path`` is written until it is complete (never offered for download)."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _remove_files(job: Job) -> None:
    for path in job_files(job):
        for candidate in (path, partial_file(path)):
            candidate.unlink(missing_ok=True)


def purge_expired_files(retention_seconds: int, *, now: float | None = None) -> int:
    """Delete job files written more than ``retention_seconds`` ago; return how many."""
    folder = exports_folder()
    if not folder.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for path in folder.glob("*/job-*"):
        limit = retention_seconds
        if path.name.endswith(PARTIAL_SUFFIX):
            # A partial file its writer left untouched for an hour belongs to a dead worker.
            limit = min(limit, PARTIAL_ABANDONED_SECONDS)
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > limit:
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("deleted %d job files past their %d s retention", removed, retention_seconds)
    return removed


def file_expires_at(job: Job, retention_seconds: int) -> datetime | None:
    """Return when a completed job's files are deleted (see :func:`purge_expired_files`)."""
    if job.completed_at is None:
        return None
    return job.completed_at + timedelta(seconds=retention_seconds)


def stale_pending_job_ids(older_than_seconds: int = 60) -> list[int]:
    """Return ids of jobs still pending after ``older_than_seconds`` (their message was lost)."""
    threshold = utcnow() - timedelta(seconds=older_than_seconds)
    return list(
        db.session.scalars(
            sa.select(Job.id).where(Job.status == JobStatus.PENDING, Job.created_at < threshold)
        ).all()
    )
