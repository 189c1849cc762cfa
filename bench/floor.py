"""The floor: a bare Flask + psycopg (or sqlite3) app in its own gunicorn, no mentorflow code.

`make bench` serves it beside the product, on the product's database, and compares:

- ``POST /orgs/{org}/sessions/{id}/steps``: the minimal durable step transaction. Lock the
  session's row, check the token and the step, write answers, position and version, insert
  one outbox row, commit. The physical limit of "a step is committed" on this machine.
- ``POST /same/orgs/{org}/sessions/{id}/steps`` (PostgreSQL): the statements the product
  sends for a step, in raw SQL: the locking read that also reads the Idempotency-Key's
  record, one data-modifying statement (session, step event, outbox event, its two
  deliveries, the stored response), commit.
- ``GET /orgs/{org}/sessions/{id}``: the product's SELECT of a session (with its version's
  checksum), the token compared, 304 when If-None-Match holds the version.
- ``GET /hello``: a bare JSON endpoint.

``FLOOR_DATABASE_URL`` is ``postgresql://…`` or ``sqlite:///path``. Like the product's
gunicorn sync workers, each process serves one request at a time, on one connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from flask import Flask, Response, request

app = Flask(__name__)
URL = os.environ.get("FLOOR_DATABASE_URL", "")
SQLITE = URL.startswith("sqlite:///")
_connections: dict[str, Any] = {}
_orgs: dict[str, int] = {}


def connection(kind: str = "write") -> Any:
    """This process's connection (``read``: autocommit), opened once."""
    conn = _connections.get(kind)
    if conn is None:
        if SQLITE:
            conn = sqlite3.connect(URL.removeprefix("sqlite:///"), isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=15000"):
                conn.execute(f"PRAGMA {pragma}")
        else:
            conn = psycopg.connect(URL, autocommit=kind == "read")
        _connections[kind] = conn
    return conn


def org_id(slug: str) -> int:
    """The org's id, looked up once per process (the product caches its orgs too)."""
    if slug not in _orgs:
        row = connection("read").execute("SELECT id FROM orgs WHERE slug = %s", (slug,))
        _orgs[slug] = row.fetchone()[0]
    return _orgs[slug]


def token_hash() -> str:
    token = request.headers["Authorization"].removeprefix("Bearer ")
    return hashlib.sha256(token.encode()).hexdigest()


def next_step(step_id: str) -> str | None:
    """The bench flow's next step: phase-1-step-N → N + 1, none after the 20th."""
    number = int(step_id.rsplit("-", 1)[1])
    return None if number >= 20 else f"phase-1-step-{number + 1}"


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def state(session_id: str, version: int, step: str | None) -> Response:
    body = json.dumps({"session": {"id": session_id, "version": version, "current_step_id": step}})
    return Response(body, mimetype="application/json", headers={"ETag": f'"{version}"'})


@app.get("/hello")
def hello() -> Response:
    return Response('{"hello": "world"}', mimetype="application/json")


@app.post("/orgs/<org>/sessions/<session_id>/steps")
def minimal_step(org: str, session_id: str) -> Response:
    """Lock, check, write the session, insert one outbox row, commit."""
    if SQLITE:
        return minimal_step_sqlite(org, session_id)
    body = request.get_json()
    conn = connection()
    at = now()
    with conn.transaction():
        row = conn.execute(
            "SELECT current_step_id, answers, version, token_hash FROM learner_sessions "
            "WHERE id = %s AND org_id = %s FOR UPDATE",
            (session_id, org_id(org)),
        ).fetchone()
        current, answers, version, stored_hash = row
        if stored_hash != token_hash() or body["step_id"] != current:
            return Response(status=409)
        answers[body["step_id"]] = body.get("answer")
        following = next_step(current)
        conn.execute(
            "UPDATE learner_sessions SET answers = %s, current_step_id = %s, version = %s, "
            "updated_at = %s, last_activity_at = %s WHERE id = %s",
            (json.dumps(answers), following, version + 1, at, at, session_id),
        )
        conn.execute(
            "INSERT INTO outbox_events (id, org_id, session_id, type, payload, created_at) "
            "VALUES (%s, %s, %s, 'step.completed', %s, %s)",
            (uuid.uuid4(), org_id(org), session_id, json.dumps(body), at),
        )
    return state(session_id, version + 1, following)


def minimal_step_sqlite(org: str, session_id: str) -> Response:
    body = request.get_json()
    conn = connection()
    at = now().isoformat(" ")
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT current_step_id, answers, version, token_hash FROM learner_sessions "
            "WHERE id = ? AND org_id = ?",
            (session_id, org_id_sqlite(org)),
        ).fetchone()
        current, answers, version, stored_hash = row
        if stored_hash != token_hash() or body["step_id"] != current:
            conn.execute("ROLLBACK")
            return Response(status=409)
        answers = json.loads(answers)
        answers[body["step_id"]] = body.get("answer")
        following = next_step(current)
        conn.execute(
            "UPDATE learner_sessions SET answers = ?, current_step_id = ?, version = ?, "
            "updated_at = ?, last_activity_at = ? WHERE id = ?",
            (json.dumps(answers), following, version + 1, at, at, session_id),
        )
        conn.execute(
            "INSERT INTO outbox_events (id, org_id, session_id, type, payload, created_at) "
            "VALUES (?, ?, ?, 'step.completed', ?, ?)",
            (uuid.uuid4().hex, org_id_sqlite(org), session_id, json.dumps(body), at),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return state(session_id, version + 1, following)


def org_id_sqlite(slug: str) -> int:
    if slug not in _orgs:
        row = connection().execute("SELECT id FROM orgs WHERE slug = ?", (slug,)).fetchone()
        _orgs[slug] = row[0]
    return _orgs[slug]


#: The product's statements for one step (PostgreSQL), as its driver sends them.
LOCK_AND_STORED = (
    "SELECT s.id, s.org_id, s.flow_id, s.flow_version_id, s.current_step_id, s.answers, "
    "s.status, s.name, s.email, s.phone, s.external_user_id, s.learner_id, s.memory_container, "
    "s.token_hash, s.version, s.created_at, s.updated_at, s.completed_at, v.checksum, "
    "k.request_hash, k.status_code, k.response_body, "
    "(SELECT coalesce(json_agg(json_build_array(w.id, w.event_types))::text, '[]') "
    "FROM webhook_endpoints w WHERE w.org_id = s.org_id AND w.enabled) AS webhook_endpoints "
    "FROM learner_sessions s "
    "JOIN flow_versions v ON v.id = s.flow_version_id "
    "LEFT OUTER JOIN idempotency_keys k ON k.org_id = s.org_id AND k.session_id = s.id "
    "AND k.key = %(key)s AND k.created_at > %(since)s "
    "WHERE s.id = %(session_id)s AND s.org_id = %(org_id)s FOR UPDATE OF s"
)
WRITE_ALL = (
    "WITH w0 AS (UPDATE learner_sessions SET current_step_id = %(step)s, answers = %(answers)s, "
    "status = %(status)s, name = NULL, email = NULL, phone = NULL, version = %(version)s, "
    "updated_at = %(at)s, last_activity_at = %(at)s, completed_at = NULL "
    "WHERE id = %(session_id)s), "
    "w1 AS (INSERT INTO step_events (session_id, seq, org_id, step_id, answer, from_step_id, "
    "to_step_id, kind, created_at) VALUES (%(session_id)s, %(seq)s, %(org_id)s, %(step_id)s, "
    "%(answer)s, %(step_id)s, %(step)s, 'answered', %(at)s)), "
    "w2 AS (INSERT INTO outbox_events (id, org_id, session_id, type, payload, created_at) "
    "VALUES (%(event_id)s, %(org_id)s, %(session_id)s, 'step.completed', %(payload)s, %(at)s)), "
    "w3 AS (INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at) VALUES "
    "(%(event_id)s, 'posthog', 'delivered', 0, %(at)s), "
    "(%(event_id)s, 'memory', 'delivered', 0, %(at)s), "
    "(%(event_id)s, 'webhook:1', 'delivered', 0, %(at)s)), "
    "w4 AS (INSERT INTO idempotency_keys (org_id, session_id, key, request_hash, status_code, "
    "response_body, created_at) VALUES (%(org_id)s, %(session_id)s, %(key)s, %(hash)s, 200, "
    "%(body)s, %(at)s) ON CONFLICT (org_id, session_id, key) DO UPDATE SET "
    "request_hash = excluded.request_hash, status_code = excluded.status_code, "
    "response_body = excluded.response_body, created_at = excluded.created_at "
    "WHERE idempotency_keys.created_at <= %(since)s RETURNING idempotency_keys.id) "
    "SELECT (SELECT count(*) FROM w4)"
)


@app.post("/same/orgs/<org>/sessions/<session_id>/steps")
def same_statements_step(org: str, session_id: str) -> Response:
    """The product's round trips for a step, without the product: BEGIN, the locking read,
    the one write statement, COMMIT (the deliveries are written delivered: no worker runs)."""
    body = request.get_json()
    conn = connection()
    params: dict[str, Any] = {"session_id": session_id, "org_id": org_id(org)}
    with conn.transaction():
        key, since = request.headers.get("Idempotency-Key"), key_since()
        row = conn.execute(LOCK_AND_STORED, {**params, "key": key, "since": since}).fetchone()
        writes, response = same_writes(params, body, row, key, since)
        if writes is not None:
            conn.execute(WRITE_ALL, writes)
    return response


def key_since() -> datetime:
    """Idempotency-Keys stored after this are live (the product keeps them a day; a year
    here: the bench's keys never expire during a run)."""
    at = now()
    return at.replace(year=at.year - 1)


def same_writes(
    params: dict[str, Any], body: dict[str, Any], row: Any, key: str | None, since: datetime
) -> tuple[dict[str, Any] | None, Response]:
    """The parameters of ``WRITE_ALL`` for the locked ``row`` and the response to send; no
    parameters (and a 409) when the token or the step does not match."""
    current, answers, version, stored_hash = row[4], row[5], row[14], row[13]
    if stored_hash != token_hash() or body["step_id"] != current:
        return None, Response(status=409)
    answers[body["step_id"]] = body.get("answer")
    following = next_step(current)
    response = state(params["session_id"], version + 1, following)
    at = now()
    return {
        **params,
        "step": following,
        "answers": json.dumps(answers),
        "status": "active" if following else "completed",
        "version": version + 1,
        "seq": version,
        "at": at,
        "step_id": body["step_id"],
        "answer": json.dumps(body.get("answer")),
        "event_id": uuid.uuid4(),
        "payload": json.dumps({"session_id": params["session_id"], "seq": version, **body}),
        "key": key,
        "hash": "x" * 64,
        "body": response.get_data(as_text=True),
        "since": since,
    }, response


#: The product's read of a session (PostgreSQL).
SESSION_SELECT = (
    "SELECT s.id, s.org_id, s.flow_id, s.flow_version_id, s.current_step_id, s.answers, "
    "s.status, s.name, s.email, s.phone, s.external_user_id, s.learner_id, "
    "s.memory_container, s.token_hash, s.version, s.created_at, s.updated_at, "
    "s.completed_at, v.checksum FROM learner_sessions s "
    "JOIN flow_versions v ON v.id = s.flow_version_id "
    "WHERE s.id = %(session_id)s AND s.org_id = %(org_id)s"
)


@app.get("/orgs/<org>/sessions/<session_id>")
def read_session(org: str, session_id: str) -> Response:
    """The product's read of a session in one autocommit SELECT; 304 when the ETag holds."""
    params = {"session_id": session_id, "org_id": org_id(org)}
    return read_response(session_id, connection("read").execute(SESSION_SELECT, params).fetchone())


def read_response(session_id: str, row: Any) -> Response:
    """404 unless ``row`` is the token's session; 304 when If-None-Match holds its version."""
    if row is None or row[13] != token_hash():
        return Response(status=404)
    etag = f'"{row[14]}"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers={"ETag": etag})
    return state(session_id, row[14], row[4])
