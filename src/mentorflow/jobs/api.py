"""Background job status for API callers."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import send_file, url_for
from flask.views import MethodView
from marshmallow import fields, validate

from mentorflow.jobs.models import Job, JobStatus
from mentorflow.jobs.runner import job_file
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.tenants.credentials import CredentialKind, require
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org, get_for_org

blp = Blueprint(
    "jobs",
    __name__,
    url_prefix="/v1/orgs/<org>/jobs",
    description="Background jobs (exports, imports).",
)
scope_blueprint_to_org(blp)


class JobSchema(ma.Schema):
    id = fields.Integer()
    download_url = fields.Method("_download_url", allow_none=True)
    kind = fields.String()
    status = fields.String(metadata={"enum": ["pending", "running", "completed", "failed"]})
    progress = fields.Integer(metadata={"description": "0 to 100"})
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    created_by = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)

    raw_download_url = fields.Method(
        "_raw_download_url",
        allow_none=True,
        metadata={"description": "JSON lines of the exported values exactly as stored"},
    )

    def _download_url(self, job: Job) -> str | None:
        if job.status != JobStatus.COMPLETED or job_file(job) is None:
            return None
        return url_for("jobs.JobDownload", org=current_org.slug, job_id=job.id)

    def _raw_download_url(self, job: Job) -> str | None:
        if job.status != JobStatus.COMPLETED or job_file(job, ".jsonl") is None:
            return None
        return url_for("jobs.JobDownload", org=current_org.slug, job_id=job.id, format="jsonl")


class DownloadQuerySchema(ma.Schema):
    format = fields.String(
        load_default="csv",
        validate=validate.OneOf(["csv", "jsonl"]),
        metadata={"description": "csv (spreadsheet-safe) or jsonl (values as stored)"},
    )


#: ``format`` of a download: its file suffix (None: the kind's own) and media type.
DOWNLOADS = {"csv": (None, "text/csv"), "jsonl": (".jsonl", "application/jsonl")}


@blp.route("/<int:job_id>")
class JobResource(MethodView):
    @blp.response(200, JobSchema)
    def get(self, org: str, job_id: int) -> Any:
        """Read a background job's status and progress (secret key)."""
        require(CredentialKind.SECRET)
        return get_for_org(Job, job_id, "job")


@blp.route("/<int:job_id>/download")
class JobDownload(MethodView):
    @blp.arguments(DownloadQuerySchema, location="query")
    @blp.response(200, description="The job's CSV or JSON-lines file", content_type="text/csv")
    @blp.alt_response(409, description="The job has not completed")
    @blp.alt_response(410, description="The file was deleted after the export retention")
    def get(self, query: dict[str, Any], org: str, job_id: int) -> Any:
        """Download a completed export job's CSV or JSON-lines file (secret key)."""
        require(CredentialKind.SECRET)
        job = get_for_org(Job, job_id, "job")
        suffix, mimetype = DOWNLOADS[query["format"]]
        path = job_file(job, suffix)
        if job.status == JobStatus.COMPLETED and path is not None and not path.is_file():
            abort(410, message=f"The file of job {job_id} has been deleted; export again.")
        if job.status != JobStatus.COMPLETED or path is None:
            abort(409, message=f"Job {job_id} is {job.status}; its file is not ready.")
        return send_file(
            path,
            mimetype=mimetype,
            as_attachment=True,
            download_name=f"{org}-{job.params.get('flow', 'export')}-{job.id}{path.suffix}",
        )
