"""The audit trail: who changed what in an org, written in the same transaction as the change.

Recording is one call from the view (or task) that makes the change, before it commits::

    audit.record(org.id, "key.revoked", f"key:{key.prefix}", before={"revoked": False},
                 after={"revoked": True})

The actor is found, not passed: a staff member's email in the console (the console registers
how to find it with :func:`init_audit`), the API key's prefix for an ``sk_`` request, ``cli``
for the operator CLI. Summaries never hold secrets: keys named like one are dropped
(:func:`summary`). Entries are only ever inserted; nothing updates or deletes one except the
org's own deletion.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, g, has_app_context, has_request_context
from sqlalchemy.orm import Mapped, mapped_column

from mentorflow.platform.db import JSONType, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import ApiKey

_ACTOR_FINDER = "mentorflow.audit_actor"
#: Returns the console's signed-in staff member's email, or None outside the console.
ActorFinder = Callable[[], "str | None"]
#: Summary keys whose values are never stored (checked as substrings of the lowercased key).
SECRET_WORDS = ("secret", "password", "token", "api_key", "hash")
#: The longest summary value kept as it is; longer strings are cut.
MAX_VALUE_CHARS = 200
PAGE_DEFAULT, PAGE_MAX = 50, 200


class AuditEntry(db.Model):
    """One staff or key action that changed an org. Inserted, never edited."""

    __tablename__ = "audit_entries"
    __table_args__ = (sa.Index("ix_audit_entries_org_entry", "org_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(320))
    action: Mapped[str] = mapped_column(sa.String(80))
    target: Mapped[str] = mapped_column(sa.String(300))
    before: Mapped[Any] = mapped_column(JSONType, nullable=True)
    after: Mapped[Any] = mapped_column(JSONType, nullable=True)


class InvalidCursor(ValueError):
    """A cursor the audit list did not hand out."""


def init_audit(app: Flask, *, staff_actor: ActorFinder) -> None:
    """Tell :func:`record` how to find the console's signed-in staff member (a higher layer)."""
    app.extensions[_ACTOR_FINDER] = staff_actor


def current_actor() -> str:
    """Return who is acting: the API key's prefix, the signed-in staff email, or ``cli``."""
    if has_request_context():
        explicit = g.get("audit_actor")
        if explicit:
            return str(explicit)
        credential = g.get("credential")
        if credential is not None and credential.key_id is not None:
            prefix = db.session.scalar(
                sa.select(ApiKey.prefix).where(ApiKey.id == credential.key_id)
            )
            return f"{prefix}…"
        if credential is not None and credential.learner is not None:
            return f"learner:{credential.learner.external_user_id}"
        finder = current_app.extensions.get(_ACTOR_FINDER)
        email = finder() if finder else None
        if email:
            return email
        return "anonymous"
    return "cli" if has_app_context() else "system"


def summary(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return ``values`` fit for the trail: secrets dropped, long text cut."""
    if values is None:
        return None
    kept: dict[str, Any] = {}
    for name, value in values.items():
        if any(word in name.lower() for word in SECRET_WORDS):
            continue
        if isinstance(value, dict):
            value = summary(value)
        elif isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            value = value[:MAX_VALUE_CHARS] + "…"
        kept[name] = value
    return kept


def record(
    org_id: int,
    action: str,
    target: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Add an audit entry to the current transaction (it commits or rolls back with the change)."""
    entry = AuditEntry(
        org_id=org_id,
        at=utcnow(),
        actor=(actor or current_actor())[:320],
        action=action,
        target=target[:300],
        before=summary(before),
        after=summary(after),
    )
    db.session.add(entry)
    db.session.flush()
    return entry


def entry_body(entry: AuditEntry) -> dict[str, Any]:
    """Return an entry as the API and the console show it."""
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
    }


def list_entries(
    org_id: int,
    *,
    after: str | None = None,
    limit: int = PAGE_DEFAULT,
    actor: str | None = None,
    action: str | None = None,
) -> tuple[list[AuditEntry], str | None]:
    """Return a page of the org's entries, newest first, and the cursor of the next page.

    ``action`` matches a whole action (``key.revoked``) or a family (``key``: every ``key.*``).
    """
    stmt = sa.select(AuditEntry).where(AuditEntry.org_id == org_id)
    if after is not None:
        stmt = stmt.where(AuditEntry.id < decode_cursor(after))
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action:
        stmt = stmt.where(
            sa.or_(AuditEntry.action == action, AuditEntry.action.startswith(f"{action}."))
        )
    rows = db.session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit + 1)).all()
    if len(rows) <= limit:
        return list(rows), None
    page = list(rows[:limit])
    return page, encode_cursor(page[-1].id)


def encode_cursor(entry_id: int) -> str:
    """Return the opaque cursor that continues after (older than) entry ``entry_id``."""
    return base64.urlsafe_b64encode(f"a{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Return the entry id a cursor continues after; raise InvalidCursor if forged."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor(cursor) from exc
    if len(cursor) > 40 or not raw.startswith("a") or not raw[1:].isdigit():
        raise InvalidCursor(cursor)
    value = int(raw[1:])
    if value > 2**62:
        raise InvalidCursor(cursor)
    return value
