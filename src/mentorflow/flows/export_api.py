"""Starting an export through the API: the console's export, for the org's servers."""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields, validate

from mentorflow.flows.export import create_export
from mentorflow.jobs.api import JOB_EXAMPLE, JobSchema
from mentorflow.jobs.runner import JobError, enqueue_after_commit
from mentorflow.platform.db import begin_write
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.extensions import db
from mentorflow.platform.openapi import problems, security
from mentorflow.tenants import audit
from mentorflow.tenants.credentials import CredentialKind, require
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

log = logging.getLogger(__name__)

blp = Blueprint(
    "job_starts",
    __name__,
    url_prefix="/v1/orgs/<org>/jobs",
    description="Starting background jobs (exports) from the org's servers.",
)
scope_blueprint_to_org(blp)


class ExportFiltersSchema(ma.Schema):
    """Which sessions to export. The console's export takes every session of the flow; so do
    these filters, empty: none are defined yet, and an unknown one is a 422 rather than
    silently ignored."""


class StartJobSchema(ma.Schema):
    kind = fields.String(
        required=True,
        validate=validate.OneOf(["export"]),
        metadata={"description": "export: a CSV (and JSON lines) of a flow's sessions"},
    )
    flow = fields.String(
        required=True,
        validate=validate.Length(min=1, max=80),
        metadata={"description": "The slug of the flow to export"},
    )
    filters = fields.Nested(ExportFiltersSchema, load_default=dict)


@blp.route("")
class Jobs(MethodView):
    @blp.doc(operationId="startJob", security=security(CredentialKind.SECRET))
    @blp.arguments(StartJobSchema(), example={"kind": "export", "flow": "rafael-tats"})
    @blp.response(
        202,
        JobSchema,
        description="The job, pending: follow it with getJob, then downloadJobFile.",
        example={
            **JOB_EXAMPLE,
            "status": "pending",
            "progress": 0,
            "result": None,
            "download_url": None,
            "raw_download_url": None,
            "started_at": None,
            "completed_at": None,
            "created_by": "sk_live_ab12…",
        },
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 422, 429)
    def post(self, body: dict[str, Any], org: str) -> Any:
        """Start an export of a flow's sessions (secret key)."""
        require(CredentialKind.SECRET)
        actor = audit.current_actor()
        begin_write(db.session)
        try:
            job = create_export(current_org, body["flow"], by=actor)  # type: ignore[arg-type]
        except JobError:
            db.session.rollback()
            abort(404, message=f"No flow '{body['flow']}'.")
        audit.record(
            current_org.id, "export.started", f"flow:{body['flow']}", after={"job": job.id}
        )
        enqueue_after_commit(job.id)  # a broker outage is logged; the beat's sweep starts it
        db.session.commit()
        return job
