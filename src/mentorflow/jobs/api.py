"""Background job status for API callers."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import send_file, url_for
from flask.views import MethodView
from marshmallow import fields

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

    def _download_url(self, job: Job) -> str | None:
        if job.status != JobStatus.COMPLETED or job_file(job) is None:
            return None
        return url_for("jobs.JobDownload", org=current_org.slug, job_id=job.id)


@blp.route("/<int:job_id>")
class JobResource(MethodView):
    @blp.response(200, JobSchema)
    def get(self, org: str, job_id: int) -> Any:
        """Read a background job's status and progress (secret key)."""
        require(CredentialKind.SECRET)
        return get_for_org(Job, job_id, "job")


@blp.route("/<int:job_id>/download")
class JobDownload(MethodView):
    @blp.response(200, description="The job's CSV file", content_type="text/csv")
    @blp.alt_response(409, description="The job has not completed")
    def get(self, org: str, job_id: int) -> Any:
        """Download a completed export job's CSV file (secret key)."""
        require(CredentialKind.SECRET)
        job = get_for_org(Job, job_id, "job")
        path = job_file(job)
        if job.status != JobStatus.COMPLETED or path is None or not path.is_file():
            abort(409, message=f"Job {job_id} is {job.status}; its file is not ready.")
        return send_file(
            path,
            mimetype="text/csv",
            as_attachment=True,
            download_name=f"{org}-{job.params.get('flow', 'export')}-{job.id}.csv",
        )
