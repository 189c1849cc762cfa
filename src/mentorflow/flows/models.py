"""Flows, their immutable versions, learner sessions and the step-event history."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mentorflow.platform.db import CreatedAtMixin, JSONType, enum_column, utcnow
from mentorflow.platform.extensions import db


class Flow(CreatedAtMixin, db.Model):
    __tablename__ = "flows"
    __table_args__ = (sa.UniqueConstraint("org_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(sa.String(80))
    title: Mapped[str] = mapped_column(sa.String(200))
    draft: Mapped[dict[str, Any]]
    draft_revision: Mapped[int] = mapped_column(default=1)
    published_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("flow_versions.id", use_alter=True, ondelete="SET NULL")
    )
    archived_at: Mapped[datetime | None]

    published_version: Mapped[FlowVersion | None] = relationship(
        foreign_keys=[published_version_id], post_update=True
    )

    def __repr__(self) -> str:
        return f"<Flow {self.slug}>"


class FlowVersion(db.Model):
    __tablename__ = "flow_versions"
    __table_args__ = (sa.UniqueConstraint("flow_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_id: Mapped[int] = mapped_column(sa.ForeignKey("flows.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    # Immutable once written: sessions pinned to this version rely on it.
    definition: Mapped[dict[str, Any]]
    checksum: Mapped[str] = mapped_column(sa.String(64))
    published_by: Mapped[str | None] = mapped_column(sa.String(320))
    published_at: Mapped[datetime] = mapped_column(default=utcnow)
    notes: Mapped[str | None] = mapped_column(sa.Text)
    #: A snapshot of the draft for "Try the draft" (numbered below zero): never listed,
    #: published or counted; deleted with its preview sessions (``flows.preview``).
    preview: Mapped[bool] = mapped_column(default=False, server_default=sa.false())

    flow: Mapped[Flow] = relationship(foreign_keys=[flow_id])

    def __repr__(self) -> str:
        return f"<FlowVersion {self.flow_id}v{self.number}>"


class PublishLog(db.Model):
    __tablename__ = "publish_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_id: Mapped[int] = mapped_column(sa.ForeignKey("flows.id", ondelete="CASCADE"), index=True)
    from_version: Mapped[int | None]
    to_version: Mapped[int]
    by: Mapped[str | None] = mapped_column(sa.String(320))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    notes: Mapped[str | None] = mapped_column(sa.Text)


class SessionStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    ABANDONED = "abandoned"


class LearnerSession(db.Model):
    __tablename__ = "learner_sessions"
    __table_args__ = (
        sa.Index("ix_learner_sessions_org_flow", "org_id", "flow_id", "created_at"),
        sa.Index("ix_learner_sessions_status_activity", "status", "last_activity_at"),
        # A unique index rather than a UniqueConstraint: adding a constraint on SQLite rebuilds
        # the table, and dropping the old one cascades to every step event and outbox row.
        sa.Index("ix_learner_sessions_org_legacy_id", "org_id", "legacy_id", unique=True),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    flow_id: Mapped[int] = mapped_column(sa.ForeignKey("flows.id", ondelete="CASCADE"))
    flow_version_id: Mapped[int] = mapped_column(sa.ForeignKey("flow_versions.id"))
    current_step_id: Mapped[str | None] = mapped_column(sa.String(120))
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[SessionStatus] = mapped_column(
        enum_column(SessionStatus), default=SessionStatus.ACTIVE
    )
    name: Mapped[str | None] = mapped_column(sa.String(200))
    email: Mapped[str | None] = mapped_column(sa.String(320))
    phone: Mapped[str | None] = mapped_column(sa.String(40))
    external_user_id: Mapped[str | None] = mapped_column(sa.String(200), index=True)
    #: The learner the session belongs to (``learners.id``): set when started with a secret
    #: key naming an ``external_user_id`` or with the learner's token, never by a publishable
    #: key. Not a foreign key: adding one on SQLite rebuilds this table, and dropping the old
    #: one cascades to every step event and outbox row. Learners go only with their org.
    learner_id: Mapped[int | None] = mapped_column(index=True)
    memory_container: Mapped[str] = mapped_column(sa.String(200))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    # Set by `mentorflow legacy import`: the old app's session id, and the original row with
    # the import's bookkeeping (see mentorflow.flows.legacy).
    legacy_id: Mapped[str | None] = mapped_column(sa.String(200))
    legacy_context: Mapped[Any] = mapped_column(JSONType, nullable=True)
    #: A staff member trying a draft: no outbox events, never in analytics, funnels or
    #: exports, deleted after a day (``flows.preview``).
    preview: Mapped[bool] = mapped_column(default=False, server_default=sa.false())

    org = relationship("Org")
    flow: Mapped[Flow] = relationship()
    flow_version: Mapped[FlowVersion] = relationship()

    def __repr__(self) -> str:
        return f"<LearnerSession {self.id} {self.status}>"


class Learner(db.Model):
    """One of an org's users, by the org's own id: the owner of sessions across devices."""

    __tablename__ = "learners"
    __table_args__ = (sa.UniqueConstraint("org_id", "external_user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    external_user_id: Mapped[str] = mapped_column(sa.String(200))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: When a token was minted or a session started as the learner (session moves are read
    #: from the sessions themselves).
    last_active_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<Learner {self.org_id}:{self.external_user_id}>"


class LearnerToken(db.Model):
    """A learner token ``lt_…`` for one device, stored as its digest."""

    __tablename__ = "learner_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    learner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("learners.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class EventKind(enum.StrEnum):
    ANSWERED = "answered"
    BACK = "back"
    #: Moved to a newer version of its flow by a publish (``flows.migration``).
    MIGRATED = "migrated"


class StepEvent(db.Model):
    """One committed move of a session: the append-only history funnels derive from."""

    __tablename__ = "step_events"
    __table_args__ = (sa.Index("ix_step_events_org_created", "org_id", "created_at"),)

    session_id: Mapped[str] = mapped_column(
        sa.ForeignKey("learner_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(sa.String(120))
    answer: Mapped[Any] = mapped_column(JSONType, nullable=True)
    from_step_id: Mapped[str | None] = mapped_column(sa.String(120))
    to_step_id: Mapped[str | None] = mapped_column(sa.String(120))
    kind: Mapped[EventKind] = mapped_column(enum_column(EventKind))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
