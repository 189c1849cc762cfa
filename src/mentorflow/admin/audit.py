"""The Audit page: who changed what in the org (admins and owners), with filters."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import request
from flask_admin import expose
from flask_login import current_user

from mentorflow.admin.access import ConsoleView, current_seat, requires, seat
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit
from mentorflow.tenants.audit import AuditEntry
from mentorflow.tenants.models import Role


def staff_actor() -> str | None:
    """Return the signed-in staff member's email (the console's audit actor)."""
    if current_user and current_user.is_authenticated:
        return str(current_user.staff.email)
    return None


class AuditView(ConsoleView):
    def is_visible(self) -> bool:
        found = current_seat()
        return found is not None and found.can(Role.ADMIN)

    @expose("/")
    @requires(Role.ADMIN)
    def index(self) -> Any:
        org = seat().org
        actor = request.args.get("actor", "").strip()[:320] or None
        action = request.args.get("action", "").strip()[:80] or None
        after = request.args.get("after") or None
        try:
            entries, next_cursor = audit.list_entries(
                org.id, after=after, limit=audit.PAGE_DEFAULT, actor=actor, action=action
            )
        except audit.InvalidCursor:
            entries, next_cursor = audit.list_entries(org.id, actor=actor, action=action)
        actors = db.session.scalars(
            sa.select(AuditEntry.actor).where(AuditEntry.org_id == org.id).distinct().limit(200)
        ).all()
        actions = db.session.scalars(
            sa.select(AuditEntry.action).where(AuditEntry.org_id == org.id).distinct().limit(200)
        ).all()
        return self.render(
            "console/audit/index.html",
            entries=entries,
            next_cursor=next_cursor,
            actor=actor,
            action=action,
            actors=sorted(actors),
            actions=sorted(actions),
        )


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [AuditView(name="Audit", endpoint="console_audit", url="/admin/audit")]
