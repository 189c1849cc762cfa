"""The current organization: taken from the URL and the credential, once per request."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa
from flask import g
from werkzeug.local import LocalProxy

from mentorflow.platform.errors import abort
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

T = TypeVar("T")

current_org: Org = LocalProxy(lambda: g.org)  # type: ignore[assignment]


def find_org(slug: str) -> Org | None:
    """Return the org with ``slug``, once per request."""
    cache = g.setdefault("orgs_by_slug", {})
    if slug not in cache:
        cache[slug] = db.session.scalars(sa.select(Org).where(Org.slug == slug)).first()
    return cache[slug]


def enter_org(slug: str, credential_org_id: int) -> Org:
    """Make ``slug`` the current org if the credential belongs to it; 404 otherwise."""
    org = find_org(slug)
    # Another org's URL is indistinguishable from one that does not exist.
    if org is None or org.id != credential_org_id:
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

    from mentorflow.platform.auth import authenticate
    from mentorflow.platform.cors import add_cors_headers, preflight_response

    @blueprint.before_request
    def _enter_org_of_url() -> Any:
        slug = (request.view_args or {}).get("org")
        if request.method == "OPTIONS":
            return preflight_response(slug)
        enter_org(slug, authenticate().org_id)
        return None

    @blueprint.after_request
    def _cors(response: Any) -> Any:
        return add_cors_headers(response, (request.view_args or {}).get("org"))
