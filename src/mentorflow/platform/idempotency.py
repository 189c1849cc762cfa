"""Idempotency keys: a retried request with the same key gets the first response back.

A step or a back move keeps its key per session (:class:`IdempotencyKey`); a session start,
which has no session yet, keeps it per API key, or per learner when started with a learner
token (:class:`SessionStartKey`), its response encrypted at rest since it holds the new
session's token.
"""

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

from mentorflow.platform.crypto import decrypt_secret, encrypt_secret
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


def _take() -> sa.Insert:
    table = IdempotencyKey.__table__
    stmt = postgresql_insert(table)
    # Only a key past retention is taken over. A fresh one here means a request with the same
    # key committed while this one waited for the session's lock, after this one's snapshot
    # (a back move having brought the session to the same step): RETURNING no row says so.
    return stmt.on_conflict_do_update(
        index_elements=["org_id", "session_id", "key"],
        set_={
            name: stmt.excluded[name]
            for name in ("request_hash", "status_code", "response_body", "created_at")
        },
        where=table.c.created_at <= sa.bindparam("since", type_=table.c.created_at.type),
    ).returning(table.c.id)


#: The insert of a held write (one statement at the transaction's end, PostgreSQL).
_TAKE = DriverStatement(_take(), column_keys=_COLUMNS)


class KeyStoredConcurrently(Exception):
    """Another request with the same Idempotency-Key committed first: roll back and replay."""


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


def find_stored_keys(
    org_id: int, session_id: str, keys: list[str], connection: sa.Connection
) -> dict[str, StoredResponse]:
    """Return the fresh responses stored for any of ``keys``, by key (without their bodies)."""
    rows = connection.execute(
        sa.select(
            IdempotencyKey.key, IdempotencyKey.request_hash, IdempotencyKey.status_code
        ).where(
            IdempotencyKey.org_id == org_id,
            IdempotencyKey.session_id == session_id,
            IdempotencyKey.key.in_(set(keys)),
            IdempotencyKey.created_at > utcnow() - RETENTION,
        )
    )
    return {row.key: StoredResponse(row.request_hash, row.status_code, "") for row in rows}


def store_response(
    org_id: int,
    session_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    body: str,
    connection: sa.Connection | None = None,
    *,
    transaction: Any = None,
) -> None:
    """Record the response body to replay for ``key`` (the JSON text sent); part of the
    caller's transaction.

    In a ``transaction`` that holds its writes for one statement (``WriteTransaction``), the
    record is held too; if the key turns out taken then, :class:`KeyStoredConcurrently`.
    """
    now = utcnow()
    params = {
        "org_id": org_id,
        "session_id": session_id,
        "key": key,
        "request_hash": request_hash,
        "status_code": status_code,
        "response_body": body,
        "created_at": now,
    }
    if transaction is not None and transaction.one_statement:
        params["since"] = now - RETENTION
        transaction.write(_TAKE, params, unless_row=KeyStoredConcurrently)
        return
    if transaction is not None:
        connection = transaction.connection
    connection = connection or db.session.connection()
    _UPSERT[connection.dialect.name].execute(connection, params)


class SessionStartKey(db.Model):
    """The Idempotency-Key of a session start, per API key or per learner (exactly one is
    set): the start's response to replay."""

    __tablename__ = "session_start_keys"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "api_key_id", "key"),
        sa.UniqueConstraint("org_id", "learner_id", "key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id", ondelete="CASCADE"))
    learner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("learners.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(255))
    #: The session the start created: erasing it erases this replay (and its token) too.
    session_id: Mapped[str] = mapped_column(
        sa.ForeignKey("learner_sessions.id", ondelete="CASCADE"), index=True
    )
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int]
    #: The response body as sent, Fernet-encrypted: it carries the session token.
    response_body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class UnreadableStoredResponse(ValueError):
    """A stored start response can't be decrypted (the encryption key changed)."""


#: Whose Idempotency-Keys a start's key is among: ``("api_key_id", id)`` or
#: ``("learner_id", id)``.
StartScope = tuple[str, int]


def find_start(org_id: int, scope: StartScope, key: str, config: Any) -> StoredResponse | None:
    """Return the start response stored for ``key`` in ``scope``, if fresh (decrypted)."""
    column, owner_id = scope
    row = db.session.execute(
        sa.select(
            SessionStartKey.request_hash,
            SessionStartKey.status_code,
            SessionStartKey.response_body,
        ).where(
            SessionStartKey.org_id == org_id,
            getattr(SessionStartKey, column) == owner_id,
            SessionStartKey.key == key,
            SessionStartKey.created_at > utcnow() - RETENTION,
        )
    ).first()
    if row is None:
        return None
    try:
        body = decrypt_secret(row.response_body, config)
    except ValueError as exc:
        raise UnreadableStoredResponse(str(exc)) from exc
    return StoredResponse(row.request_hash, row.status_code, body)


def store_start(
    org_id: int,
    scope: StartScope,
    key: str,
    session_id: str,
    request_hash: str,
    status_code: int,
    body: str,
    config: Any,
) -> bool:
    """Record the start response for ``key`` in the caller's transaction.

    Return False when a fresh start already holds the key (a concurrent retry committed
    first): the caller rolls back and replays that one.
    """
    dialect = db.session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    column, owner_id = scope
    stmt = insert(SessionStartKey.__table__).values(
        org_id=org_id,
        **{column: owner_id},
        key=key,
        session_id=session_id,
        request_hash=request_hash,
        status_code=status_code,
        response_body=encrypt_secret(body, config),
        created_at=utcnow(),
    )
    table = SessionStartKey.__table__
    # Only a key past retention (not yet pruned) is taken over; a fresh one stays the first's.
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", column, "key"],
        set_={
            name: stmt.excluded[name]
            for name in ("session_id", "request_hash", "status_code", "response_body", "created_at")
        },
        where=table.c.created_at <= utcnow() - RETENTION,
    )
    # RETURNING rather than rowcount, which psycopg leaves at -1 here.
    return db.session.execute(stmt.returning(table.c.id)).first() is not None


def prune_expired(now: datetime | None = None) -> int:
    """Delete keys past retention; return how many went."""
    cutoff = (now or utcnow()) - RETENTION
    pruned = 0
    for model in (IdempotencyKey, SessionStartKey):
        result = db.session.execute(sa.delete(model).where(model.created_at < cutoff))
        pruned += result.rowcount or 0
    return pruned
