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
from mentorflow.platform.openapi import problem, problem_example, problems, security
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


#: A URL path on this installation, or null while there is no file.
_URL_OR_NULL = {"type": ["string", "null"], "format": "uri-reference"}


class JobSchema(ma.Schema):
    id = fields.Integer(required=True)
    download_url = fields.Method(
        "_download_url",
        required=True,
        metadata={
            **_URL_OR_NULL,
            "description": "downloadJobFile's URL for the CSV once an export completed; else null",
        },
    )
    kind = fields.String(
        required=True,
        metadata={"description": "export_sessions, legacy_import, migrate_sessions or erase"},
    )
    status = fields.String(
        required=True, validate=validate.OneOf([str(status) for status in JobStatus])
    )
    progress = fields.Integer(
        required=True, validate=validate.Range(min=0, max=100), metadata={"description": "%"}
    )
    result = fields.Raw(
        required=True,
        allow_none=True,
        metadata={
            "type": "object",
            "description": "What the job produced once completed (an export: rows, columns, "
            "file, raw_file, flow; a migration: version, moved and pinned, each a list of "
            "{session_id, learner, from_version, from_step_id, to_step_id, reason}; an erasure: "
            "its receipt, what was removed where); null before",
        },
    )
    error = fields.String(required=True, allow_none=True)
    created_by = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    started_at = fields.DateTime(required=True, allow_none=True)
    completed_at = fields.DateTime(required=True, allow_none=True)

    raw_download_url = fields.Method(
        "_raw_download_url",
        required=True,
        metadata={
            **_URL_OR_NULL,
            "description": "downloadJobFile's URL for the JSON lines of the exported values "
            "exactly as stored; else null",
        },
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

JOB_EXAMPLE = {
    "id": 7,
    "download_url": "/v1/orgs/demo/jobs/7/download",
    "raw_download_url": "/v1/orgs/demo/jobs/7/download?format=jsonl",
    "kind": "export_sessions",
    "status": "completed",
    "progress": 100,
    "result": {
        "rows": 42,
        "columns": ["session_id", "status", "booking-status"],
        "file": "export-7.csv",
        "raw_file": "export-7.jsonl",
        "flow": "rafael-tats",
    },
    "error": None,
    "created_by": "owner@example.com",
    "created_at": "2026-11-30T10:00:00+00:00",
    "started_at": "2026-11-30T10:00:01+00:00",
    "completed_at": "2026-11-30T10:00:03+00:00",
}
CSV_EXAMPLE = "session_id,status,booking-status\r\n3f0e6c2d8b41,completed,booked-1-month\r\n"
JSONL_EXAMPLE = '{"session_id": "3f0e6c2d8b41", "status": "completed"}\n'


@blp.route("/<int:job_id>")
class JobResource(MethodView):
    @blp.doc(operationId="getJob", security=security(CredentialKind.SECRET))
    @blp.response(200, JobSchema, example=JOB_EXAMPLE)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, org: str, job_id: int) -> Any:
        """Read a background job's status and progress (secret key)."""
        require(CredentialKind.SECRET)
        return get_for_org(Job, job_id, "job")


@blp.route("/<int:job_id>/download")
class JobDownload(MethodView):
    @blp.doc(operationId="downloadJobFile", security=security(CredentialKind.SECRET))
    @blp.arguments(DownloadQuerySchema, location="query")
    @blp.response(
        200,
        {"type": "string"},
        description="The job's CSV (format=csv) or JSON-lines (format=jsonl) file",
        content_type="text/csv",
        headers={"Content-Disposition": "ContentDisposition"},
        example=CSV_EXAMPLE,
    )
    @blp.alt_response(
        200,
        schema={"type": "string"},
        description="The job's CSV (format=csv) or JSON-lines (format=jsonl) file",
        content_type="application/jsonl",
        example=JSONL_EXAMPLE,
        success=True,
    )
    @problem(
        blp,
        409,
        "The job has not completed (or made no file)",
        examples={"not_ready": problem_example(409)},
    )
    @problem(
        blp,
        410,
        "The file was deleted after the export retention; export again",
        examples={"deleted": problem_example(410)},
    )
    @problems(blp, 401, 403, 404, 422, 429)
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
