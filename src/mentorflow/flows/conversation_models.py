"""A session's conversation: the messages a learner and their mentor exchanged, per step."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from mentorflow.platform.db import JSONType, utcnow
from mentorflow.platform.extensions import db


class MessageRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class Message(db.Model):
    """One message of a session's conversation; ``seq`` orders a session's messages (1, 2, …).

    ``org_id`` and ``session_id`` are plain indexed columns: erasing a session's messages is
    one ``DELETE … WHERE org_id = ? AND session_id = ?`` (and the foreign key cascades too).
    """

    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("session_id", "seq"),
        sa.Index("ix_messages_org_session", "org_id", "session_id", "seq"),
        sa.Index("ix_messages_org_created", "org_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(
        sa.ForeignKey("learner_sessions.id", ondelete="CASCADE")
    )
    seq: Mapped[int]
    #: The step the message is about; null for a session that had none (completed).
    step_id: Mapped[str | None] = mapped_column(sa.String(120))
    role: Mapped[str] = mapped_column(sa.String(16))
    content: Mapped[str] = mapped_column(sa.Text)
    #: The caller's own JSON object (≤ 4 KB), returned as sent. ``metadata`` is taken by
    #: SQLAlchemy's declarative base, hence the attribute's name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<Message {self.session_id}#{self.seq} {self.role}>"
