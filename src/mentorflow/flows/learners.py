"""Learners: an org's users across sessions and devices, their tokens and sessions. They flush.

A learner is ``(org, external_user_id)``. Their ``learners`` row is created the first time
the org's backend mints them a token or starts a session for them; starting as a learner
locks it, so that concurrent starts of one learner run one after the other (which is what
keeps ``resume`` from making a second active session).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mentorflow.flows import learner_sessions
from mentorflow.flows.learner_sessions import SessionRecord
from mentorflow.flows.models import Flow, Learner, LearnerSession, LearnerToken, SessionStatus
from mentorflow.platform.crypto import generate_secret, hash_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.text import text_problem
from mentorflow.tenants.credentials import (
    LEARNER_TOKEN_PREFIX,
    SESSION_TOKEN_PREFIX,
    LearnerIdentity,
)

#: The longest ``external_user_id`` a session or learner takes.
EXTERNAL_USER_ID_MAX = 200
#: Sessions per page of a learner's session list: the default and the most one page holds.
PAGE_DEFAULT, PAGE_MAX = 20, 100
SESSION_ID = re.compile(learner_sessions.SESSION_ID_RE)


class InvalidCursor(ValueError):
    """A list cursor that this API did not hand out."""


def learner_token_owner(token_hash: str) -> LearnerIdentity | None:
    """Return the learner a learner token opens, unless it is unknown, expired or revoked."""
    row = db.session.execute(
        sa.select(
            LearnerToken.org_id,
            LearnerToken.learner_id,
            LearnerToken.expires_at,
            LearnerToken.revoked_at,
            Learner.external_user_id,
        )
        .join(Learner, Learner.id == LearnerToken.learner_id)
        .where(LearnerToken.token_hash == token_hash)
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    return LearnerIdentity(row.org_id, row.learner_id, row.external_user_id)


def external_user_id_problem(external_user_id: str) -> str | None:
    """Return why ``external_user_id`` can be no learner's id, or None when it can."""
    if len(external_user_id) > EXTERNAL_USER_ID_MAX:
        return f"must be at most {EXTERNAL_USER_ID_MAX} characters"
    return text_problem(external_user_id)


def find_learner(org_id: int, external_user_id: str) -> Learner | None:
    """Return the org's learner ``external_user_id``, if the org has seen them."""
    if external_user_id_problem(external_user_id):
        return None
    return db.session.scalars(
        sa.select(Learner).where(
            Learner.org_id == org_id, Learner.external_user_id == external_user_id
        )
    ).first()


def enter_learner(org_id: int, external_user_id: str) -> Learner:
    """Return the org's learner ``external_user_id`` (created if new), its row locked until
    the transaction ends, and mark them active now."""
    now = utcnow()
    dialect = db.session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    # Created by whichever start comes first; the others wait on its unique index entry.
    db.session.execute(
        insert(Learner.__table__)
        .values(
            org_id=org_id, external_user_id=external_user_id, first_seen_at=now, last_active_at=now
        )
        .on_conflict_do_nothing(index_elements=["org_id", "external_user_id"])
    )
    learner = db.session.scalars(
        sa.select(Learner)
        .where(Learner.org_id == org_id, Learner.external_user_id == external_user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    learner.last_active_at = now
    db.session.flush()
    return learner


def mint_learner_token(
    org_id: int, external_user_id: str, ttl_seconds: int
) -> tuple[str, datetime]:
    """Mint a learner token valid for ``ttl_seconds``; return it (shown once) and its expiry."""
    learner = enter_learner(org_id, external_user_id)
    token = generate_secret(LEARNER_TOKEN_PREFIX)
    expires_at = utcnow() + timedelta(seconds=ttl_seconds)
    db.session.add(
        LearnerToken(
            org_id=org_id,
            learner_id=learner.id,
            token_hash=hash_secret(token),
            created_at=utcnow(),
            expires_at=expires_at,
        )
    )
    db.session.flush()
    return token, expires_at


def revoke_learner_tokens(learner: Learner) -> int:
    """Revoke every live token of ``learner``; return how many were."""
    result = db.session.execute(
        sa.update(LearnerToken)
        .where(LearnerToken.learner_id == learner.id, LearnerToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0


def active_session(org_id: int, learner_id: int, flow_id: int) -> SessionRecord | None:
    """Return the learner's active session of the flow (the latest, should there be more)."""
    found = learner_sessions.find_sessions(
        LearnerSession.org_id == org_id,
        LearnerSession.learner_id == learner_id,
        LearnerSession.flow_id == flow_id,
        LearnerSession.status == SessionStatus.ACTIVE,
        order_by=[LearnerSession.updated_at.desc(), LearnerSession.id.desc()],
        limit=1,
    )
    return found[0] if found else None


def learner_summary(learner: Learner) -> dict[str, Any]:
    """Return the learner as the API shows them: when first and last seen, sessions by status."""
    rows = db.session.execute(
        sa.select(
            LearnerSession.status,
            sa.func.count(),
            sa.func.max(LearnerSession.last_activity_at),
        )
        .where(LearnerSession.org_id == learner.org_id, LearnerSession.learner_id == learner.id)
        .group_by(LearnerSession.status)
    ).all()
    counts = {str(status): 0 for status in SessionStatus}
    last_active = learner.last_active_at
    for status, count, latest in rows:
        counts[str(status)] = count
        if latest is not None:
            latest = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
            last_active = max(last_active, latest)
    return {
        "external_user_id": learner.external_user_id,
        "first_seen_at": learner.first_seen_at,
        "last_active_at": last_active,
        "sessions": counts,
    }


@dataclass(frozen=True)
class SessionFilter:
    """What a learner's session list is narrowed to."""

    flow: str | None = None
    status: SessionStatus | None = None
    updated_since: datetime | None = None


def list_sessions(
    learner: Learner, filters: SessionFilter, cursor: str | None, limit: int
) -> tuple[list[SessionRecord], str | None]:
    """Return a page of the learner's sessions, least recently updated first, and the cursor
    of the next page (None on the last).

    Ordered by (updated_at, id): a session that changes while a client pages moves to the
    end, where the client meets it again rather than missing it.
    """
    conditions = [
        LearnerSession.org_id == learner.org_id,
        LearnerSession.learner_id == learner.id,
    ]
    if filters.flow is not None:
        conditions.append(
            LearnerSession.flow_id.in_(
                sa.select(Flow.id).where(Flow.org_id == learner.org_id, Flow.slug == filters.flow)
            )
        )
    if filters.status is not None:
        conditions.append(LearnerSession.status == filters.status)
    if filters.updated_since is not None:
        conditions.append(LearnerSession.updated_at >= filters.updated_since)
    if cursor is not None:
        after_at, after_id = decode_cursor(cursor)
        conditions.append(
            sa.or_(
                LearnerSession.updated_at > after_at,
                sa.and_(LearnerSession.updated_at == after_at, LearnerSession.id > after_id),
            )
        )
    page = learner_sessions.find_sessions(
        *conditions,
        order_by=[LearnerSession.updated_at, LearnerSession.id],
        limit=limit + 1,
    )
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    return page, encode_cursor(page[-1].updated_at, page[-1].id)


def encode_cursor(updated_at: datetime, session_id: str) -> str:
    """Return the opaque cursor that continues after the session (``updated_at``, ``id``)."""
    raw = json.dumps([updated_at.astimezone(UTC).isoformat(), session_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Return the (updated_at, id) a cursor continues after; raise InvalidCursor if forged."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, session_id = json.loads(raw)
        after = datetime.fromisoformat(at).astimezone(UTC)
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise InvalidCursor(cursor) from exc
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise InvalidCursor(cursor)
    return after, session_id


def issue_session_token(session_id: str) -> str:
    """Give the session a fresh token and return it (shown once); the old one stops working."""
    token = generate_secret(SESSION_TOKEN_PREFIX)
    db.session.execute(
        sa.update(LearnerSession)
        .where(LearnerSession.id == session_id)
        .values(token_hash=hash_secret(token))
    )
    return token
