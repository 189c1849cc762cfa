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

import os
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from flask import Flask, Response, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from limits.storage import storage_from_string
from marshmallow import fields, validate

from bench.floor import (
    LOCK_AND_STORED,
    SESSION_SELECT,
    WRITE_ALL,
    key_since,
    read_response,
    same_writes,
)

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


@app.get("/hello")
def hello() -> Response:
    return Response('{"hello": "world"}', mimetype="application/json")


@blp.route("/sessions/<session_id>")
class Session(MethodView):
    @blp.response(200)
    def get(self, org: str, session_id: str) -> Response:
        params = {"session_id": session_id, "org_id": org_id(org)}
        with reads.connect() as conn:
            row = cursor(conn).execute(SESSION_SELECT, params).fetchone()
        return read_response(session_id, row)


@blp.route("/sessions/<session_id>/steps")
class Steps(MethodView):
    @blp.arguments(StepSubmission)
    @blp.response(200)
    def post(self, body: dict[str, Any], org: str, session_id: str) -> Response:
        params: dict[str, Any] = {"session_id": session_id, "org_id": org_id(org)}
        with engine.begin() as conn:
            key, since = request.headers.get("Idempotency-Key"), key_since()
            row = cursor(conn).execute(LOCK_AND_STORED, {**params, "key": key, "since": since})
            writes, response = same_writes(params, body, row.fetchone(), key, since)
            if writes is not None:
                cursor(conn).execute(WRITE_ALL, writes)
        return response


api.register_blueprint(blp)
