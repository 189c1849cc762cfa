"""Claiming an anonymous session: a learner who signs in keeps what they answered. It flushes.

The caller proves both sides: the learner with their token, the session with its own token.
The session then belongs to the learner (``learner_id``, ``external_user_id``), its version
goes up by one (open screens re-read it), a ``session.claimed`` event is written and its
streams are told. Claiming a session the learner already owns changes nothing; a session of
another learner is a conflict.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mentorflow.flows import learner_sessions
from mentorflow.flows.learner_sessions import SessionRecord
from mentorflow.flows.learners import enter_learner
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import EventType, emit_event
from mentorflow.tenants.credentials import LearnerIdentity, session_token_expired


class SessionNotFound(LookupError):
    """No such session in the org, or the session token is not that session's."""


class ClaimedByAnother(Exception):
    """The session already belongs to another learner."""

    def __init__(self, session: SessionRecord) -> None:
        super().__init__("This session belongs to another learner.")
        self.session = session


def claim_session(
    org: Any, session_id: str, learner: LearnerIdentity, session_token: str
) -> tuple[SessionRecord, bool]:
    """Make the anonymous session ``session_id`` the learner's; return it and whether it was
    claimed now (False: the learner owned it already).

    Raises SessionNotFound (unknown, another org's, or a token not of this session) or
    ClaimedByAnother.
    """
    session = learner_sessions.lock_session(org.id, session_id)
    if (
        session is None
        or session.token_hash != hash_secret(session_token)
        or session_token_expired(learner_sessions.closed_at(session))
    ):
        raise SessionNotFound(session_id)
    if session.learner_id == learner.learner_id:
        return session, False
    if session.learner_id is not None:
        raise ClaimedByAnother(session)
    enter_learner(org.id, learner.external_user_id)
    now = utcnow()
    previous_distinct_id = session.external_user_id or session.id
    db.session.execute(
        sa.update(LearnerSession)
        .where(LearnerSession.id == session.id)
        .values(
            learner_id=learner.learner_id,
            external_user_id=learner.external_user_id,
            version=LearnerSession.version + 1,
            updated_at=now,
            last_activity_at=now,
        )
    )
    claimed = learner_sessions.find_session(org.id, session.id)
    assert claimed is not None  # locked above
    emit_event(
        org.id,
        EventType.SESSION_CLAIMED,
        {
            "org": org.slug,
            "session_id": claimed.id,
            "flow": claimed.flow_version.flow_slug,
            "flow_version": claimed.flow_version.number,
            "status": str(claimed.status),
            "distinct_id": learner.external_user_id,
            "previous_distinct_id": previous_distinct_id,
            "external_user_id": learner.external_user_id,
            "memory_container": claimed.memory_container,
            "occurred_at": now.isoformat(),
        },
        session_id=claimed.id,
    )
    learner_sessions.announce_change(claimed)
    return claimed, True
