"""The console's jobs pages: the org's background jobs, starting and downloading CSV exports."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, request, send_file
from flask_admin import expose

from mentorflow.admin.access import for_org, requires, seat
from mentorflow.admin.learners import PAGE_SIZE, LearnerView, org_flows, requested_page
from mentorflow.delivery.sinks.base import NOT_CONFIGURED
from mentorflow.flows.analytics import sessions_per_flow
from mentorflow.flows.export import RAW_SUFFIX, create_export
from mentorflow.flows.models import Flow
from mentorflow.jobs.models import Job, JobStatus
from mentorflow.jobs.runner import file_expires_at, job_file
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus
from mentorflow.tenants import audit
from mentorflow.tenants.models import Role
from mentorflow.worker import tasks

#: The job page reloads itself this often (seconds) until the job has finished.
JOB_REFRESH_SECONDS = 2
#: ``?format=`` of a download: the CSV, or the JSON-lines file of the answers as stored.
DOWNLOADS = {"csv": (None, "text/csv"), "jsonl": (RAW_SUFFIX, "application/jsonl")}


def hand_to_workers(job: Job, started: str) -> None:
    """Wake the workers for a committed ``job`` and say so (``started``), or say that it waits
    for the periodic sweep when the broker can't be reached."""
    try:
        tasks.enqueue_job(job.id)
    except Exception as exc:  # the broker is down: the beat's sweep re-enqueues the job
        flash(
            f"Saved as job {job.id}, but the workers could not be reached ({exc}); it stays "
            "pending and the periodic sweep starts it within a minute or two.",
            "warning",
        )
    else:
        flash(started, "success")


class JobsView(LearnerView):
    """The org's background jobs; CSV exports of a flow's sessions start and download here."""

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        base = sa.select(Job).where(Job.org_id == org.id)
        total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
        page, pages = requested_page(total)
        rows = db.session.scalars(
            base.order_by(Job.created_at.desc(), Job.id.desc())
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        ).all()
        counts = sessions_per_flow(org.id)
        return self.render(
            "console/jobs/index.html",
            jobs=rows,
            total=total,
            page=page,
            pages=pages,
            flows=org_flows(org.id),
            counts=counts,
        )

    # Every role sees the jobs and their status; the CSV carries every answer, so starting
    # and downloading an export needs the mentor role, like the session pages.
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
        audit.record(current.org.id, "export.started", f"flow:{flow.slug}", after={"job": job.id})
        db.session.commit()
        hand_to_workers(job, f"Exporting “{flow.title}”: this page follows the job.")
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
            raw_downloadable=_downloadable(job, RAW_SUFFIX),
            expires_at=file_expires_at(job, int(current_app.config["EXPORT_RETENTION"])),
            downstream=erasure_downstream(job),
        )

    @expose("/<int:job_id>/download")
    @requires(Role.MENTOR)
    def download(self, job_id: int) -> Any:
        job = for_org(Job, job_id)
        if request.args.get("format", "csv") not in DOWNLOADS:
            abort(404)
        suffix, mimetype = DOWNLOADS[request.args.get("format", "csv")]
        path = job_file(job, suffix)
        if job.status == JobStatus.COMPLETED and path is not None and not path.is_file():
            abort(410, description=f"The file of job {job.id} has been deleted; export again.")
        if not _downloadable(job, suffix):
            abort(409, description=f"Job {job.id} is {job.status}; it has no file to download.")
        org = seat().org
        return send_file(
            path,
            mimetype=mimetype,
            as_attachment=True,
            download_name=f"{org.slug}-{job.params.get('flow', 'export')}-{job.id}{path.suffix}",
        )


def erasure_downstream(job: Job) -> list[dict[str, Any]]:
    """Return, for an erase job, each sink's deliveries of its events by outcome: delivered,
    pending, dead, or "not configured" (a sink that lacks the setting to carry it out)."""
    if job.kind != "erase" or not job.result:
        return []
    ids = [uuid.UUID(event_id) for event_id in job.result.get("events") or []]
    rows = db.session.execute(
        sa.select(Delivery.sink, Delivery.status, Delivery.last_error).where(
            Delivery.event_id.in_(ids)
        )
    ).all()
    by_sink: dict[str, Counter[str]] = {}
    for sink, status, error in rows:
        label = str(status)
        if status == DeliveryStatus.DEAD and (error or "").startswith(NOT_CONFIGURED):
            label = "not configured"
        by_sink.setdefault(sink, Counter())[label] += 1
    return [{"sink": sink, "outcomes": dict(by_sink[sink])} for sink in sorted(by_sink)]


def _downloadable(job: Job, suffix: str | None = None) -> bool:
    path = job_file(job, suffix)
    return job.status == JobStatus.COMPLETED and path is not None and path.is_file()


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    # "jobs" is the API's job-status blueprint.
    return [JobsView(name="Jobs", endpoint="console_jobs", url="/admin/jobs")]
