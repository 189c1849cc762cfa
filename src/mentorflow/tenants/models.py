"""Organizations, staff users, memberships and API keys."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mentorflow.platform.db import CreatedAtMixin, enum_column
from mentorflow.platform.extensions import db


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MENTOR = "mentor"
    VIEWER = "viewer"


class KeyKind(enum.StrEnum):
    PUBLISHABLE = "publishable"
    SECRET = "secret"

    @property
    def prefix(self) -> str:
        return "pk" if self is KeyKind.PUBLISHABLE else "sk"


class OrgSettings:
    """How an org's ``settings`` document reads: shared by the row and its cached copy."""

    settings: dict[str, Any]

    @property
    def allowed_origins(self) -> list[str]:
        return list(self.settings.get("allowed_origins", []))

    def abandon_after(self, default: int) -> int:
        """Return the inactivity TTL in seconds."""
        return int(self.settings.get("abandon_after", default))


class Org(OrgSettings, CreatedAtMixin, db.Model):
    __tablename__ = "orgs"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(80), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)

    def __repr__(self) -> str:
        return f"<Org {self.slug}>"


class StaffUser(CreatedAtMixin, db.Model):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    is_superuser: Mapped[bool] = mapped_column(default=False)
    #: Console sessions remember the generation they were opened in; bumping it (sign-out,
    #: a new password) ends every session of this user at its next request.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    def __repr__(self) -> str:
        return f"<StaffUser {self.email}>"


class Membership(db.Model):
    __tablename__ = "memberships"

    org_id: Mapped[int] = mapped_column(
        sa.ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("staff_users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[Role] = mapped_column(enum_column(Role))

    org: Mapped[Org] = relationship()
    user: Mapped[StaffUser] = relationship(back_populates="memberships")


class ApiKey(CreatedAtMixin, db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[KeyKind] = mapped_column(enum_column(KeyKind))
    prefix: Mapped[str] = mapped_column(sa.String(20), index=True)
    key_hash: Mapped[str] = mapped_column("hash", sa.String(64), unique=True)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    org: Mapped[Org] = relationship()

    def __repr__(self) -> str:
        return f"<ApiKey {self.prefix}… ({self.kind})>"
