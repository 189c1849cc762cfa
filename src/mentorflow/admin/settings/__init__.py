"""Console pages for an org's settings: the overview, and a module per tab."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask_admin import expose

from mentorflow.admin.access import seat
from mentorflow.admin.settings.general import GeneralPages, general_context
from mentorflow.admin.settings.integrations import IntegrationPages
from mentorflow.admin.settings.keys import KeyPages
from mentorflow.admin.settings.members import InvitationView, MemberPages
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import ApiKey, Membership


class SettingsView(MemberPages, KeyPages, GeneralPages, IntegrationPages):
    """Settings of the current org, one tab per page group.

    Everyone with a seat sees the overview, without secrets; admins change things, and only
    owners make or unmake owners.
    """

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        roles = dict(
            db.session.execute(
                sa.select(Membership.role, sa.func.count())
                .where(Membership.org_id == org.id)
                .group_by(Membership.role)
            ).all()
        )
        keys = dict(
            db.session.execute(
                sa.select(ApiKey.kind, sa.func.count())
                .where(ApiKey.org_id == org.id, ApiKey.revoked_at.is_(None))
                .group_by(ApiKey.kind)
            ).all()
        )
        return self.render(
            "console/settings/index.html",
            tab="overview",
            roles={str(role): count for role, count in roles.items()},
            keys={str(kind): count for kind, count in keys.items()},
            **general_context(org),
        )


def views() -> list[Any]:
    """Return this package's console views, in menu order."""
    return [
        SettingsView(name="Settings", endpoint="settings", url="/admin/settings"),
        InvitationView(name="Invitation", endpoint="invite", url="/admin/invite"),
    ]
