"""Idempotency keys: a retried request with the same key gets the first response back."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from mentorflow.platform.db import JSONType, utcnow
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
    response_body: Mapped[Any] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """Hash what makes two requests "the same" for an idempotency key."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_stored(org_id: int, session_id: str, key: str) -> IdempotencyKey | None:
    """Return the stored response for ``key``, if one is younger than the retention."""
    stmt = sa.select(IdempotencyKey).where(
        IdempotencyKey.org_id == org_id,
        IdempotencyKey.session_id == session_id,
        IdempotencyKey.key == key,
        IdempotencyKey.created_at > utcnow() - RETENTION,
    )
    return db.session.scalars(stmt).first()


def store_response(
    org_id: int, session_id: str, key: str, request_hash: str, status_code: int, body: Any
) -> None:
    """Record the response to replay for ``key``; part of the caller's transaction."""
    # A key past retention may still hold the unique slot until the prune runs: reuse it.
    db.session.execute(
        sa.delete(IdempotencyKey).where(
            IdempotencyKey.org_id == org_id,
            IdempotencyKey.session_id == session_id,
            IdempotencyKey.key == key,
        )
    )
    db.session.add(
        IdempotencyKey(
            org_id=org_id,
            session_id=session_id,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response_body=body,
        )
    )


def prune_expired(now: datetime | None = None) -> int:
    """Delete keys past retention; return how many went."""
    cutoff = (now or utcnow()) - RETENTION
    result = db.session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return result.rowcount or 0
