"""The player: a small page that walks a published flow through the public learner API.

``GET /play/<org>/<flow>?key=pk_…`` serves a page whose script talks to ``/v1`` only, with
the publishable key to start a session and the session's token for everything after. The
page checks the key and the flow the way the API would (a key of another org sees a 404),
so that a person who opens a wrong link reads why instead of an empty page.

Demo convenience: keys are stored hashed, so the server cannot embed a key it was not given,
except for the demo org, whose plain publishable key ``mentorflow demo`` keeps in
``<instance>/demo.json``; ``/play/demo/rafael-tats`` works without ``?key=`` for that reason.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, render_template, request

from mentorflow.flows import authoring
from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import ApiKey, KeyKind
from mentorflow.tenants.tenancy import find_org

bp = Blueprint(
    "player",
    __name__,
    url_prefix="/play",
    template_folder="templates",
    static_folder="static/player",
    # Org slugs never start with "_", so no org's flow can shadow the assets.
    static_url_path="/_static",
)

PUBLISHABLE_PREFIX = f"{KeyKind.PUBLISHABLE.prefix}_"
#: The org whose publishable key ``mentorflow demo`` keeps in the instance folder.
DEMO_ORG = "demo"
#: That file, in the instance folder.
DEMO_FILE = "demo.json"
# The page runs only its own script and styles and talks only to its own origin; videos
# come from wherever the flow's author put them. Embedding in any site is the point.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src * blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)


def embed_snippet(base_url: str, org: str, flow: str, key: str, *, title: str = "") -> str:
    """Return the ``<iframe>`` tag that embeds the player of ``flow`` in another site."""
    src = f"{base_url.rstrip('/')}/play/{quote(org, safe='')}/{quote(flow, safe='')}"
    src += "?" + urlencode({"key": key})
    label = title or f"{flow} ({org})"
    return (
        f'<iframe src="{escape(src)}" title="{escape(label)}" width="100%" height="720" '
        'style="border:0;max-width:720px" loading="lazy" allow="fullscreen"></iframe>'
    )


@bp.get("/<org>/<flow>")
def play(org: str, flow: str) -> Response:
    """Render the player of a published flow."""
    key = request.args.get("key", "").strip() or demo_publishable_key(org)
    if not key:
        return _error_page(
            400,
            "This page needs a publishable key",
            "The player starts learner sessions with one of the organization's publishable "
            "keys (pk_…), passed in the page address as ?key=pk_…. Embed the player with the "
            "snippet the console shows for the flow, or add the key to the address.",
            example=embed_snippet(request.host_url, org, flow, f"{PUBLISHABLE_PREFIX}YOUR_KEY"),
        )
    if not key.startswith(PUBLISHABLE_PREFIX):
        return _error_page(
            400,
            "Only a publishable key belongs in a page",
            "The address carries a key that is not a publishable key (pk_…). Anyone who sees "
            "a web page can read its address: if this was a secret key (sk_…), revoke it in "
            "the console and embed the player with a publishable key instead.",
        )
    key_org_id = _publishable_key_org_id(key)
    if key_org_id is None:
        return _error_page(
            403,
            "This key is not accepted",
            "The publishable key in the page address is unknown or has been revoked. Ask the "
            "flow's owner for a current embed snippet.",
        )
    found_org = find_org(org)
    # A key of another org sees the same 404 as a slug that does not exist, as in the API.
    published = (
        authoring.find_published(found_org.id, flow)
        if found_org is not None and found_org.id == key_org_id
        else None
    )
    if published is None:
        return _error_page(
            404,
            "There is no such flow",
            f"No published flow '{flow}' of organization '{org}' is open to this key. Check "
            "the address, or ask the flow's owner whether it was published.",
        )
    flow_obj, _version = published
    html = render_template(
        "player/play.html",
        org=found_org.slug,
        flow=flow_obj.slug,
        title=flow_obj.title,
        key=key,
        base_url=request.script_root,
        allowed_origins=" ".join(found_org.allowed_origins),
    )
    return _page(html, 200)


def demo_publishable_key(org: str) -> str | None:
    """Return the demo's plain publishable key from the instance folder, for the demo org only."""
    if org != DEMO_ORG:
        return None
    path = Path(current_app.instance_path) / DEMO_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    key = saved.get(KeyKind.PUBLISHABLE.value) if isinstance(saved, dict) else None
    return key if isinstance(key, str) else None


def _publishable_key_org_id(key: str) -> int | None:
    return db.session.scalars(
        sa.select(ApiKey.org_id).where(
            ApiKey.key_hash == hash_secret(key),
            ApiKey.kind == KeyKind.PUBLISHABLE,
            ApiKey.revoked_at.is_(None),
        )
    ).first()


def _error_page(status: int, title: str, detail: str, *, example: str | None = None) -> Response:
    html = render_template(
        "player/error.html", status=status, title=title, detail=detail, example=example
    )
    return _page(html, status)


def _page(html: str, status: int) -> Response:
    response = current_app.response_class(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    # The address carries the key; keep it off the Referer sent to video hosts.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response
