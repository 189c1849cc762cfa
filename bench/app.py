"""The app under benchmark: the real mentorflow app plus a floor endpoint and /hello.

The floor performs the same SQL statements as ``POST …/steps`` in raw SQL through psycopg 3,
with no validation, so the ratio real / floor shows what the product adds on top of its stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime

import psycopg
from flask import Blueprint, Flask, Response, request
from psycopg_pool import ConnectionPool

from mentorflow.admin.console import ConsoleSessionInterface
from mentorflow.app import create_app

floor = Blueprint("bench", __name__, url_prefix="/bench")
_pools: dict[bool, ConnectionPool] = {}


def pool(*, autocommit: bool = False) -> ConnectionPool:
    """The floor's own psycopg pool (autocommit for single-statement reads)."""
    if autocommit not in _pools:
        url = os.environ["MENTORFLOW_DATABASE_URL"].replace(
            "postgresql+psycopg://", "postgresql://"
        )
        _pools[autocommit] = ConnectionPool(
            url, min_size=1, max_size=4, open=True, kwargs={"autocommit": autocommit}
        )
    return _pools[autocommit]


@floor.get("/hello")
def hello() -> Response:
    return Response('{"hello": "world"}', mimetype="application/json")


@floor.get("/orgs/<org>/sessions/<session_id>")
def floor_session(org: str, session_id: str) -> Response:
    """The conditional GET in raw SQL: one autocommit SELECT, then 304 when the ETag matches."""
    token = request.headers["Authorization"].removeprefix("Bearer ")
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    with pool(autocommit=True).connection() as conn:
        row = conn.execute(
            "SELECT s.version, s.token_hash FROM learner_sessions s JOIN orgs o ON "
            "o.id = s.org_id WHERE s.id = %s AND o.slug = %s",
            (session_id, org),
        ).fetchone()
    version, stored_hash = row
    assert stored_hash == token_hash
    etag = f'"{version}"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers={"ETag": etag})
    return Response(
        json.dumps({"session": {"id": session_id, "version": version}}),
        mimetype="application/json",
        headers={"ETag": etag},
    )


@floor.post("/orgs/<org>/sessions/<session_id>/steps")
def floor_step(org: str, session_id: str) -> Response:
    body = request.get_json()
    token = request.headers["Authorization"].removeprefix("Bearer ")
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    key = request.headers.get("Idempotency-Key")
    now = datetime.now(UTC).replace(tzinfo=None)
    event_id = uuid.uuid4()
    with pool().connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM orgs WHERE slug = %s", (org,))
        org_id = cur.fetchone()[0]
        cur.execute(
            "SELECT version, current_step_id, answers, token_hash FROM learner_sessions "
            "WHERE id = %s AND org_id = %s FOR UPDATE",
            (session_id, org_id),
        )
        version, current, answers, stored_hash = cur.fetchone()
        assert stored_hash == token_hash
        cur.execute(
            "SELECT status_code FROM idempotency_keys WHERE org_id = %s AND "
            "session_id = %s AND key = %s",
            (org_id, session_id, key),
        )
        answers[body["step_id"]] = body.get("answer")
        cur.execute(
            "UPDATE learner_sessions SET answers = %s, current_step_id = %s, version = %s, "
            "updated_at = %s, last_activity_at = %s WHERE id = %s",
            (json.dumps(answers), current, version + 1, now, now, session_id),
        )
        cur.execute(
            "INSERT INTO step_events (session_id, seq, org_id, step_id, answer, from_step_id, "
            "to_step_id, kind, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'answered', %s)",
            (
                session_id,
                version,
                org_id,
                body["step_id"],
                json.dumps(body.get("answer")),
                current,
                current,
                now,
            ),
        )
        cur.execute(
            "INSERT INTO outbox_events (id, org_id, session_id, type, payload, created_at) "
            "VALUES (%s, %s, %s, 'step.completed', %s, %s)",
            (event_id, org_id, session_id, json.dumps({"session_id": session_id}), now),
        )
        cur.execute(
            "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at) "
            "VALUES (%s, 'posthog', 'delivered', 0, %s), (%s, 'memory', 'delivered', 0, %s)",
            (event_id, now, event_id, now),
        )
        response = json.dumps({"session": {"id": session_id, "version": version + 1}})
        cur.execute(
            "INSERT INTO idempotency_keys (org_id, session_id, key, request_hash, status_code, "
            "response_body, created_at) VALUES (%s, %s, %s, %s, 200, %s, %s)",
            (org_id, session_id, key, "x", response, now),
        )
    return Response(response, mimetype="application/json")


class _NoSessionUnderBench(ConsoleSessionInterface):
    cookieless_prefixes = (*ConsoleSessionInterface.cookieless_prefixes, f"{floor.url_prefix}/")


def create_bench_app() -> Flask:
    """Return the production app with the floor and /hello mounted."""
    from mentorflow.admin.console import csrf

    app = create_app()
    # Like the learner API, the floor authenticates with a bearer token, not a cookie: no CSRF
    # check and no cookie session, as for /v1/.
    csrf.exempt(floor)
    app.session_interface = _NoSessionUnderBench()
    app.register_blueprint(floor)
    return app


__all__ = ["create_bench_app", "psycopg"]
