"""Background job status for API callers."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields

from mentorflow.platform.auth import CredentialKind, require
from mentorflow.platform.tenancy import get_for_org, scope_blueprint_to_org
from mentorflow.worker.models import Job

blp = Blueprint(
    "jobs",
    __name__,
    url_prefix="/v1/orgs/<org>/jobs",
    description="Background jobs (exports, imports).",
)
scope_blueprint_to_org(blp)


class JobSchema(ma.Schema):
    id = fields.Integer()
    kind = fields.String()
    status = fields.String(metadata={"enum": ["pending", "running", "completed", "failed"]})
    progress = fields.Integer(metadata={"description": "0 to 100"})
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    created_by = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)


@blp.route("/<int:job_id>")
class JobResource(MethodView):
    @blp.response(200, JobSchema)
    def get(self, org: str, job_id: int) -> Any:
        """Read a background job's status and progress (secret key)."""
        require(CredentialKind.SECRET)
        return get_for_org(Job, job_id, "job")
