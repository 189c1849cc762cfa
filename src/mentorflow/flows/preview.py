"""Try the draft: preview sessions on a snapshot of a flow's draft. Operations flush.

A preview runs on the same engine and learner API as any session, pinned to a preview
version: a snapshot of the draft numbered below zero, never listed, published or counted.
Its session is marked ``preview``: it emits no outbox event (so nothing reaches a sink or
the change feed), analytics, funnels and exports leave it out, and
:func:`delete_expired_previews` removes it a day later.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from mentorflow.flows.document import checksum
from mentorflow.flows.learner_sessions import start_session
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

log = logging.getLogger(__name__)

#: How long a preview session lives.
PREVIEW_TTL = timedelta(days=1)


def preview_version(flow: Flow, *, by: str | None = None) -> FlowVersion:
    """Return the preview version holding the flow's current draft (made if there is none)."""
    digest = checksum(flow.draft)
    existing = db.session.scalars(
        sa.select(FlowVersion).where(
            FlowVersion.flow_id == flow.id,
            FlowVersion.preview.is_(True),
            FlowVersion.checksum == digest,
        )
    ).first()
    if existing is not None:
        return existing
    lowest = db.session.scalar(
        sa.select(sa.func.min(FlowVersion.number)).where(
            FlowVersion.flow_id == flow.id, FlowVersion.preview.is_(True)
        )
    )
    version = FlowVersion(
        flow_id=flow.id,
        number=min(lowest or 0, 0) - 1,
        definition=flow.draft,
        checksum=digest,
        published_by=by,
        published_at=utcnow(),
        notes="preview of the draft",
        preview=True,
    )
    db.session.add(version)
    db.session.flush()
    return version


def start_preview(org: Org, flow: Flow, *, by: str | None = None) -> tuple[LearnerSession, str]:
    """Start a preview session on the flow's draft; return it with its token."""
    version = preview_version(flow, by=by)
    session, token = start_session(org, flow, version, name=by)
    session.preview = True
    db.session.flush()
    return session, token


def is_preview(session_id: str, org_id: int) -> bool:
    """Tell whether the org's session is a preview."""
    return bool(
        db.session.scalar(
            sa.select(LearnerSession.preview).where(
                LearnerSession.id == session_id, LearnerSession.org_id == org_id
            )
        )
    )


def delete_expired_previews(*, now: datetime | None = None, ttl: timedelta = PREVIEW_TTL) -> int:
    """Delete preview sessions older than ``ttl`` and the preview versions nobody uses.

    Step events and idempotency keys go with their session (ON DELETE CASCADE).
    """
    cutoff = (now or utcnow()) - ttl
    deleted = db.session.execute(
        sa.delete(LearnerSession)
        .where(LearnerSession.preview.is_(True), LearnerSession.created_at < cutoff)
        .execution_options(synchronize_session=False)
    ).rowcount
    in_use = sa.select(LearnerSession.flow_version_id).where(
        LearnerSession.flow_version_id == FlowVersion.id
    )
    db.session.execute(
        sa.delete(FlowVersion)
        .where(
            FlowVersion.preview.is_(True),
            FlowVersion.published_at < cutoff,
            ~sa.exists(in_use),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.flush()
    if deleted:
        log.info("deleted %d preview sessions older than %s", deleted, ttl)
    return deleted
