"""The step commit's locking read: the session's row and an Idempotency-Key's stored
response, in one statement (one round trip)."""

from __future__ import annotations

import sqlalchemy as sa

from mentorflow.delivery import webhooks
from mentorflow.flows.learner_sessions import SessionRecord, record_of_row, session_query
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.db import DriverStatement, utcnow
from mentorflow.platform.idempotency import RETENTION, IdempotencyKey, StoredResponse


def _session_and_stored_query() -> sa.Select:
    """The session's row, locked, with the response stored for an Idempotency-Key if any."""
    stored = sa.and_(
        IdempotencyKey.org_id == LearnerSession.org_id,
        IdempotencyKey.session_id == LearnerSession.id,
        IdempotencyKey.key == sa.bindparam("key"),
        IdempotencyKey.created_at > sa.bindparam("since"),
    )
    return (
        session_query(for_update=False)
        .add_columns(
            webhooks.endpoints_column(LearnerSession.org_id),
            IdempotencyKey.request_hash.label("stored_request_hash"),
            IdempotencyKey.status_code.label("stored_status_code"),
            IdempotencyKey.response_body.label("stored_response_body"),
        )
        .outerjoin(IdempotencyKey, stored)
        .with_for_update(of=LearnerSession)
    )


_LOCK_SESSION_AND_STORED = DriverStatement(_session_and_stored_query())


def lock_session_and_stored(
    org_id: int, session_id: str, key: str, connection: sa.Connection
) -> tuple[SessionRecord | None, StoredResponse | None]:
    """Lock the org's session as :func:`lock_session` and read the response stored for
    Idempotency-Key ``key``, in one statement.

    The stored response is as of the statement's start: one committed by a request that held
    the lock meanwhile is not in it (see ``idempotency.KeyStoredConcurrently``).
    """
    params = {
        "session_id": session_id,
        "org_id": org_id,
        "key": key,
        "since": utcnow() - RETENTION,
    }
    row = _LOCK_SESSION_AND_STORED.first(connection, params)
    if row is None:
        return None, None
    webhooks.prime_endpoints(connection, org_id, row.pop("webhook_endpoints"))
    request_hash = row.pop("stored_request_hash")
    status_code = row.pop("stored_status_code")
    body = row.pop("stored_response_body")
    stored = None if request_hash is None else StoredResponse(request_hash, status_code, body)
    return record_of_row(row), stored
