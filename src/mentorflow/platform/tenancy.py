"""The current organization: taken from the URL and the credential, once per request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import current_app, g
from werkzeug.local import LocalProxy

from mentorflow.platform.errors import abort
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

T = TypeVar("T")


@dataclass(frozen=True)
class OrgInfo:
    """An org as the API needs it; cached briefly per process, never written through."""

    id: int
    slug: str
    name: str
    settings: dict[str, Any]

    @property
    def allowed_origins(self) -> list[str]:
        return list(self.settings.get("allowed_origins", []))

    def abandon_after(self, default: int) -> int:
        return int(self.settings.get("abandon_after", default))


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
    obj = db.session.get(model, object_id)
    if obj is None or obj.org_id != current_org.id:  # type: ignore[attr-defined]
        label = what or model.__name__.lower()
        abort(404, message=f"No {label} '{object_id}'.")
    return obj  # type: ignore[return-value]


def scope_blueprint_to_org(blueprint: Any) -> None:
    """Authenticate every request of ``blueprint`` and enter the org named in its URL."""
    from flask import request

    from mentorflow.platform.auth import authenticate, token_owner
    from mentorflow.platform.cors import add_cors_headers, preflight_response

    @blueprint.before_request
    def _enter_org_of_url() -> Any:
        slug = (request.view_args or {}).get("org")
        if request.method == "OPTIONS":
            return preflight_response(slug)
        if request.method in ("GET", "HEAD"):
            # Reads are single statements: no BEGIN/ROLLBACK round trips around them.
            db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        credential = authenticate()
        org = enter_org(slug, credential.org_id)
        if credential.org_id is None and "session_id" not in request.view_args:
            # A session token outside its session's routes: match it to its org now, before
            # anything else of the request is looked at.
            owner = token_owner(credential.token_hash or "")
            if owner is None:
                abort(
                    401,
                    message="The session token is not valid.",
                    headers={"WWW-Authenticate": 'Bearer realm="mentorflow"'},
                )
            if owner[1] != org.id:
                abort(404, message=f"No organization '{slug}'.")
        return None

    @blueprint.after_request
    def _cors(response: Any) -> Any:
        return add_cors_headers(response, (request.view_args or {}).get("org"))
