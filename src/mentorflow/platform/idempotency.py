"""Idempotency keys: a retried request with the same key gets the first response back."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from mentorflow.platform.db import DriverStatement, utcnow
from mentorflow.platform.extensions import db

#: How long a stored response can be replayed.
RETENTION = timedelta(hours=24)


class IdempotencyKey(db.Model):
    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("org_id", "session_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(
        sa.ForeignKey("learner_sessions.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(sa.String(255))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int]
    #: The response body exactly as it was sent (JSON text), replayed byte for byte.
    response_body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """Hash what makes two requests "the same" for an idempotency key."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_FIND = DriverStatement(
    sa.select(
        IdempotencyKey.request_hash, IdempotencyKey.status_code, IdempotencyKey.response_body
    ).where(
        IdempotencyKey.org_id == sa.bindparam("org_id"),
        IdempotencyKey.session_id == sa.bindparam("session_id"),
        IdempotencyKey.key == sa.bindparam("key"),
        IdempotencyKey.created_at > sa.bindparam("since"),
    )
)


def _upsert(dialect: str) -> sa.Insert:
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(IdempotencyKey.__table__)
    # A key past retention may still hold the unique slot until the prune runs: reuse it.
    return stmt.on_conflict_do_update(
        index_elements=["org_id", "session_id", "key"],
        set_={
            name: stmt.excluded[name]
            for name in ("request_hash", "status_code", "response_body", "created_at")
        },
    )


_COLUMNS = [
    "org_id",
    "session_id",
    "key",
    "request_hash",
    "status_code",
    "response_body",
    "created_at",
]
_UPSERT = {
    dialect: DriverStatement(_upsert(dialect), column_keys=_COLUMNS)
    for dialect in ("postgresql", "sqlite")
}


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int
    response_body: str


def find_stored(
    org_id: int, session_id: str, key: str, connection: sa.Connection | None = None
) -> StoredResponse | None:
    """Return the response stored for ``key``, if fresh."""
    params = {"org_id": org_id, "session_id": session_id, "key": key, "since": utcnow() - RETENTION}
    row = _FIND.first(connection or db.session.connection(), params)
    return None if row is None else StoredResponse(**row)


def store_response(
    org_id: int,
    session_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    body: str,
    connection: sa.Connection | None = None,
) -> None:
    """Record the response body to replay for ``key`` (the JSON text sent); part of the
    caller's transaction."""
    connection = connection or db.session.connection()
    _UPSERT[connection.dialect.name].execute(
        connection,
        {
            "org_id": org_id,
            "session_id": session_id,
            "key": key,
            "request_hash": request_hash,
            "status_code": status_code,
            "response_body": body,
            "created_at": utcnow(),
        },
    )


def prune_expired(now: datetime | None = None) -> int:
    """Delete keys past retention; return how many went."""
    cutoff = (now or utcnow()) - RETENTION
    result = db.session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return result.rowcount or 0
