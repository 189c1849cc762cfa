"""What the settings tabs share: the current org locked for a change, and uncached pages."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Response, make_response

from mentorflow.admin.access import seat
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

# The tabs' templates put the CSRF token in by hand (``csrf_token()``), so that several forms on
# one page don't repeat the same element id; FlaskForm checks it on submit.


def lock_org() -> Org:
    """Return the current org, locked for this transaction, so concurrent edits don't clash."""
    org_id = seat().org.id
    begin_write(db.session)
    return db.session.scalars(
        sa.select(Org)
        .where(Org.id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def no_store(response: Any, status: int = 200) -> Response:
    """Return ``response`` with ``status``, marked never to be cached: it shows a secret."""
    response = make_response(response, status)
    response.headers["Cache-Control"] = "no-store"
    return response
