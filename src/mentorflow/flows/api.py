"""The learner API: published flows and server-side learner sessions."""

from __future__ import annotations

import json as stdlib_json
import re
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, json, request, url_for
from flask.views import MethodView

from mentorflow.flows import authoring, learner_sessions, learners, session_locks
from mentorflow.flows import examples as ex
from mentorflow.flows import learner_examples as lx
from mentorflow.flows.engine import AnswerError
from mentorflow.flows.models import SessionStatus
from mentorflow.flows.schemas import (
    BackSchema,
    PublishedFlowSchema,
    SessionConflictSchema,
    SessionCreatedSchema,
    SessionStateSchema,
    StartSessionSchema,
    StepSubmissionSchema,
)
from mentorflow.platform import idempotency
from mentorflow.platform.db import begin_write
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.extensions import db
from mentorflow.platform.openapi import problem, problems, security
from mentorflow.platform.outbox import WriteTransaction, write_transaction
from mentorflow.tenants.credentials import (
    Credential,
    CredentialKind,
    check_session_token,
    require,
)
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "learner",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="Published flows and learner sessions. Each step is one committed POST; "
    "a refresh is a GET.",
)
scope_blueprint_to_org(blp)

KEYS = (CredentialKind.PUBLISHABLE, CredentialKind.SECRET)
STARTERS = (*KEYS, CredentialKind.LEARNER)
SESSION_READERS = (CredentialKind.SECRET, CredentialKind.SESSION, CredentialKind.LEARNER)
SESSION_ID = re.compile(learner_sessions.SESSION_ID_RE)
MAX_IDEMPOTENCY_KEY = 255

#: The documented headers of a response carrying a session's state.
STATE_HEADERS = {"ETag": "SessionETag"}
REPLAYABLE_HEADERS = {**STATE_HEADERS, "Idempotent-Replayed": "IdempotentReplayed"}
NOT_MODIFIED = "Not modified: the If-None-Match ETag is still current (no body)."


def _etag_matches(header: Any, value: str) -> bool:
    # Accept the quoted form we send ("3") and a bare 3 from hand-written clients.
    return header.star_tag or header.contains(value) or header.contains_raw(value)


def _session_etag(session_version: int) -> str:
    return f'"{session_version}"'


def _load_session(
    session_id: str, transaction: WriteTransaction | None = None
) -> learner_sessions.SessionRecord:
    """Load the URL's session for a secret key, that session's own token or its learner's
    token; 404 otherwise.

    In a ``transaction``, the session's row is locked until it ends.
    """
    return _load_session_and_stored(session_id, transaction, None)[0]


def _load_session_and_stored(
    session_id: str, transaction: WriteTransaction | None, key: str | None
) -> tuple[learner_sessions.SessionRecord, idempotency.StoredResponse | None]:
    """:func:`_load_session`, and with a ``key`` (in a ``transaction``) the response stored
    for it, read by the same statement that locks the row."""
    credential = require(*SESSION_READERS)
    session, stored = None, None
    if SESSION_ID.match(session_id):
        if transaction and key is not None:
            session, stored = session_locks.lock_session_and_stored(
                current_org.id, session_id, key, transaction.connection
            )
        elif transaction:
            session = learner_sessions.lock_session(
                current_org.id, session_id, transaction.connection
            )
        else:
            session = learner_sessions.find_session(current_org.id, session_id)
    if credential.kind == CredentialKind.SESSION:
        check_session_token(
            credential,
            session.token_hash if session else None,
            current_org.id,
            closed_at=learner_sessions.closed_at(session) if session else None,
        )
    if credential.learner is not None and (
        session is None or session.learner_id != credential.learner.learner_id
    ):
        session = None  # another learner's session is as absent as an unknown one
    if session is None:
        abort(404, message=f"No session '{session_id}'.")
    return session, stored


def _in_one_statement(move: Callable[[WriteTransaction], Response]) -> Response:
    """Run a step or back ``move`` in a write transaction whose writes go as one statement.

    Once in a great while a request with the same Idempotency-Key commits while this one waits
    for the lock, unseen by this one's snapshot: the write is rolled back and the move runs
    again in a new transaction, which replays that request's response.
    """
    try:
        with write_transaction(one_statement=True) as transaction:
            return move(transaction)
    except idempotency.KeyStoredConcurrently:
        with write_transaction(one_statement=True) as transaction:
            return move(transaction)


def _state_response(body: dict[str, Any], status: int = 200, **headers: str) -> Response:
    return _json_response(json.dumps(body), body["session"]["version"], status, **headers)


def _json_response(text: str, version: int, status: int = 200, **headers: str) -> Response:
    """Return the session state ``text`` (JSON) with the ETag of session ``version``."""
    response = current_app.response_class(text, status=status, mimetype="application/json")
    response.headers["ETag"] = _session_etag(version)
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def _conflict(exc: learner_sessions.StepConflict, problem: str) -> None:
    state = learner_sessions.session_state(current_org, exc.session)
    abort(409, message=exc.detail, problem=problem, extra=state)


@blp.route("/flows/<flow>")
class PublishedFlow(MethodView):
    @blp.doc(operationId="getPublishedFlow", security=security(*KEYS), parameters=["IfNoneMatch"])
    @blp.response(200, PublishedFlowSchema, headers={"ETag": "FlowETag"}, example=ex.PUBLISHED_FLOW)
    @blp.alt_response(304, description=NOT_MODIFIED, headers={"ETag": "FlowETag"})
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, org: str, flow: str) -> Any:
        """Read a flow's published definition."""
        require(*KEYS)
        found = authoring.find_published(current_org.id, flow)
        if found is None:
            abort(404, message=f"No published flow '{flow}'.")
        flow_obj, version = found
        etag = f'"{version.number}-{version.checksum[:16]}"'
        if _etag_matches(request.if_none_match, etag.strip('"')):
            return Response(status=304, headers={"ETag": etag})
        body = {
            "org": current_org.slug,
            "slug": flow_obj.slug,
            "title": flow_obj.title,
            "version": version.number,
            "checksum": version.checksum,
            "published_at": version.published_at,
            "definition": learner_sessions.public_definition(version.definition),
        }
        return body, {"ETag": etag}


@blp.route("/flows/<flow>/sessions")
class FlowSessions(MethodView):
    @blp.doc(
        operationId="startSession", security=security(*STARTERS), parameters=["IdempotencyKey"]
    )
    @blp.arguments(
        StartSessionSchema(),
        examples={
            "contact": {"value": ex.START_REQUEST},
            "resume_as_learner": {"value": lx.START_AS_LEARNER},
        },
    )
    @blp.response(
        201,
        SessionCreatedSchema,
        description="The new session at its first step, and its token (shown only here).",
        headers={**REPLAYABLE_HEADERS, "Location": "Location"},
        example=ex.SESSION_CREATED,
    )
    @blp.alt_response(
        200,
        schema=SessionStateSchema,
        description="With `resume: true`: the learner's active session of this flow, as it "
        "stands (no new token: the learner token reads and advances it).",
        headers={**REPLAYABLE_HEADERS, "Location": "Location"},
        example=lx.RESUMED,
    )
    @problem(
        blp,
        422,
        "A field is invalid, or the Idempotency-Key was used with another body.",
        examples={"validation": ex.problem_example(422), "idempotency_key_reused": ex.KEY_REUSED},
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 429)
    def post(self, contact: dict[str, Any], org: str, flow: str) -> Any:
        """Start a learner session on the flow's published version, or resume the learner's."""
        credential = require(*STARTERS)
        resume = bool(contact.pop("resume", False))
        learner_ext = _starting_learner(credential, contact, resume)
        key = _idempotency_key()
        begin_write(db.session)
        if key is None:
            return _start_session(org, flow, contact, learner_ext, resume)
        # A learner token's keys are the learner's own; an API key's are that key's.
        scope: idempotency.StartScope
        if credential.learner is not None:
            scope = ("learner_id", credential.learner.learner_id)
        else:
            assert credential.key_id is not None
            scope = ("api_key_id", credential.key_id)
        fingerprint = idempotency.request_fingerprint("POST", request.path, request.get_json())
        replay = _replayed_start(scope, key, fingerprint)
        if replay is not None:
            return replay
        return _start_session(org, flow, contact, learner_ext, resume, (scope, key, fingerprint))


def _starting_learner(credential: Credential, contact: dict[str, Any], resume: bool) -> str | None:
    """Return whose session the start is (their external user id), None for nobody's.

    A learner token starts as its learner; a secret key as the ``external_user_id`` it names.
    A publishable key's session is nobody's: it never resumes, nor lands in a learner's list.
    """
    named = contact.get("external_user_id")
    if credential.learner is not None:
        own = credential.learner.external_user_id
        if named is not None and named != own:
            abort(
                422, errors={"external_user_id": ["must be the learner token's own (or omitted)"]}
            )
        contact["external_user_id"] = own
        return own
    if credential.kind == CredentialKind.SECRET and named:
        return named
    if resume and credential.kind == CredentialKind.PUBLISHABLE:
        abort(403, message="A publishable key never resumes a session; use a learner token.")
    if resume:
        abort(422, errors={"resume": ["needs external_user_id with a secret key"]})
    return None


def _start_session(
    org: str,
    flow: str,
    contact: dict[str, Any],
    learner_ext: str | None,
    resume: bool,
    start_key: tuple[idempotency.StartScope, str, str] | None = None,
) -> Response:
    """Start the session (or with ``resume``, find the learner's active one) and commit;
    under ``start_key`` (scope, key, fingerprint) store the response for retries, or replay a
    concurrent retry's that committed first."""
    found = authoring.find_published(current_org.id, flow)
    if found is None:
        abort(404, message=f"No published flow '{flow}'.")
    # Locked until the commit: this learner's starts run one at a time, so a resume sees the
    # session any start before it made.
    learner = learners.enter_learner(current_org.id, learner_ext) if learner_ext else None
    resumed = None
    if learner is not None and resume:
        resumed = learners.active_session(current_org.id, learner.id, found[0].id)
    if resumed is not None:
        status, body = 200, learner_sessions.session_state(current_org, resumed)
        session_id = resumed.id
    else:
        session, token = learner_sessions.start_session(
            current_org, *found, **contact, learner_id=learner.id if learner else None
        )
        record = learner_sessions.session_record(session)
        status, body = 201, learner_sessions.session_state(current_org, record)
        body["token"] = token
        session_id = session.id
    text = json.dumps(body)
    if start_key is not None:
        scope, key, fingerprint = start_key
        stored = idempotency.store_start(
            current_org.id,
            scope,
            key,
            session_id,
            fingerprint,
            status,
            text,
            current_app.config,
        )
        if not stored:
            # The first attempt committed while this one ran: drop this session, replay that.
            db.session.rollback()
            replay = _replayed_start(scope, key, fingerprint)
            assert replay is not None
            return replay
    db.session.commit()
    location = url_for("learner.LearnerSessionResource", org=org, session_id=session_id)
    return _json_response(text, body["session"]["version"], status, Location=location)


def _replayed_start(scope: idempotency.StartScope, key: str, fingerprint: str) -> Response | None:
    """Return the stored start response for ``key`` (422 if its body differed), or None."""
    try:
        stored = idempotency.find_start(current_org.id, scope, key, current_app.config)
    except idempotency.UnreadableStoredResponse:
        abort(
            422,
            problem="idempotency-key-reused",
            message="The response stored for this Idempotency-Key can no longer be read; "
            "start again with a new key.",
            errors={"headers.Idempotency-Key": ["can no longer be replayed"]},
        )
    if stored is None:
        return None
    _check_same_request(stored, fingerprint)
    created = stdlib_json.loads(stored.response_body)["session"]
    location = url_for(
        "learner.LearnerSessionResource", org=current_org.slug, session_id=created["id"]
    )
    return _json_response(
        stored.response_body,
        created["version"],
        stored.status_code,
        Location=location,
        Idempotent_Replayed="true",
    )


def _idempotency_key() -> str | None:
    """Return the request's Idempotency-Key header, if sent; 422 unless 1 to 255 characters."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        abort(
            422,
            errors={"headers.Idempotency-Key": [f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters"]},
        )
    return key


def _check_same_request(stored: idempotency.StoredResponse, fingerprint: str) -> None:
    """422 naming the key when it was first used with another request."""
    if stored.request_hash != fingerprint:
        abort(
            422,
            problem="idempotency-key-reused",
            message="This Idempotency-Key was used with a different request body.",
            errors={"headers.Idempotency-Key": ["was used with another body"]},
        )


def _replayed_move(session_id: str, key: str, fingerprint: str, connection: Any) -> Response | None:
    """Return the stored step or back response for ``key`` (422 if its body differed)."""
    stored = idempotency.find_stored(current_org.id, session_id, key, connection)
    return None if stored is None else _replay(stored, fingerprint)


def _replay(stored: idempotency.StoredResponse, fingerprint: str) -> Response:
    """Return the stored step or back response (422 if its body differed)."""
    _check_same_request(stored, fingerprint)
    # Our own stored text, which may nest a level or two deeper than a request may.
    version = stdlib_json.loads(stored.response_body)["session"]["version"]
    return _json_response(
        stored.response_body, version, stored.status_code, Idempotent_Replayed="true"
    )


def _check_if_match(version: int) -> None:
    """412 when If-Match names another version of the session."""
    if request.if_match and not _etag_matches(request.if_match, str(version)):
        abort(
            412,
            problem="version-mismatch",
            message=f"The session is at version {version}; If-Match did not match.",
        )


@blp.route("/sessions/<session_id>")
class LearnerSessionResource(MethodView):
    @blp.doc(
        operationId="getSession", security=security(*SESSION_READERS), parameters=["IfNoneMatch"]
    )
    @blp.response(
        200,
        SessionStateSchema,
        headers=STATE_HEADERS,
        examples={"active": {"value": ex.ANSWERED}, "completed": {"value": ex.COMPLETED}},
    )
    @blp.alt_response(304, description=NOT_MODIFIED, headers=STATE_HEADERS)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, org: str, session_id: str) -> Any:
        """Read a session and its current step (what a page refresh shows)."""
        session = _load_session(session_id)
        if _etag_matches(request.if_none_match, str(session.version)):
            return Response(status=304, headers={"ETag": _session_etag(session.version)})
        return _state_response(learner_sessions.session_state(current_org, session))


@blp.route("/sessions/<session_id>/steps")
class SessionSteps(MethodView):
    @blp.doc(
        operationId="submitStep",
        security=security(*SESSION_READERS),
        parameters=["IdempotencyKey", "IfMatch"],
    )
    @blp.arguments(StepSubmissionSchema(), examples=ex.ANSWER_REQUESTS)
    @blp.response(
        200,
        SessionStateSchema,
        description="The session at its next step (`step` is null once completed).",
        headers=REPLAYABLE_HEADERS,
        examples={"next_step": {"value": ex.ANSWERED}, "completed": {"value": ex.COMPLETED}},
    )
    @problem(
        blp,
        409,
        "Not the current step (`step-conflict`) or a completed session (`session-closed`): "
        "re-render from the body's `session` and `step`.",
        schema=SessionConflictSchema,
        examples={"step_conflict": ex.STEP_CONFLICT, "session_closed": ex.SESSION_CLOSED},
    )
    @problem(
        blp,
        412,
        "If-Match names another version of the session (`version-mismatch`).",
        examples={"version_mismatch": ex.VERSION_MISMATCH},
    )
    @problem(
        blp,
        422,
        "The answer does not fit the step, a field is invalid, or the Idempotency-Key was "
        "used with another body.",
        examples={
            "answer": ex.ANSWER_INVALID,
            "contact_field": ex.CONTACT_INVALID,
            "idempotency_key_reused": ex.KEY_REUSED,
        },
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 429)
    def post(self, submission: dict[str, Any], org: str, session_id: str) -> Any:
        """Answer the current step: saves the answer and the new position in one transaction."""
        key = _idempotency_key()
        # The response is built inside the transaction and leaves after its commit.
        return _in_one_statement(
            lambda transaction: _answer_step(transaction, session_id, submission, key)
        )


def _answer_step(
    transaction: WriteTransaction, session_id: str, submission: dict[str, Any], key: str | None
) -> Response:
    """Answer the step in ``transaction``: the new state, or the replayed first response."""
    session, stored = _load_session_and_stored(session_id, transaction, key)
    stale_step = (
        submission["step_id"] != session.current_step_id
        or session.status == SessionStatus.COMPLETED
    )
    if key is not None:
        fingerprint = idempotency.request_fingerprint("POST", request.path, request.get_json())
        if stored is None and stale_step:
            # The lock may have been waited for: a request with this key that held it (the
            # one that made the step stale) committed after the locking read's snapshot.
            stored = idempotency.find_stored(
                current_org.id, session_id, key, transaction.connection
            )
        if stored is not None:
            return _replay(stored, fingerprint)
    # A stale step is a 409 carrying the state to re-render (commit_step raises it), even
    # when If-Match is stale too; 412 is for the right step at another version.
    if not stale_step:
        _check_if_match(session.version)
    try:
        learner_sessions.commit_step(
            current_org, session, submission["step_id"], submission.get("answer"), transaction
        )
    except learner_sessions.SessionClosed as exc:
        _conflict(exc, "session-closed")
    except learner_sessions.StepConflict as exc:
        _conflict(exc, "step-conflict")
    except AnswerError as exc:
        # Raised before anything was written; leaving the block rolls back anyway.
        abort(422, message="The answer is not valid for this step.", errors=exc.errors)
    # Serialized once: the same text is sent and, under a key, stored for replays.
    text = json.dumps(learner_sessions.session_state(current_org, session))
    if key is not None:
        idempotency.store_response(
            current_org.id, session_id, key, fingerprint, 200, text, transaction=transaction
        )
    return _json_response(text, session.version)


@blp.route("/sessions/<session_id>/back")
class SessionBack(MethodView):
    @blp.doc(
        operationId="goBack",
        security=security(*SESSION_READERS),
        parameters=["IdempotencyKey", "IfMatch"],
    )
    @blp.arguments(BackSchema(), example=ex.BACK_REQUEST)
    @blp.response(
        200,
        SessionStateSchema,
        description="The session back at that step, its answers kept.",
        headers=REPLAYABLE_HEADERS,
        example=ex.BACK_RESPONSE,
    )
    @problem(
        blp,
        409,
        "The step was not completed in this session (`step-conflict`), or the session is "
        "completed (`session-closed`): re-render from the body's `session` and `step`.",
        schema=SessionConflictSchema,
        examples={"step_conflict": ex.BACK_CONFLICT, "session_closed": ex.SESSION_CLOSED},
    )
    @problem(
        blp,
        412,
        "If-Match names another version of the session (`version-mismatch`).",
        examples={"version_mismatch": ex.VERSION_MISMATCH},
    )
    @problem(
        blp,
        422,
        "The step is not in the flow, or the Idempotency-Key was used with another body.",
        examples={
            "unknown_step": ex.problem_example(
                422,
                problem="validation",
                detail="The request has invalid fields: step_id.",
                errors={"step_id": ["unknown step 'phase-9-step-9'"]},
            ),
            "idempotency_key_reused": ex.KEY_REUSED,
        },
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 429)
    def post(self, target: dict[str, Any], org: str, session_id: str) -> Any:
        """Go back to a step the session already completed; answers are kept."""
        key = _idempotency_key()
        return _in_one_statement(
            lambda transaction: _go_back(transaction, session_id, target["step_id"], key)
        )


def _go_back(
    transaction: WriteTransaction, session_id: str, step_id: str, key: str | None
) -> Response:
    """Go back in ``transaction``: the new state, or the replayed first response."""
    session = _load_session(session_id, transaction)
    if key is not None:
        fingerprint = idempotency.request_fingerprint("POST", request.path, request.get_json())
        replay = _replayed_move(session_id, key, fingerprint, transaction.connection)
        if replay is not None:
            return replay
    try:
        # A target it can't go back to is a 409 with the state to re-render, as for steps,
        # even when If-Match is stale too.
        learner_sessions.check_back_target(session, step_id)
        _check_if_match(session.version)
        learner_sessions.go_back(current_org, session, step_id, transaction)
    except learner_sessions.SessionClosed as exc:
        _conflict(exc, "session-closed")
    except learner_sessions.StepConflict as exc:
        _conflict(exc, "step-conflict")
    except learner_sessions.UnknownStep:
        abort(422, errors={"step_id": [f"unknown step '{step_id}'"]})
    text = json.dumps(learner_sessions.session_state(current_org, session))
    if key is not None:
        idempotency.store_response(
            current_org.id, session_id, key, fingerprint, 200, text, transaction=transaction
        )
    return _json_response(text, session.version)
