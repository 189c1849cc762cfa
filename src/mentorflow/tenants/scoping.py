"""The API's request edge: authenticate, enter the org named in the URL, answer CORS."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from mentorflow.platform.errors import abort
from mentorflow.platform.extensions import db
from mentorflow.platform.text import text_problem, unstorable_strings
from mentorflow.tenants.cors import add_cors_headers, preflight_response
from mentorflow.tenants.credentials import authenticate, token_owner
from mentorflow.tenants.tenancy import enter_org


def scope_blueprint_to_org(blueprint: Any) -> None:
    """Authenticate every request of ``blueprint`` and enter the org named in its URL."""

    @blueprint.before_request
    def _enter_org_of_url() -> Any:
        slug = (request.view_args or {}).get("org")
        # A 413 before the body is read: a learner-API body is a step, never a file.
        request.max_content_length = int(current_app.config["API_MAX_BODY_BYTES"])
        if request.method == "OPTIONS":
            return preflight_response(slug)
        if request.method in ("GET", "HEAD"):
            # Reads are single statements: no BEGIN/ROLLBACK round trips around them.
            db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        credential = authenticate()
        org = enter_org(slug, credential.org_id)
        if credential.org_id is None and "session_id" not in request.view_args:
            # A session token outside its session's routes: match it to its org now, before
            # anything else of the request is looked at.
            owner = token_owner(credential.token_hash or "")
            if owner is None:
                abort(
                    401,
                    message="The session token is not valid.",
                    headers={"WWW-Authenticate": 'Bearer realm="mentorflow"'},
                )
            if owner[1] != org.id:
                abort(404, message=f"No organization '{slug}'.")
        refuse_non_json_body()
        refuse_unstorable_text()
        return None

    @blueprint.after_request
    def _cors(response: Any) -> Any:
        return add_cors_headers(response, (request.view_args or {}).get("org"))


def refuse_non_json_body() -> None:
    """Answer 415 when a POST, PUT or PATCH sends a body that is not declared JSON.

    A body with no Content-Type or another one would otherwise read as no fields at all and
    come back as a misleading 422. A bodiless POST (every field optional) needs no type.
    """
    if request.method not in ("POST", "PUT", "PATCH") or request.is_json:
        return
    if not request.mimetype and not _has_body():
        return
    sent = request.mimetype or "no Content-Type"
    abort(
        415,
        message=f"The request body must be JSON, sent with 'Content-Type: application/json'; "
        f"got {sent}.",
    )


def _has_body() -> bool:
    if request.content_length:
        return True
    # Chunked (no Content-Length): look at what arrived, within the API's body limit.
    return request.content_length is None and bool(request.get_data(cache=True))


def refuse_unstorable_text() -> None:
    """Answer 422, naming each field, when the query or the JSON body holds unstorable text."""
    errors = {
        f"query.{name}": [problem]
        for name, values in request.args.lists()
        for problem in filter(None, map(text_problem, [name, *values]))
    }
    # JSON can only carry a NUL or a lone surrogate as a \u escape (raw control characters and
    # invalid UTF-8 are not JSON the views accept), so a body without one is not parsed here:
    # the step commit's body is parsed once, by the view's schema.
    if (
        request.method in ("POST", "PUT", "PATCH")
        and request.is_json
        and b"\\u" in request.get_data(cache=True)
    ):
        errors.update(unstorable_strings(request.get_json(silent=True)))
    if errors:
        abort(
            422,
            message="The request holds text that can't be stored: "
            + ", ".join(sorted(errors))
            + ".",
            errors=errors,
        )
