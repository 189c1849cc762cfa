"""Offline batches: a queue of answers sent in one request, each taken as the single POST would.

The whole batch is one transaction holding the session's row lock: its items are applied in
order by the single step's own code (``commit_step``, the per-session idempotency keys, the
outbox), so each item's outcome is the one its own POST would have had at that point, and no
other request can interleave. Items before the first conflict or invalid item commit together
at the end; a failure of the database rolls the whole batch back, and a retry with the same
keys then applies it. An item's key is the single POST's ``Idempotency-Key``: an answer sent
alone and then again in a batch (or the other way round) is taken once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import json, request
from flask.views import MethodView

from mentorflow.flows import examples as ex
from mentorflow.flows import learner_sessions
from mentorflow.flows.api import SESSION_READERS, STATE_HEADERS, _json_response, _load_session
from mentorflow.flows.engine import AnswerError
from mentorflow.flows.schemas import StepBatchOutcomeSchema, StepBatchSchema
from mentorflow.platform import idempotency
from mentorflow.platform.errors import Blueprint
from mentorflow.platform.openapi import problem, problems, security
from mentorflow.platform.outbox import WriteTransaction, write_transaction
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "learner_batch",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="Offline batches: answers given without a connection, sent in one request "
    "when it is back; each item is taken exactly as its own POST …/steps would be.",
)
scope_blueprint_to_org(blp)


@blp.before_request
def _session_before_body() -> None:
    # Whose session it is comes before what the body says: another org's or learner's session
    # is a 404 even for a malformed batch, as on every other route (one read, once a batch).
    if request.method == "POST":
        _load_session((request.view_args or {}).get("session_id", ""))


#: The status of an item left unlooked-at after a conflict or an invalid item.
SKIPPED_STATUS = 424


@dataclass
class ItemResult:
    index: int
    outcome: str
    status: int
    errors: dict[str, list[str]] | None = field(default=None)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"index": self.index, "outcome": self.outcome, "status": self.status}
        if self.errors:
            body["errors"] = self.errors
        return body


@blp.route("/sessions/<session_id>/steps/batch")
class SessionStepBatch(MethodView):
    @blp.doc(operationId="submitStepBatch", security=security(*SESSION_READERS))
    @blp.arguments(StepBatchSchema(), example=ex.BATCH_REQUEST)
    @blp.response(
        200,
        StepBatchOutcomeSchema,
        description="Each item's outcome, in order, and the session where the batch left it. "
        "Items after the first `conflict` or `invalid` one are `skipped`; the ones before it "
        "are taken. Retrying the batch with the same keys is safe: taken items come back "
        "`replayed`.",
        headers=STATE_HEADERS,
        examples={
            "all_taken": {"value": ex.BATCH_APPLIED},
            "stopped_at_an_invalid_answer": {"value": ex.BATCH_STOPPED},
        },
    )
    @problem(
        blp,
        422,
        "The batch's shape is invalid (no items or more than 100, an item without "
        "`idempotency_key` or `step_id`, unstorable text): nothing was taken.",
        examples={"missing_key": ex.BATCH_INVALID},
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 429)
    def post(self, batch: dict[str, Any], org: str, session_id: str) -> Any:
        """Answer several steps in order, as sent by a device that was offline."""
        with write_transaction() as transaction:
            return _apply_batch(transaction, session_id, batch["items"])


def _apply_batch(
    transaction: WriteTransaction, session_id: str, items: list[dict[str, Any]]
) -> Any:
    """Apply ``items`` in order until the first conflict or invalid one; the rest are skipped."""
    connection = transaction.connection
    session = _load_session(session_id, transaction)
    # Fingerprinted as the single POST of the same answer, so keys work across both.
    steps_path = request.path.removesuffix("/batch")
    # Every key looked up at once; then the items only write, so their statements are
    # pipelined (PostgreSQL): one round trip for the batch instead of several per item.
    known = idempotency.find_stored_keys(
        current_org.id, session.id, [item["idempotency_key"] for item in items], connection
    )
    results: list[ItemResult] = []
    with _pipelined(connection):
        for index, item in enumerate(items):
            result = _apply_item(transaction, session, steps_path, known, index, item)
            results.append(result)
            if result.outcome in ("conflict", "invalid"):
                results += [
                    ItemResult(later, "skipped", SKIPPED_STATUS)
                    for later in range(index + 1, len(items))
                ]
                break
    body = learner_sessions.session_state(current_org, session)
    body["results"] = [result.as_json() for result in results]
    return _json_response(json.dumps(body), session.version)


def _apply_item(
    transaction: WriteTransaction,
    session: learner_sessions.SessionRecord,
    steps_path: str,
    known: dict[str, idempotency.StoredResponse],
    index: int,
    item: dict[str, Any],
) -> ItemResult:
    """Take one item as ``POST …/steps`` with its ``Idempotency-Key`` would."""
    submission = {"step_id": item["step_id"]}
    if "answer" in item:
        submission["answer"] = item["answer"]
    key = item["idempotency_key"]
    fingerprint = idempotency.request_fingerprint("POST", steps_path, submission)
    stored = known.get(key)
    if stored is not None:
        if stored.request_hash != fingerprint:
            return ItemResult(
                index, "invalid", 422, {"idempotency_key": ["was used with another body"]}
            )
        return ItemResult(index, "replayed", stored.status_code)
    try:
        learner_sessions.commit_step(
            current_org, session, submission["step_id"], submission.get("answer"), transaction
        )
    except learner_sessions.StepConflict as exc:  # SessionClosed too
        return ItemResult(index, "conflict", 409, {"step_id": [exc.detail]})
    except AnswerError as exc:
        # Raised before anything was written for this item.
        return ItemResult(index, "invalid", 422, exc.errors)
    text = json.dumps(learner_sessions.session_state(current_org, session))
    idempotency.store_response(
        current_org.id, session.id, key, fingerprint, 200, text, transaction.connection
    )
    known[key] = idempotency.StoredResponse(fingerprint, 200, "")
    return ItemResult(index, "applied", 200)


def _pipelined(connection: sa.Connection) -> AbstractContextManager[Any]:
    """Pipeline the block's statements on PostgreSQL (psycopg); nothing elsewhere.

    Its statements are sent without waiting for each result; their errors are raised when the
    block ends (and roll the transaction back).
    """
    if connection.dialect.name != "postgresql":
        return nullcontext()
    return connection.connection.driver_connection.pipeline()
