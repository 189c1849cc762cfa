"""A learner's own state (read, replace, merge-patch), their live stream, and session claims."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import marshmallow as ma
from flask import Response, current_app, request
from flask.views import MethodView
from marshmallow import fields

from mentorflow.flows import claim as claims
from mentorflow.flows import examples as ex
from mentorflow.flows import learner_sessions, learner_state, learners
from mentorflow.flows.api import SESSION_ID, STATE_HEADERS, _etag_matches
from mentorflow.flows.learner_state import STATE_KEY_PREFIX, StateVersion
from mentorflow.flows.live import follow, sse
from mentorflow.flows.models import LearnerSession, SessionStatus
from mentorflow.flows.schemas import SessionSchema
from mentorflow.platform.db import begin_write
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.extensions import db
from mentorflow.platform.openapi import (
    ProblemSchema,
    problem,
    problem_example,
    problems,
    security,
)
from mentorflow.platform.push import current_hub
from mentorflow.tenants.audit import current_actor
from mentorflow.tenants.credentials import Credential, CredentialKind, credential_is_live, require
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "learner_state",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="A learner's own state document, the same on every device (versioned; "
    "writes name the version they read), the learner's live stream, and claiming an "
    "anonymous session for a learner who signed in.",
)
scope_blueprint_to_org(blp)

STATE_USERS = (CredentialKind.SECRET, CredentialKind.LEARNER)
MERGE_PATCH = "application/merge-patch+json"
EVENT_STREAM = "text/event-stream"
#: The most sessions a learner's stream follows (the most recently updated).
STREAM_SESSIONS = 100

STATE_EXAMPLE = {"state": {"persona": "artist", "theme": "dark", "onboarded": True}, "version": 3}
STATE_ETAG = {
    "description": 'The state\'s version, quoted (`"3"`): send it as If-Match when writing and '
    "as If-None-Match when refreshing.",
    "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
}
IF_MATCH = {
    "in": "header",
    "name": "If-Match",
    "required": True,
    "description": 'The version the client read, as the ETag (`"3"`; `"0"` for a learner never '
    "written; a bare number is accepted too; `*` writes whatever the version). Without it: "
    "428. Another version: 412 with the current state in the body.",
    "schema": {"type": "string"},
    "example": '"3"',
}
IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "description": "The ETag the client holds: a 304 with no body when it is still current.",
    "schema": {"type": "string"},
}
SESSION_TOKEN_HEADER = {
    "in": "header",
    "name": "X-Session-Token",
    "required": True,
    "description": "The anonymous session's own token (`st_…`, from startSession), proving "
    "the caller holds that session.",
    "schema": {"type": "string"},
    "example": "st_3Jd8kq0Qm1xZr7Ybc2x9",
}


class LearnerStateSchema(ma.Schema):
    state = fields.Dict(
        required=True,
        metadata={
            "description": "The learner's state: any JSON object, at most 64 KB as compact "
            "JSON (`{}` for a learner never written)."
        },
    )
    version = fields.Integer(
        required=True,
        metadata={"description": "Goes up by one with every change; 0 before the first."},
    )


class PutLearnerStateSchema(ma.Schema):
    state = fields.Dict(
        required=True,
        metadata={"description": "The new state, replacing the old: a JSON object ≤ 64 KB."},
    )


class MergePatchSchema(ma.Schema):
    """A JSON Merge Patch (RFC 7396): members set (objects merge), `null` removes a member."""

    class Meta:
        unknown = ma.INCLUDE


class StateConflictSchema(ProblemSchema, LearnerStateSchema):
    """A 412 problem carrying the learner's current state and version, to merge and retry."""


class ClaimedSessionSchema(ma.Schema):
    session = fields.Nested(SessionSchema, required=True)


STATE_CONFLICT_EXAMPLE = {
    **problem_example(
        412,
        problem="version-mismatch",
        detail="The state is at version 4; If-Match did not match.",
    ),
    "state": {"persona": "artist", "theme": "light"},
    "version": 4,
}


def _version_from(header: str) -> int | str | None:
    """Return the version an If-Match names, None for ``*``, or "bad"."""
    value = header.strip()
    if value == "*":
        return None
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    return int(value) if value.isdigit() and len(value) < 18 else "bad"


def _learner_id_for(ext: str, credential: Credential) -> int | None:
    """Return the URL's learner's id (None: not seen yet); 404 for another learner's token."""
    if credential.learner is not None:
        if credential.learner.external_user_id != ext:
            abort(404, message=f"No learner '{ext}'.")
        return credential.learner.learner_id
    problem_text = learners.external_user_id_problem(ext)
    if problem_text:
        abort(422, errors={"ext": [problem_text]})
    found = learners.find_learner(current_org.id, ext)
    return found.id if found else None


def _state_response(current: StateVersion) -> Response:
    response = current_app.response_class(
        current_app.json.dumps(current.body()), mimetype="application/json"
    )
    response.headers["ETag"] = f'"{current.version}"'
    return response


def _write(ext: str, **change: Any) -> Response:
    credential = require(*STATE_USERS)
    _learner_id_for(ext, credential)
    header = request.headers.get("If-Match")
    if header is None:
        abort(
            428,
            message='Send If-Match with the state\'s ETag you read ("0" for a new learner).',
        )
    if_match = _version_from(header)
    if if_match == "bad":
        abort(422, errors={"headers.If-Match": ['must be a version ETag like "3", or *']})
    begin_write(db.session)
    try:
        current, _ = learner_state.write_state(
            current_org.id, ext, if_match=if_match, by=current_actor(), **change
        )  # type: ignore[arg-type]
    except learner_state.VersionMismatch as exc:
        db.session.rollback()
        abort(
            412,
            problem="version-mismatch",
            message=str(exc),
            extra=exc.current.body(),
            headers={"ETag": f'"{exc.current.version}"'},
        )
    except learner_state.StateTooLarge as exc:
        db.session.rollback()
        abort(413, message=f"The state is too large: {exc}.")
    except learner_state.StateNotAnObject as exc:
        db.session.rollback()
        abort(422, errors={"state": [str(exc)]})
    db.session.commit()
    return _state_response(current)


def _version_checked_write(view: Callable[..., Any]) -> Callable[..., Any]:
    """Document the problems of a write that must name the version it read (If-Match)."""
    view = problems(blp, 400, 401, 403, 404, 413, 415, 422, 429)(view)
    view = problem(
        blp,
        428,
        "No If-Match: writes must name the version they read.",
        examples={
            "no_if_match": problem_example(
                428, detail='Send If-Match with the state\'s ETag you read ("0" for a new learner).'
            )
        },
    )(view)
    return problem(
        blp,
        412,
        "If-Match names another version (`version-mismatch`): the body carries the current "
        "`state` and `version` to merge with and retry.",
        schema=StateConflictSchema,
        examples={"version_mismatch": STATE_CONFLICT_EXAMPLE},
    )(view)


@blp.route("/learners/<ext>/state")
class LearnerStateResource(MethodView):
    @blp.doc(
        operationId="getLearnerState", security=security(*STATE_USERS), parameters=[IF_NONE_MATCH]
    )
    @blp.response(200, LearnerStateSchema, headers={"ETag": STATE_ETAG}, example=STATE_EXAMPLE)
    @blp.alt_response(
        304,
        description="Not modified: the If-None-Match ETag is still current (no body).",
        headers={"ETag": STATE_ETAG},
    )
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, org: str, ext: str) -> Any:
        """Read a learner's state (a learner never written has `{}` at version 0)."""
        credential = require(*STATE_USERS)
        current = learner_state.read_state(current_org.id, _learner_id_for(ext, credential))
        if _etag_matches(request.if_none_match, str(current.version)):
            return Response(status=304, headers={"ETag": f'"{current.version}"'})
        return _state_response(current)

    @blp.doc(operationId="putLearnerState", security=security(*STATE_USERS), parameters=[IF_MATCH])
    @blp.arguments(PutLearnerStateSchema(), example={"state": STATE_EXAMPLE["state"]})
    @blp.response(
        200,
        LearnerStateSchema,
        description="The new state and version (the same version when nothing changed).",
        headers={"ETag": STATE_ETAG},
        example=STATE_EXAMPLE,
    )
    @_version_checked_write
    def put(self, body: dict[str, Any], org: str, ext: str) -> Any:
        """Replace a learner's state, if it is still at the version the client read."""
        return _write(ext, state=body["state"])

    @blp.doc(
        operationId="patchLearnerState", security=security(*STATE_USERS), parameters=[IF_MATCH]
    )
    @blp.arguments(
        MergePatchSchema(),
        content_type=MERGE_PATCH,
        example={"theme": "dark", "onboarded": None},
    )
    @blp.response(
        200,
        LearnerStateSchema,
        description="The state with the patch applied, and its version.",
        headers={"ETag": STATE_ETAG},
        example=STATE_EXAMPLE,
    )
    @_version_checked_write
    def patch(self, body: dict[str, Any], org: str, ext: str) -> Any:
        """Merge-patch a learner's state (RFC 7396: `null` removes a member)."""
        if request.mimetype != MERGE_PATCH:
            abort(415, message=f"Send the patch as '{MERGE_PATCH}' (RFC 7396).")
        return _write(ext, patch=body)


CLAIMED_EXAMPLE = {"session": {**ex.ANSWERED["session"], "external_user_id": "user-4711"}}


@blp.route("/sessions/<session_id>/claim")
class SessionClaim(MethodView):
    @blp.doc(
        operationId="claimSession",
        security=security(CredentialKind.LEARNER),
        parameters=[SESSION_TOKEN_HEADER],
    )
    @blp.response(
        200,
        ClaimedSessionSchema,
        description="The session, now the learner's (claiming it again changes nothing).",
        headers=STATE_HEADERS,
        example=CLAIMED_EXAMPLE,
    )
    @problem(
        blp,
        409,
        "The session already belongs to another learner.",
        examples={
            "claimed": problem_example(409, detail="This session belongs to another learner.")
        },
    )
    @problems(blp, 401, 403, 404, 422, 429)
    def post(self, org: str, session_id: str) -> Any:
        """Make an anonymous session the signed-in learner's (with the session's own token)."""
        credential = require(CredentialKind.LEARNER)
        assert credential.learner is not None
        token = request.headers.get("X-Session-Token", "").strip()
        if not token:
            abort(
                422,
                errors={"headers.X-Session-Token": ["send the session's own token (st_…)"]},
            )
        if not SESSION_ID.match(session_id):
            abort(404, message=f"No session '{session_id}'.")
        begin_write(db.session)
        try:
            session, _ = claims.claim_session(current_org, session_id, credential.learner, token)
        except claims.SessionNotFound:
            db.session.rollback()
            abort(404, message=f"No session '{session_id}'.")
        except claims.ClaimedByAnother as exc:
            db.session.rollback()
            abort(409, message=str(exc))
        db.session.commit()
        body = {"session": learner_sessions.session_state(current_org, session)["session"]}
        response = current_app.response_class(
            current_app.json.dumps(body), mimetype="application/json"
        )
        response.headers["ETag"] = f'"{session.version}"'
        return response


LEARNER_SSE_EVENT = {
    "type": "object",
    "description": "One event: `event: learner_state` (`data:` the learner's `{state, "
    "version}`) or `event: state` (`data:` one of the learner's sessions as getSession "
    "returns it, `{session, step}`). A first `retry:` and `: heartbeat` comments carry no "
    "data. On the wire:\n\n```\nretry: 2000\n\nevent: learner_state\n"
    'data: {"state": {…}, "version": 3}\n\nevent: state\ndata: {"session": {…}, '
    '"step": {…}}\n\n: heartbeat\n```',
    "properties": {
        "event": {"type": "string", "enum": ["learner_state", "state"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}
LEARNER_STREAM_EXAMPLE = {
    "event": "learner_state",
    "data": '{"state":{"theme":"dark"},"version":3}',
}


@blp.route("/learners/<ext>/stream")
class LearnerStream(MethodView):
    @blp.doc(operationId="streamLearner", security=security(*STATE_USERS))
    @blp.response(
        200,
        LEARNER_SSE_EVENT,
        content_type=EVENT_STREAM,
        description="Server-sent events: at once the learner's state (`learner_state`) and "
        "the state of each of their active sessions (`state`), then one event after every "
        "committed change of the state or of any of their sessions (the "
        f"{STREAM_SESSIONS} most recently updated when the stream opened, and every session "
        "they start or claim while it is open); a `: heartbeat` comment every 15 s. It ends "
        "when the credential stops working or after MENTORFLOW_STREAM_MAX_SECONDS (reconnect: "
        "the current state comes first again).",
        example=LEARNER_STREAM_EXAMPLE,
    )
    @problems(blp, 401, 403, 404, 422, 429, 503)
    def get(self, org: str, ext: str) -> Any:
        """Follow a learner live on every device: their state and their sessions' states."""
        credential = require(*STATE_USERS)
        if not current_app.config["STREAMS"]:
            abort(503, message="Streams are turned off here (MENTORFLOW_STREAMS=0): poll instead.")
        learner_id = _learner_id_for(ext, credential)
        if learner_id is None:
            abort(404, message=f"No learner '{ext}'.")
        hub = current_hub()
        if hub.subscriber_count >= int(current_app.config["STREAM_LIMIT"]):
            abort(503, message="This server holds as many streams as it may: poll instead.")
        subscription = hub.subscribe(learner_ids=[learner_id])
        org_obj, org_id = current_org._get_current_object(), current_org.id
        sent: dict[str, int] = {}

        def state_event() -> str | None:
            current = learner_state.read_state(org_id, learner_id)
            key = f"{STATE_KEY_PREFIX}{learner_id}"
            if sent.get(key, -1) >= current.version:
                return None
            sent[key] = current.version
            return sse(current.body(), event="learner_state")

        def session_event(session_id: str) -> str | None:
            record = learner_sessions.find_session(org_id, session_id)
            if record is None or record.learner_id != learner_id:
                return None
            if sent.get(session_id, 0) >= record.version:
                return None
            sent[session_id] = record.version
            return sse(learner_sessions.session_state(org_obj, record), event="state")

        try:
            first = [state_event() or ""]
            active = learner_sessions.find_sessions(
                LearnerSession.org_id == org_id,
                LearnerSession.learner_id == learner_id,
                LearnerSession.status == SessionStatus.ACTIVE,
                order_by=[LearnerSession.updated_at.desc()],
                limit=STREAM_SESSIONS,
            )
            for record in active:
                sent[record.id] = record.version
                first.append(sse(learner_sessions.session_state(org_obj, record), event="state"))
        except BaseException:
            hub.unsubscribe(subscription)
            raise

        def on_wake(changes: list[Any], resync: bool) -> list[str] | None:
            texts = []
            if resync:
                texts.append(state_event())
                texts.extend(
                    session_event(key) for key in list(sent) if not key.startswith(STATE_KEY_PREFIX)
                )
            for change in changes:
                if change.session_id.startswith(STATE_KEY_PREFIX):
                    texts.append(state_event())
                elif change.version > sent.get(change.session_id, 0):
                    texts.append(session_event(change.session_id))
            return [text for text in texts if text]

        def still_allowed() -> bool:
            return credential_is_live(credential)

        events = follow(subscription, first, on_wake=on_wake, still_allowed=still_allowed)
        response = Response(events, mimetype=EVENT_STREAM)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"
        return response
