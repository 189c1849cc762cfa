"""The conversation endpoints: a session's messages and a learner's context for AI mentors."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, json, request
from flask.views import MethodView

from mentorflow.flows import api as learner_api
from mentorflow.flows import conversation_examples as cx
from mentorflow.flows import conversations, learner_sessions, learners_api
from mentorflow.flows import examples as ex
from mentorflow.flows.conversation_schemas import (
    ContextQuerySchema,
    LearnerContextSchema,
    MessageCreatedSchema,
    MessagePageSchema,
    MessagesQuerySchema,
    PostMessageSchema,
)
from mentorflow.flows.schemas import SessionContextSchema
from mentorflow.platform import idempotency
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.extensions import db
from mentorflow.platform.openapi import problem, problems, security
from mentorflow.platform.outbox import WriteTransaction, write_transaction
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "conversations",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="Conversations: the messages a learner and their mentor exchange about each "
    "step, and one context of a learner across their sessions for an AI mentor's prompt.",
)
scope_blueprint_to_org(blp)

REPLAYED_HEADER = {"Idempotent-Replayed": "IdempotentReplayed"}


@blp.before_request
def _session_before_body() -> None:
    # Whose session it is comes before what the body says: another org's or learner's session
    # is a 404 even for a malformed message, as on every other route.
    if request.method == "POST" and "session_id" in (request.view_args or {}):
        learner_api._load_session(request.view_args["session_id"])
        # The post writes on its own connection: give this read's back to the pool first.
        db.session.rollback()


@blp.route("/sessions/<session_id>/messages")
class SessionMessages(MethodView):
    @blp.doc(
        operationId="postSessionMessage",
        security=security(*learner_api.SESSION_READERS),
        parameters=["IdempotencyKey"],
    )
    @blp.arguments(PostMessageSchema(), example=cx.POST_MESSAGE)
    @blp.response(
        201,
        MessageCreatedSchema,
        description="The message, numbered after the session's last one.",
        headers=REPLAYED_HEADER,
        example=cx.MESSAGE_CREATED,
    )
    @problem(
        blp,
        409,
        "The session was erased (`session-erased`): it takes no more messages.",
        examples={"session_erased": cx.SESSION_ERASED},
    )
    @problem(
        blp,
        422,
        "A field is invalid (empty or over-long content, an unknown role or step, metadata "
        "over 4 KB, unstorable text), or the Idempotency-Key was used with another body.",
        examples={"content": cx.MESSAGE_INVALID, "idempotency_key_reused": ex.KEY_REUSED},
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 429)
    def post(self, body: dict[str, Any], org: str, session_id: str) -> Any:
        """Add a message to the session's conversation, about a step (the current one by
        default)."""
        key = learner_api._idempotency_key()
        with write_transaction() as transaction:
            return _post_message(transaction, session_id, body, key)

    @blp.doc(operationId="listSessionMessages", security=security(*learner_api.SESSION_READERS))
    @blp.arguments(MessagesQuerySchema(), location="query")
    @blp.response(
        200,
        MessagePageSchema,
        description="The session's messages, oldest first, a page at a time.",
        example=cx.MESSAGE_PAGE,
    )
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, query: dict[str, Any], org: str, session_id: str) -> Any:
        """Read a session's conversation, oldest message first."""
        session = learner_api._load_session(session_id)
        items, next_cursor = conversations.list_messages(
            current_org.id, session.id, query.get("after"), query["limit"]
        )
        return {"items": items, "next_cursor": next_cursor}


def _post_message(
    transaction: WriteTransaction, session_id: str, body: dict[str, Any], key: str | None
) -> Response:
    """Post the message in ``transaction`` (the session's row locked): 201, or the replay."""
    session = learner_api._load_session(session_id, transaction)
    if key is not None:
        fingerprint = idempotency.request_fingerprint("POST", request.path, request.get_json())
        stored = idempotency.find_stored(current_org.id, session_id, key, transaction.connection)
        if stored is not None:
            learner_api._check_same_request(stored, fingerprint)
            return _json(stored.response_body, stored.status_code, Idempotent_Replayed="true")
    if conversations.is_erased(session):
        abort(
            409,
            problem="session-erased",
            message="This session was erased; it takes no more messages.",
        )
    try:
        message = conversations.post_message(
            current_org,
            session,
            role=body["role"],
            content=body["content"],
            step_id=body.get("step_id"),
            metadata=body.get("metadata"),
            transaction=transaction,
        )
    except conversations.UnknownStep as exc:
        abort(422, errors={"step_id": [f"unknown step '{exc.args[0]}' in this session's flow"]})
    text = json.dumps(MessageCreatedSchema().dump({"message": message}))
    if key is not None:
        idempotency.store_response(
            current_org.id, session_id, key, fingerprint, 201, text, transaction.connection
        )
    return _json(text, 201)


def _json(text: str, status: int, **headers: str) -> Response:
    response = current_app.response_class(text, status=status, mimetype="application/json")
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


@blp.route("/learners/<ext>/context")
class LearnerContext(MethodView):
    @blp.doc(operationId="getLearnerContext", security=security(*learners_api.LEARNER_READERS))
    @blp.arguments(ContextQuerySchema(), location="query")
    @blp.response(200, LearnerContextSchema, example=cx.LEARNER_CONTEXT)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, query: dict[str, Any], org: str, ext: str) -> Any:
        """Read what an AI mentor needs about a learner: each flow's answers, completed phases
        and progress, and the latest messages across their sessions (newest first)."""
        learner = learners_api._load_learner(ext)
        return conversations.learner_context(current_org, learner, query["messages"])


@blp.route("/sessions/<session_id>/context")
class SessionContext(MethodView):
    @blp.doc(operationId="getSessionContext", security=security(*learner_api.SESSION_READERS))
    @blp.arguments(ContextQuerySchema(), location="query")
    @blp.response(200, SessionContextSchema, example=cx.SESSION_CONTEXT)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, query: dict[str, Any], org: str, session_id: str) -> Any:
        """Read the session's answers, position and latest messages, for chat or AI callers."""
        session = learner_api._load_session(session_id)
        body = learner_sessions.session_context(session)
        body["messages"], body["messages_truncated"] = conversations.recent_messages(
            current_org.id, session.id, query["messages"]
        )
        return body
