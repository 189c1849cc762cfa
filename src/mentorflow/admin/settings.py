"""Console pages for an org's settings: members, API keys, CORS, integrations, abandonment."""

from __future__ import annotations

from typing import Any

from flask_admin import expose

from mentorflow.admin.access import ConsoleView


class SettingsView(ConsoleView):
    """Settings of the current org."""

    @expose("/")
    def index(self) -> Any:
        return self.render("console/settings/index.html")


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [SettingsView(name="Settings", endpoint="settings", url="/admin/settings")]
