"""The learner endpoints: learner tokens, a learner and their sessions, a session's fresh token."""

from __future__ import annotations

import re
from typing import Any

from flask import current_app
from flask.views import MethodView

from mentorflow.flows import learner_examples as lx
from mentorflow.flows import learner_sessions, learners
from mentorflow.flows.learner_schemas import (
    LearnerSchema,
    LearnerSessionPageSchema,
    LearnerSessionsQuerySchema,
    LearnerTokenSchema,
    MintLearnerTokenSchema,
    SessionTokenSchema,
)
from mentorflow.flows.models import Learner, SessionStatus
from mentorflow.platform.db import begin_write
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.extensions import db
from mentorflow.platform.openapi import problems, security
from mentorflow.tenants import audit
from mentorflow.tenants.credentials import CredentialKind, require
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "learners",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="Learners across sessions and devices: the org's backend mints a learner "
    "token for a device; the token reads and advances that learner's sessions.",
)
scope_blueprint_to_org(blp)

SECRET = CredentialKind.SECRET
LEARNER_READERS = (CredentialKind.SECRET, CredentialKind.LEARNER)
SESSION_ID = re.compile(learner_sessions.SESSION_ID_RE)


def _load_learner(ext: str) -> Learner:
    """Return the URL's learner for a secret key or that learner's own token; 404 otherwise."""
    credential = require(*LEARNER_READERS)
    if credential.learner is not None and credential.learner.external_user_id != ext:
        abort(404, message=f"No learner '{ext}'.")
    learner = learners.find_learner(current_org.id, ext)
    if learner is None:
        abort(404, message=f"No learner '{ext}'.")
    return learner


@blp.route("/learners/<ext>/tokens")
class LearnerTokens(MethodView):
    @blp.doc(operationId="mintLearnerToken", security=security(SECRET))
    @blp.arguments(MintLearnerTokenSchema(), example=lx.MINT_REQUEST)
    @blp.response(
        201,
        LearnerTokenSchema,
        description="A new learner token and when it expires; the learner is created if new.",
        example=lx.LEARNER_TOKEN,
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 422, 429)
    def post(self, body: dict[str, Any], org: str, ext: str) -> Any:
        """Mint a learner token for one of the org's users (`ext`: the org's own user id)."""
        require(SECRET)
        config = current_app.config
        ttl = body.get("ttl_seconds", int(config["LEARNER_TOKEN_TTL"]))
        longest = int(config["LEARNER_TOKEN_MAX_TTL"])
        errors: dict[str, list[str]] = {}
        if ttl > longest:
            errors["ttl_seconds"] = [f"must be from 60 to {longest} seconds"]
        problem = learners.external_user_id_problem(ext)
        if problem:
            errors["ext"] = [problem]
        if errors:
            abort(422, errors=errors)
        begin_write(db.session)
        token, expires_at = learners.mint_learner_token(current_org.id, ext, ttl)
        db.session.commit()
        return {"token": token, "expires_at": expires_at}

    @blp.doc(operationId="revokeLearnerTokens", security=security(SECRET))
    @blp.response(204, description="Every token of the learner is revoked (a 401 from now on).")
    @problems(blp, 401, 403, 404, 422, 429)
    def delete(self, org: str, ext: str) -> Any:
        """Revoke every learner token of the learner (a lost device, a sign-out everywhere)."""
        require(SECRET)
        begin_write(db.session)
        learner = _load_learner(ext)
        count = learners.revoke_learner_tokens(learner)
        audit.record(
            current_org.id,
            "learner_tokens.revoked",
            # The learner's row id, not the org's user id: nothing personal stays in the
            # trail once the learner is erased.
            f"learner:#{learner.id}",
            after={"tokens_revoked": count},
        )
        db.session.commit()
        return None


@blp.route("/learners/<ext>")
class LearnerResource(MethodView):
    @blp.doc(operationId="getLearner", security=security(*LEARNER_READERS))
    @blp.response(200, LearnerSchema, example=lx.LEARNER)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, org: str, ext: str) -> Any:
        """Read a learner: when first and last seen, and their sessions by status."""
        return learners.learner_summary(_load_learner(ext))


@blp.route("/learners/<ext>/sessions")
class LearnerSessions(MethodView):
    @blp.doc(operationId="listLearnerSessions", security=security(*LEARNER_READERS))
    @blp.arguments(LearnerSessionsQuerySchema, location="query")
    @blp.response(200, LearnerSessionPageSchema, example=lx.SESSION_PAGE)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, query: dict[str, Any], org: str, ext: str) -> Any:
        """List a learner's sessions across flows, a page at a time."""
        learner = _load_learner(ext)
        status = query.get("status")
        filters = learners.SessionFilter(
            flow=query.get("flow"),
            status=SessionStatus(status) if status else None,
            updated_since=query.get("updated_since"),
        )
        try:
            page, next_cursor = learners.list_sessions(
                learner, filters, query.get("cursor"), query["limit"]
            )
        except learners.InvalidCursor:
            abort(422, errors={"query.cursor": ["is not a cursor this API handed out"]})
        items = [learner_sessions.session_state(current_org, record)["session"] for record in page]
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/sessions/<session_id>/tokens")
class SessionTokens(MethodView):
    @blp.doc(operationId="mintSessionToken", security=security(SECRET))
    @blp.response(
        201,
        SessionTokenSchema,
        description="A fresh session token; the session's previous token stops working.",
        example=lx.SESSION_TOKEN,
    )
    @problems(blp, 401, 403, 404, 422, 429)
    def post(self, org: str, session_id: str) -> Any:
        """Give a session a fresh token (its previous one stops working)."""
        require(SECRET)
        begin_write(db.session)
        found = None
        if SESSION_ID.match(session_id):
            found = learner_sessions.lock_session(current_org.id, session_id)
        if found is None:
            abort(404, message=f"No session '{session_id}'.")
        token = learners.issue_session_token(session_id)
        audit.record(current_org.id, "session_token.replaced", f"session:{session_id}")
        db.session.commit()
        return {"token": token}
