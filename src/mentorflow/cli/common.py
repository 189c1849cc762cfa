"""Helpers shared by the command groups."""

from __future__ import annotations

import click

from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import Org

#: ``--timeout`` of the commands that wait for a worker: whole seconds, at most a day (a
#: longer wait is a typo, and a far longer one overflows the clock arithmetic).
WAIT_SECONDS = click.IntRange(1, 24 * 3600)


def fail(message: str) -> None:
    """Stop the command with ``message`` and a non-zero exit."""
    raise click.ClickException(message)


def org_for_write(slug: str) -> Org:
    """Return the org called ``slug``, having taken the write lock; fail if there is none."""
    # Every command that names an org goes on to write: take SQLite's write lock up front.
    begin_write(db.session)
    try:
        return tenant_services.get_org(slug)
    except tenant_services.TenantError as exc:
        fail(str(exc))
        raise
