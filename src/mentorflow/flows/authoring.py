"""Flow authoring: drafts, published versions, rollback. Operations flush; the caller commits."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mentorflow.flows.document import checksum as definition_checksum
from mentorflow.flows.engine import CompiledFlow
from mentorflow.flows.models import Flow, FlowVersion, PublishLog
from mentorflow.platform.db import fits_integer, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

_COMPILED_CACHE_SIZE = 256


class FlowError(ValueError):
    """A flow operation was refused; the message says why, for people."""


class DraftConflict(FlowError):
    """The draft changed since the editor loaded it."""


def find_flow(org_id: int, slug: str) -> Flow | None:
    """Return the org's flow with ``slug``."""
    return db.session.scalars(
        sa.select(Flow).where(Flow.org_id == org_id, Flow.slug == slug)
    ).first()


def get_flow(org: Org, slug: str) -> Flow:
    """Return the org's flow with ``slug`` or raise ``FlowError``."""
    flow = find_flow(org.id, slug)
    if flow is None:
        raise FlowError(f"no flow '{slug}' in '{org.slug}'")
    return flow


def save_draft(
    org: Org, definition: dict[str, Any], *, expected_revision: int | None = None
) -> tuple[Flow, bool]:
    """Create the flow or replace its draft with a validated definition; return (flow, created)."""
    flow = find_flow(org.id, definition["slug"])
    if flow is None:
        flow = Flow(
            org_id=org.id,
            slug=definition["slug"],
            title=definition["title"],
            draft=definition,
            draft_revision=1,
        )
        db.session.add(flow)
        db.session.flush()
        return flow, True
    if expected_revision is not None and expected_revision != flow.draft_revision:
        raise DraftConflict(
            f"the draft of '{flow.slug}' was saved by someone else "
            f"(revision {flow.draft_revision}, you edited revision {expected_revision}); "
            "reload it and apply your change again"
        )
    if flow.draft != definition:
        flow.draft = definition
        flow.title = definition["title"]
        flow.draft_revision += 1
    flow.archived_at = None
    db.session.flush()
    return flow, False


def latest_version(flow: Flow) -> FlowVersion | None:
    """Return the highest-numbered version of ``flow``."""
    return db.session.scalars(
        sa.select(FlowVersion)
        .where(FlowVersion.flow_id == flow.id, FlowVersion.preview.is_(False))
        .order_by(FlowVersion.number.desc())
        .limit(1)
    ).first()


def publish_version(
    flow: Flow, *, notes: str | None = None, by: str | None = None
) -> tuple[FlowVersion, bool]:
    """Publish the draft as a new immutable version; return (version, created).

    Publishing a draft identical to the published version changes nothing.
    """
    digest = definition_checksum(flow.draft)
    current = flow.published_version
    if current is not None and current.checksum == digest:
        return current, False
    latest = latest_version(flow)
    version = FlowVersion(
        flow_id=flow.id,
        number=(latest.number + 1) if latest else 1,
        definition=flow.draft,
        checksum=digest,
        published_by=by,
        published_at=utcnow(),
        notes=notes,
    )
    db.session.add(version)
    db.session.flush()
    _point_at(flow, version, by=by, notes=notes)
    return version, True


def get_version(flow: Flow, number: int | None = None) -> FlowVersion:
    """Return version ``number`` of ``flow`` (the published one when None)."""
    if number is None:
        if flow.published_version is None:
            raise FlowError(f"flow '{flow.slug}' has no published version")
        return flow.published_version
    version = None
    if fits_integer(number):
        version = db.session.scalars(
            sa.select(FlowVersion).where(
                FlowVersion.flow_id == flow.id,
                FlowVersion.number == number,
                FlowVersion.preview.is_(False),
            )
        ).first()
    if version is None:
        raise FlowError(f"flow '{flow.slug}' has no version {number}")
    return version


def flow_versions(flow: Flow | None) -> list[FlowVersion]:
    """Return the versions of ``flow``, newest first (none for no flow)."""
    if flow is None:
        return []
    return list(
        db.session.scalars(
            sa.select(FlowVersion)
            .where(FlowVersion.flow_id == flow.id, FlowVersion.preview.is_(False))
            .order_by(FlowVersion.number.desc())
        ).all()
    )


def rollback_flow(flow: Flow, number: int, *, by: str | None = None) -> FlowVersion:
    """Publish an older version again; sessions already started keep their own version."""
    version = get_version(flow, number)
    if flow.published_version_id == version.id:
        raise FlowError(f"version {number} of '{flow.slug}' is already the published one")
    _point_at(flow, version, by=by, notes=f"rollback to version {number}")
    return version


def _point_at(flow: Flow, version: FlowVersion, *, by: str | None, notes: str | None) -> None:
    previous = flow.published_version
    flow.published_version = version
    db.session.add(
        PublishLog(
            flow_id=flow.id,
            from_version=previous.number if previous else None,
            to_version=version.number,
            by=by,
            at=utcnow(),
            notes=notes,
        )
    )
    db.session.flush()


def find_published(org_id: int, slug: str) -> tuple[Flow, FlowVersion] | None:
    """Return a live flow and its published version, or None."""
    row = db.session.execute(
        sa.select(Flow, FlowVersion)
        .join(FlowVersion, FlowVersion.id == Flow.published_version_id)
        .where(Flow.org_id == org_id, Flow.slug == slug, Flow.archived_at.is_(None))
    ).first()
    return None if row is None else (row[0], row[1])


@dataclass(frozen=True)
class VersionInfo:
    """What the hot path needs of an immutable flow version, cached per process."""

    id: int
    number: int
    flow_slug: str
    checksum: str
    engine: CompiledFlow
    #: A draft snapshot for "Try the draft": its sessions emit no events.
    preview: bool = False


_versions: OrderedDict[tuple[int, str], VersionInfo] = OrderedDict()


def version_info(version_id: int, checksum: str) -> VersionInfo:
    """Return the cached version info (compiled engine included) of a flow version."""
    # The checksum is part of the key so that a recycled id (a restored database) never
    # serves another definition.
    key = (version_id, checksum)
    info = _versions.get(key)
    if info is None:
        row = db.session.execute(
            sa.select(FlowVersion.number, FlowVersion.definition, FlowVersion.preview, Flow.slug)
            .join(Flow, Flow.id == FlowVersion.flow_id)
            .where(FlowVersion.id == version_id)
        ).one()
        info = VersionInfo(
            id=version_id,
            number=row.number,
            flow_slug=row.slug,
            checksum=checksum,
            engine=CompiledFlow(row.definition),
            preview=row.preview,
        )
        _versions[key] = info
        if len(_versions) > _COMPILED_CACHE_SIZE:
            _versions.popitem(last=False)
    return info


def compiled_flow(version: FlowVersion) -> CompiledFlow:
    """Return the compiled engine of a flow version (cached: versions are immutable)."""
    return version_info(version.id, version.checksum).engine
