"""The stack floor: the product's libraries doing the product's statements, no mentorflow code.

`bench/floor.py` is the physical limit: bare Flask and psycopg. The product is built on more
than that, and some of it runs on every request whatever the product's own code does. This
app answers "how fast can any app built on this stack commit a step?" by doing, per request,
only what the stack itself brings to the product's requests:

- flask-smorest routes (a ``MethodView`` under an ``Api``'s ``Blueprint``) whose body is
  parsed by webargs and loaded by a marshmallow schema shaped like the product's
  ``StepSubmissionSchema`` (the response is built by hand, as the product builds it);
- SQLAlchemy over psycopg: an engine's pool (one connection per process) and its transaction
  (``engine.begin()``: BEGIN … COMMIT), reads on an autocommit engine, and the statements of
  `bench/floor.py` (``LOCK_AND_STORED``, ``WRITE_ALL``, the session's SELECT) sent on the
  pooled connection's driver cursor, as the product sends its hot statements (SQLAlchemy's
  result objects cost more than the statements: ``platform/db.py``);
- the API's rate limit: one counter increment in Redis through the ``limits`` library, as the
  product counts every ``/v1/`` request in the broker's Redis.

What it leaves out is what the product adds on top: credentials and tenancy, the engine's
validation of the answer against the pinned version, the full state body, the request id, the
security and CORS headers, and the console's hooks (CSRF, sign-in). The gap between this app
and the product is therefore the product's own per-request code; the gap between this app and
`bench/floor.py` is the stack's.

``FLOOR_DATABASE_URL`` (``postgresql://…``) and ``FLOOR_REDIS_URL`` as for `bench/floor.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from flask import Flask, Response, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from limits.storage import storage_from_string
from marshmallow import fields, validate

from bench.floor import LOCK_AND_STORED, WRITE_ALL, next_step

app = Flask(__name__)
app.config.update(API_TITLE="stack floor", API_VERSION="1", OPENAPI_VERSION="3.1.0")
URL = os.environ.get("FLOOR_DATABASE_URL", "").replace("postgresql://", "postgresql+psycopg://")
engine = sa.create_engine(URL, pool_size=1, max_overflow=0) if URL else None
#: Reads are single autocommit statements (no BEGIN/ROLLBACK), as the product's are.
reads = (
    sa.create_engine(URL, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")
    if URL
    else None
)
counters = storage_from_string(os.environ.get("FLOOR_REDIS_URL", "memory://"))
api = Api(app)
blp = Blueprint("stack", __name__, url_prefix="/orgs/<org>")
_orgs: dict[str, int] = {}

SESSION_SELECT = (
    "SELECT s.id, s.org_id, s.flow_id, s.flow_version_id, s.current_step_id, s.answers, "
    "s.status, s.name, s.email, s.phone, s.external_user_id, s.learner_id, "
    "s.memory_container, s.token_hash, s.version, s.created_at, s.updated_at, "
    "s.completed_at, v.checksum FROM learner_sessions s "
    "JOIN flow_versions v ON v.id = s.flow_version_id "
    "WHERE s.id = %(session_id)s AND s.org_id = %(org_id)s"
)


class StepSubmission(ma.Schema):
    step_id = fields.String(required=True, validate=validate.Length(min=1, max=120))
    answer = fields.Raw(allow_none=True, load_default=None)


@app.before_request
def _count() -> None:
    """The API's rate limit: one increment of the client address's counter per request."""
    counters.incr(f"stack/{request.remote_addr}/60", 60)


def cursor(conn: sa.Connection) -> Any:
    """The pooled driver connection's cursor, kept with it (psycopg reads rows at once)."""
    fairy = conn.connection
    kept = fairy.info.get("cursor")
    if kept is None:
        kept = fairy.info["cursor"] = fairy.driver_connection.cursor()
    return kept


def org_id(slug: str) -> int:
    if slug not in _orgs:
        with reads.connect() as conn:
            row = conn.exec_driver_sql("SELECT id FROM orgs WHERE slug = %(slug)s", {"slug": slug})
            _orgs[slug] = row.scalar_one()
    return _orgs[slug]


def token_hash() -> str:
    token = request.headers["Authorization"].removeprefix("Bearer ")
    return hashlib.sha256(token.encode()).hexdigest()


def state(session_id: str, version: int, step: str | None) -> Response:
    body = json.dumps({"session": {"id": session_id, "version": version, "current_step_id": step}})
    return Response(body, mimetype="application/json", headers={"ETag": f'"{version}"'})


@app.get("/hello")
def hello() -> Response:
    return Response('{"hello": "world"}', mimetype="application/json")


@blp.route("/sessions/<session_id>")
class Session(MethodView):
    @blp.response(200)
    def get(self, org: str, session_id: str) -> Response:
        with reads.connect() as conn:
            row = (
                cursor(conn)
                .execute(SESSION_SELECT, {"session_id": session_id, "org_id": org_id(org)})
                .fetchone()
            )
        if row is None or row[13] != token_hash():
            return Response(status=404)
        etag = f'"{row[14]}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return state(session_id, row[14], row[4])


@blp.route("/sessions/<session_id>/steps")
class Steps(MethodView):
    @blp.arguments(StepSubmission)
    @blp.response(200)
    def post(self, body: dict[str, Any], org: str, session_id: str) -> Response:
        key = request.headers.get("Idempotency-Key")
        at = datetime.now(UTC).replace(tzinfo=None)
        since = at.replace(year=at.year - 1)
        params: dict[str, Any] = {"session_id": session_id, "org_id": org_id(org)}
        with engine.begin() as conn:
            row = (
                cursor(conn)
                .execute(LOCK_AND_STORED, {**params, "key": key, "since": since})
                .fetchone()
            )
            current, answers, version, stored_hash = row[4], row[5], row[14], row[13]
            if stored_hash != token_hash() or body["step_id"] != current:
                return Response(status=409)
            answers[body["step_id"]] = body["answer"]
            following = next_step(current)
            response = state(session_id, version + 1, following)
            payload = {"session_id": session_id, "seq": version, **body}
            cursor(conn).execute(
                WRITE_ALL,
                {
                    **params,
                    "step": following,
                    "answers": json.dumps(answers),
                    "status": "active" if following else "completed",
                    "version": version + 1,
                    "seq": version,
                    "at": at,
                    "step_id": body["step_id"],
                    "answer": json.dumps(body["answer"]),
                    "event_id": uuid.uuid4(),
                    "payload": json.dumps(payload),
                    "key": key,
                    "hash": "x" * 64,
                    "body": response.get_data(as_text=True),
                    "since": since,
                },
            )
        return response


api.register_blueprint(blp)
