"""Erasure endpoints (secret key): erase a learner or a session, as a background job."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields

from mentorflow.flows import erasure, learner_sessions
from mentorflow.jobs.api import JOB_EXAMPLE, JobSchema
from mentorflow.jobs.runner import enqueue_after_commit
from mentorflow.platform.db import begin_write
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.extensions import db
from mentorflow.platform.openapi import problems, security
from mentorflow.tenants.credentials import Credential, CredentialKind, require
from mentorflow.tenants.models import ApiKey
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "erasure",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="Erasure: everything of a learner or a session, in every table, file and "
    "sink. An erased session answers 404, as one that never existed.",
)
scope_blueprint_to_org(blp)

SECRET = CredentialKind.SECRET
SESSION_ID = re.compile(learner_sessions.SESSION_ID_RE)


class ErasureJobSchema(ma.Schema):
    job = fields.Nested(
        JobSchema,
        required=True,
        metadata={
            "description": "The erase job: poll getJob; once completed its result is the "
            "receipt (what was removed where, the downstream deletions queued)."
        },
    )


ERASURE_JOB = {
    "job": {
        **JOB_EXAMPLE,
        "download_url": None,
        "raw_download_url": None,
        "kind": "erase",
        "status": "pending",
        "progress": 0,
        "result": None,
        "created_by": "sk_live_4f2a",
        "started_at": None,
        "completed_at": None,
    }
}


def _by(credential: Credential) -> str | None:
    """Return who asked: the secret key's prefix."""
    key = db.session.get(ApiKey, credential.key_id) if credential.key_id else None
    return key.prefix if key else None


@blp.route("/learners/<ext>")
class LearnerErasure(MethodView):
    @blp.doc(operationId="eraseLearner", security=security(SECRET))
    @blp.response(202, ErasureJobSchema, example=ERASURE_JOB)
    @problems(blp, 401, 403, 404, 422, 429)
    def delete(self, org: str, ext: str) -> Any:
        """Erase a learner: every session, answer, message, contact field, event and file of
        theirs; downstream, their memory and analytics person."""
        credential = require(SECRET)
        begin_write(db.session)
        job = erasure.request_learner_erasure(current_org, ext, by=_by(credential))
        if job is None:
            abort(404, message=f"No learner '{ext}'.")
        enqueue_after_commit(job.id)
        db.session.commit()
        return {"job": job}


@blp.route("/sessions/<session_id>")
class SessionErasure(MethodView):
    @blp.doc(operationId="eraseSession", security=security(SECRET))
    @blp.response(202, ErasureJobSchema, example=ERASURE_JOB)
    @problems(blp, 401, 403, 404, 422, 429)
    def delete(self, org: str, session_id: str) -> Any:
        """Erase one session: its answers, messages, contact fields, events and files;
        downstream, its memory container."""
        credential = require(SECRET)
        begin_write(db.session)
        job = None
        if SESSION_ID.match(session_id):
            job = erasure.request_session_erasure(current_org, session_id, by=_by(credential))
        if job is None:
            abort(404, message=f"No session '{session_id}'.")
        enqueue_after_commit(job.id)
        db.session.commit()
        return {"job": job}
