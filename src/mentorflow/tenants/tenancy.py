"""The current organization: taken from the URL and the credential, once per request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import current_app, g
from werkzeug.local import LocalProxy

from mentorflow.platform.db import fits_integer
from mentorflow.platform.errors import abort
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org, OrgSettings

T = TypeVar("T")


@dataclass(frozen=True)
class OrgInfo(OrgSettings):
    """An org as the API needs it; cached briefly per process, never written through."""

    id: int
    slug: str
    name: str
    settings: dict[str, Any]


current_org: OrgInfo = LocalProxy(lambda: g.org)  # type: ignore[assignment]

_orgs: dict[str, tuple[float, OrgInfo | None]] = {}


def find_org(slug: str) -> OrgInfo | None:
    """Return the org with ``slug``; settings changes show within ``ORG_CACHE_SECONDS``."""
    cache = g.setdefault("orgs_by_slug", {})
    if slug in cache:
        return cache[slug]
    ttl = float(current_app.config["ORG_CACHE_SECONDS"])
    now = time.monotonic()
    cached = _orgs.get(slug)
    if ttl > 0 and cached is not None and cached[0] > now:
        info = cached[1]
    else:
        row = db.session.execute(
            sa.select(Org.id, Org.slug, Org.name, Org.settings).where(Org.slug == slug)
        ).first()
        info = None if row is None else OrgInfo(row.id, row.slug, row.name, dict(row.settings))
        if ttl > 0:
            _orgs[slug] = (now + ttl, info)
    cache[slug] = info
    return info


def enter_org(slug: str, credential_org_id: int | None) -> OrgInfo:
    """Make ``slug`` the current org if the credential belongs to it; 404 otherwise.

    A session token (``credential_org_id`` None) is matched with its session later.
    """
    org = find_org(slug)
    # Another org's URL is indistinguishable from one that does not exist.
    if org is None or (credential_org_id is not None and org.id != credential_org_id):
        abort(404, message=f"No organization '{slug}'.")
    g.org = org
    return org


def get_for_org(model: type[T], object_id: object, what: str | None = None) -> T:
    """Return ``model`` ``object_id`` if it belongs to the current org, else 404."""
    # An id past what the column holds matches nothing (and would fail to bind).
    unstorable = isinstance(object_id, int) and not fits_integer(object_id)
    obj = None if unstorable else db.session.get(model, object_id)
    if obj is None or obj.org_id != current_org.id:  # type: ignore[attr-defined]
        label = what or model.__name__.lower()
        abort(404, message=f"No {label} '{object_id}'.")
    return obj  # type: ignore[return-value]
