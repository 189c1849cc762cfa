"""The audit trail: every mutating route of the console and the API, found in the app's URL
map, either writes exactly one audit entry or is listed here as not changing the org, with
the reason.

A new route fails ``test_every_mutating_route_is_audited_or_exempt`` until it is added to
``AUDITED`` (with a recipe that calls it and the action it must record) or to
``NOT_AUDITED`` (with why it changes no org: learner-facing, the caller's own account...).
Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from console_client import Console, add_staff, csrf_token
from mentorflow.delivery import webhooks
from mentorflow.flows.models import Flow, Learner
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery
from mentorflow.tenants import audit
from mentorflow.tenants.audit import AuditEntry
from mentorflow.tenants.models import ApiKey, StaffUser
from test_cli import cli  # noqa: F401  (the fixture)

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
LINK = re.compile(r'id="invitation-link"[^>]*>http://localhost/admin/invite/#([^<]+)<')
SECRET_KEY_SHOWN = re.compile(r'id="new-key"[^>]*>((?:pk|sk)_[A-Za-z0-9_-]{40,})<')
INTEGRATION_KEY = "phc_audit_secret_value_never_stored_in_clear"

#: Mutating routes that change no org, and why. Keys are (method, URL rule) as in url_map.
NOT_AUDITED: dict[tuple[str, str], str] = {
    ("POST", "/admin/login"): "signs a staff member in: their own session, not the org",
    ("POST", "/admin/logout"): "signs a staff member out: their own session, not the org",
    ("POST", "/admin/account"): "the staff member's own password, which belongs to no org",
    ("POST", "/admin/org/<slug>"): "chooses which org the console shows; changes nothing",
    ("POST", "/admin/settings/integrations/<sink>/test"): "sends a test event; no setting changes",
    ("POST", "/admin/webhooks/<int:webhook_id>/test"): "sends a test event; no setting changes",
    ("POST", "/admin/flows/<int:flow_id>/validate"): "checks a draft with the validator; "
    "stores nothing",
    ("POST", "/admin/flows/<int:flow_id>/try"): "a preview session of the draft for the staff "
    "member: never counted or sent, deleted after a day; the org's flows are unchanged",
    ("POST", "/v1/orgs/<org>/flows/<flow>/sessions"): "learner-facing: a learner starts a "
    "session (an outbox event records it)",
    ("POST", "/v1/orgs/<org>/sessions/<session_id>/steps"): "learner-facing: an answer (a "
    "step event records it)",
    ("POST", "/v1/orgs/<org>/sessions/<session_id>/steps/batch"): "learner-facing: answers",
    ("POST", "/v1/orgs/<org>/sessions/<session_id>/back"): "learner-facing: a back move",
    ("POST", "/v1/orgs/<org>/sessions/<session_id>/messages"): "learner-facing: a message of "
    "the session's conversation (a message.created event records it)",
    ("POST", "/v1/orgs/<org>/sessions/<session_id>/stream-tickets"): "learner-facing: a "
    "short-lived ticket to read a stream; changes nothing",
    ("POST", "/v1/orgs/<org>/sessions/<session_id>/claim"): "learner-facing: a learner "
    "claims their own session (a session.claimed event records it)",
    ("POST", "/v1/orgs/<org>/learners/<ext>/tokens"): "signs a learner in on a device, once "
    "per sign-in (learner-facing); revoking them is audited",
    ("PUT", "/v1/orgs/<org>/learners/<ext>/state"): "a learner's own data, with its own "
    "history (learner_state_changes) and events",
    ("PATCH", "/v1/orgs/<org>/learners/<ext>/state"): "a learner's own data, with its own "
    "history (learner_state_changes) and events",
}


@dataclass
class World:
    """An org with staff of every role, a published flow and a session, and its keys."""

    app: Flask
    keys: Any
    emails: dict[str, str]
    flow_id: int
    session_id: str
    session_token: str
    #: What a recipe's setup leaves for its call.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.keys.slug

    def console(self, role: str = "admin") -> Console:
        console = Console(self.app.test_client())
        assert console.login(self.emails[role]).status_code == 302
        return console

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys.sk}"}
        return self.app.test_client().open(
            f"/v1/orgs/{self.slug}{path}", method=method, headers=headers, **kwargs
        )

    def user_id(self, role: str) -> int:
        return db.session.scalar(
            sa.select(StaffUser.id).where(StaffUser.email == self.emails[role])
        )

    @property
    def sk_prefix(self) -> str:
        return self.keys.sk[:11]


@pytest.fixture
def world(ctx: Flask, create_org, publish_flow, learner, monkeypatch) -> World:
    # Webhook endpoints on this machine (nothing is sent: no worker runs here).
    monkeypatch.setitem(ctx.config, "ALLOW_PRIVATE_SINKS", True)
    keys = create_org(name="Audited Studio")
    publish_flow(keys.org, SMALL_FLOW)
    publish_flow(keys.org, SMALL_FLOW.read_text().replace("Studio onboarding", "Onboarding 2"))
    emails = {
        role: add_staff(keys.org, f"{role}@{keys.slug}.example", role)
        for role in ("owner", "admin", "mentor")
    }
    walker = learner(keys)
    walker.start("onboarding")
    flow_id = db.session.scalar(sa.select(Flow.id).where(Flow.org_id == keys.org.id))
    return World(ctx, keys, emails, flow_id, walker.session_id, walker.token)


def form(world: World, url: str, data: dict[str, Any] | None = None, role: str = "admin"):
    return world.console(role).post(url, data or {})


def autosave_draft(world: World) -> Any:
    """The structured editor's autosave: the draft as JSON, made from its current revision."""
    console = world.console("mentor")
    state = console.get(f"/admin/flows/{world.flow_id}/draft.json").get_json()
    document = state["document"]
    document["title"] = "Onboarding, edited in the editor"
    token = csrf_token(console.client, "/admin/")
    return console.client.post(
        f"/admin/flows/{world.flow_id}/draft",
        json={"document": document, "revision": state["revision"]},
        headers={"X-CSRFToken": token},
    )


def flow_document(title: str) -> str:
    return SMALL_FLOW.read_text().replace("Studio onboarding", title)


def edit_draft(world: World) -> Any:
    flow = db.session.get(Flow, world.flow_id)
    return form(
        world,
        f"/admin/flows/{world.flow_id}",
        {"document": flow_document("Edited"), "draft_revision": str(flow.draft_revision)},
        role="mentor",
    )


def import_flow(world: World) -> Any:
    console = world.console("mentor")
    token = csrf_token(console.client, "/admin/flows/")
    upload = (
        io.BytesIO(flow_document("Imported").replace("onboarding", "imported").encode()),
        "f.yaml",
    )
    return console.client.post(
        "/admin/flows/import", data={"csrf_token": token, "document": upload}
    )


def invite_newcomer(world: World) -> None:
    created = form(world, "/admin/settings/members/invite", {"email": "new@example.com"})
    world.extra["token"] = LINK.search(created.get_data(as_text=True)).group(1)


def join_by_invitation(world: World) -> Any:
    newcomer = world.app.test_client()
    data = {"csrf_token": csrf_token(newcomer, "/admin/invite/"), "token": world.extra["token"]}
    newcomer.post("/admin/invite/", data=data)
    password = "a fine password"
    return newcomer.post(
        "/admin/invite/", data={**data, "join": "1", "password": password, "confirm": password}
    )


def cancel_invitation(world: World) -> Any:
    db.session.rollback()
    org = db.session.get(type(world.keys.org), world.keys.org.id)
    digest = next(iter(org.settings["invitations"]))
    return form(world, f"/admin/settings/invitations/{digest}/cancel")


def dead_delivery_retry(world: World) -> Any:
    db.session.rollback()
    event_id = db.session.execute(
        sa.text("SELECT id FROM outbox_events WHERE session_id = :s"), {"s": world.session_id}
    ).scalar()
    event = uuid_text(event_id)
    return form(world, f"/admin/sessions/{world.session_id}/events/{event}/retry", role="mentor")


HOOK_URL = "http://127.0.0.1:9/hook"


def make_webhook(world: World) -> None:
    """An endpoint of the org, and an event it has a delivery of (a session started)."""
    begin_write(db.session)
    endpoint, _ = webhooks.create_endpoint(world.keys.org.id, world.app.config, url=HOOK_URL)
    db.session.commit()
    world.extra["webhook"] = endpoint.id
    started = world.api("POST", "/flows/onboarding/sessions", json={"external_user_id": "user-9"})
    assert started.status_code == 201, started.json
    db.session.rollback()
    event_id = db.session.scalar(sa.select(Delivery.event_id).where(Delivery.sink == endpoint.sink))
    world.extra["event"] = uuid_text(event_id)
    world.extra["learner"] = db.session.scalar(
        sa.select(Learner.id).where(
            Learner.org_id == world.keys.org.id, Learner.external_user_id == "user-9"
        )
    )


def hook(world: World, rest: str = "") -> str:
    return f"/webhooks/{world.extra['webhook']}{rest}"


def uuid_text(value: Any) -> str:
    text = str(value).replace("-", "")
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def key_id(world: World) -> int:
    return db.session.scalar(
        sa.select(ApiKey.id).where(ApiKey.org_id == world.keys.org.id, ApiKey.kind == "publishable")
    )


@dataclass(frozen=True)
class Recipe:
    """How to call a route so that it changes the org, the action it must record, and who."""

    call: Callable[[World], Any]
    action: str
    by: str = "admin"  # a role of the world's staff, "key" (the secret key) or an email
    #: What must happen first (its own entries are not counted).
    setup: Callable[[World], Any] | None = None


#: Mutating routes that change the org: a recipe each. Keys are (method, URL rule).
AUDITED: dict[tuple[str, str], Recipe] = {
    ("POST", "/admin/settings/keys/new"): Recipe(
        lambda w: form(w, "/admin/settings/keys/new", {"kind": "secret"}), "key.created"
    ),
    ("POST", "/admin/settings/keys/<int:key_id>/revoke"): Recipe(
        lambda w: form(w, f"/admin/settings/keys/{key_id(w)}/revoke"), "key.revoked"
    ),
    ("POST", "/admin/settings/members/invite"): Recipe(
        lambda w: form(w, "/admin/settings/members/invite", {"email": "n@example.com"}),
        "invitation.created",
    ),
    ("POST", "/admin/settings/invitations/<digest>/cancel"): Recipe(
        cancel_invitation, "invitation.cancelled", setup=invite_newcomer
    ),
    ("POST", "/admin/invite/"): Recipe(
        join_by_invitation, "member.joined", by="new@example.com", setup=invite_newcomer
    ),
    ("POST", "/admin/settings/members/<int:user_id>/role"): Recipe(
        lambda w: form(
            w, f"/admin/settings/members/{w.user_id('mentor')}/role", {"role": "viewer"}
        ),
        "member.role_changed",
    ),
    ("POST", "/admin/settings/members/<int:user_id>/remove"): Recipe(
        lambda w: form(w, f"/admin/settings/members/{w.user_id('mentor')}/remove"),
        "member.removed",
    ),
    ("POST", "/admin/settings/general/origins"): Recipe(
        lambda w: form(
            w, "/admin/settings/general/origins", {"allowed_origins": "https://app.example"}
        ),
        "settings.origins_changed",
    ),
    ("POST", "/admin/settings/general/analytics"): Recipe(
        lambda w: form(w, "/admin/settings/general/analytics", {"analytics_answers": "y"}),
        "settings.analytics_changed",
    ),
    ("POST", "/admin/settings/general/abandonment"): Recipe(
        lambda w: form(w, "/admin/settings/general/abandonment", {"abandon_after": "1h"}),
        "settings.abandonment_changed",
    ),
    ("POST", "/admin/settings/integrations/<sink>"): Recipe(
        lambda w: form(
            w,
            "/admin/settings/integrations/posthog",
            {"api_key": INTEGRATION_KEY, "url": "https://ph.example"},
        ),
        "integration.changed",
    ),
    ("POST", "/admin/settings/integrations/<sink>/clear"): Recipe(
        lambda w: form(w, "/admin/settings/integrations/posthog/clear"), "integration.cleared"
    ),
    ("POST", "/admin/flows/new"): Recipe(
        lambda w: form(
            w,
            "/admin/flows/new",
            {"document": flow_document("New").replace("onboarding", "brand-new")},
            role="mentor",
        ),
        "flow.created",
        by="mentor",
    ),
    ("POST", "/admin/flows/<int:flow_id>"): Recipe(edit_draft, "flow.draft_saved", by="mentor"),
    ("POST", "/admin/flows/<int:flow_id>/draft"): Recipe(
        autosave_draft, "flow.draft_saved", by="mentor"
    ),
    ("POST", "/admin/flows/<int:flow_id>/migrate"): Recipe(
        lambda w: form(w, f"/admin/flows/{w.flow_id}/migrate", {"version": "2"}, role="mentor"),
        "flow.migration_started",
        by="mentor",
    ),
    ("POST", "/admin/flows/import"): Recipe(import_flow, "flow.imported", by="mentor"),
    ("POST", "/admin/flows/<int:flow_id>/publish"): Recipe(
        lambda w: form(w, f"/admin/flows/{w.flow_id}/publish", role="mentor"),
        "flow.published",
        by="mentor",
        setup=edit_draft,
    ),
    ("POST", "/admin/flows/<int:flow_id>/rollback"): Recipe(
        lambda w: form(w, f"/admin/flows/{w.flow_id}/rollback", {"version": "1"}, role="mentor"),
        "flow.rolled_back",
        by="mentor",
    ),
    ("POST", "/admin/flows/<int:flow_id>/archive"): Recipe(
        lambda w: form(w, f"/admin/flows/{w.flow_id}/archive"), "flow.archived"
    ),
    ("POST", "/admin/jobs/export"): Recipe(
        lambda w: form(w, "/admin/jobs/export", {"flow_id": str(w.flow_id)}, role="mentor"),
        "export.started",
        by="mentor",
    ),
    ("POST", "/admin/sessions/<session_id>/events/<event_id>/retry"): Recipe(
        dead_delivery_retry, "delivery.retried", by="mentor"
    ),
    ("DELETE", "/v1/orgs/<org>/learners/<ext>/tokens"): Recipe(
        lambda w: (
            w.api("POST", "/learners/user-1/tokens", json={}),
            w.api("DELETE", "/learners/user-1/tokens"),
        )[1],
        "learner_tokens.revoked",
        by="key",
    ),
    ("POST", "/v1/orgs/<org>/sessions/<session_id>/tokens"): Recipe(
        lambda w: w.api("POST", f"/sessions/{w.session_id}/tokens"),
        "session_token.replaced",
        by="key",
    ),
    ("POST", "/admin/settings/general/retention"): Recipe(
        lambda w: form(w, "/admin/settings/general/retention", {"retention_days": "30"}),
        "settings.retention_changed",
    ),
    ("POST", "/admin/webhooks/new"): Recipe(
        lambda w: form(w, "/admin/webhooks/new", {"url": HOOK_URL}), "webhook.created"
    ),
    ("POST", "/admin/webhooks/<int:webhook_id>/edit"): Recipe(
        lambda w: form(w, "/admin" + hook(w, "/edit"), {"url": HOOK_URL, "enabled": "on"}),
        "webhook.updated",
        setup=make_webhook,
    ),
    ("POST", "/admin/webhooks/<int:webhook_id>/rotate"): Recipe(
        lambda w: form(w, "/admin" + hook(w, "/rotate")),
        "webhook.secret_rotated",
        setup=make_webhook,
    ),
    ("POST", "/admin/webhooks/<int:webhook_id>/delete"): Recipe(
        lambda w: form(w, "/admin" + hook(w, "/delete")), "webhook.deleted", setup=make_webhook
    ),
    ("POST", "/admin/webhooks/<int:webhook_id>/deliveries/<event_id>/replay"): Recipe(
        lambda w: form(w, "/admin" + hook(w, f"/deliveries/{w.extra['event']}/replay")),
        "webhook.replayed",
        setup=make_webhook,
    ),
    ("POST", "/admin/webhooks/<int:webhook_id>/replay-failed"): Recipe(
        lambda w: form(w, "/admin" + hook(w, "/replay-failed"), {"since": "2020-01-01T00:00"}),
        "webhook.failed_replayed",
        setup=make_webhook,
    ),
    ("POST", "/v1/orgs/<org>/webhooks"): Recipe(
        lambda w: w.api("POST", "/webhooks", json={"url": HOOK_URL}), "webhook.created", by="key"
    ),
    ("PATCH", "/v1/orgs/<org>/webhooks/<int:webhook_id>"): Recipe(
        lambda w: w.api("PATCH", hook(w), json={"description": "CRM"}),
        "webhook.updated",
        by="key",
        setup=make_webhook,
    ),
    ("DELETE", "/v1/orgs/<org>/webhooks/<int:webhook_id>"): Recipe(
        lambda w: w.api("DELETE", hook(w)), "webhook.deleted", by="key", setup=make_webhook
    ),
    ("POST", "/v1/orgs/<org>/webhooks/<int:webhook_id>/rotate-secret"): Recipe(
        lambda w: w.api("POST", hook(w, "/rotate-secret")),
        "webhook.secret_rotated",
        by="key",
        setup=make_webhook,
    ),
    ("POST", "/v1/orgs/<org>/webhooks/<int:webhook_id>/deliveries/<event_id>/replay"): Recipe(
        lambda w: w.api("POST", hook(w, f"/deliveries/{w.extra['event']}/replay")),
        "webhook.replayed",
        by="key",
        setup=make_webhook,
    ),
    ("POST", "/v1/orgs/<org>/webhooks/<int:webhook_id>/replay"): Recipe(
        lambda w: w.api("POST", hook(w, "/replay"), json={"since": "2020-01-01T00:00:00Z"}),
        "webhook.failed_replayed",
        by="key",
        setup=make_webhook,
    ),
    ("DELETE", "/v1/orgs/<org>/learners/<ext>"): Recipe(
        lambda w: w.api("DELETE", "/learners/user-9"),
        "learner.erasure_requested",
        by="key",
        setup=make_webhook,
    ),
    ("DELETE", "/v1/orgs/<org>/sessions/<session_id>"): Recipe(
        lambda w: w.api("DELETE", f"/sessions/{w.session_id}"),
        "session.erasure_requested",
        by="key",
    ),
    ("POST", "/admin/learners/<int:learner_id>/erase"): Recipe(
        lambda w: form(w, f"/admin/learners/{w.extra['learner']}/erase", {"confirm": "user-9"}),
        "learner.erasure_requested",
        setup=make_webhook,
    ),
    ("POST", "/admin/sessions/<session_id>/erase"): Recipe(
        lambda w: form(w, f"/admin/sessions/{w.session_id}/erase", {"confirm": w.session_id}),
        "session.erasure_requested",
    ),
    ("POST", "/v1/orgs/<org>/jobs"): Recipe(
        lambda w: w.api("POST", "/jobs", json={"kind": "export", "flow": "onboarding"}),
        "export.started",
        by="key",
    ),
}


def mutating_routes(app: Flask) -> set[tuple[str, str]]:
    """Every (method, URL rule) of the console and the API that may change something."""
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/v1/", "/admin")):
            continue
        for method in (rule.methods or set()) & MUTATING:
            found.add((method, rule.rule))
    return found


def test_every_mutating_route_is_audited_or_exempt(app: Flask) -> None:
    routes = mutating_routes(app)
    unlisted = routes - set(AUDITED) - set(NOT_AUDITED)
    assert not unlisted, (
        "These routes change something but are neither audited (AUDITED: a recipe and its "
        f"action) nor exempt with a reason (NOT_AUDITED): {sorted(unlisted)}"
    )
    assert not set(AUDITED) & set(NOT_AUDITED)
    assert set(AUDITED) | set(NOT_AUDITED) <= routes, "listed routes that no longer exist"
    assert all(reason.strip() for reason in NOT_AUDITED.values())


def entries(world: World) -> list[AuditEntry]:
    db.session.rollback()
    return list(
        db.session.scalars(
            sa.select(AuditEntry)
            .where(AuditEntry.org_id == world.keys.org.id)
            .order_by(AuditEntry.id)
        )
    )


@pytest.mark.parametrize("route", sorted(AUDITED), ids=lambda route: f"{route[0]} {route[1]}")
def test_each_audited_route_writes_exactly_one_entry(world: World, route) -> None:
    recipe = AUDITED[route]
    if recipe.setup:
        recipe.setup(world)
    before = len(entries(world))
    response = recipe.call(world)
    assert response.status_code < 400, (
        route,
        response.status_code,
        response.get_data(as_text=True)[:500],
    )
    new = entries(world)[before:]
    assert [entry.action for entry in new] == [recipe.action]
    (entry,) = new
    if recipe.by == "key":
        assert entry.actor == f"{world.sk_prefix}…"
    else:
        assert entry.actor == world.emails.get(recipe.by, recipe.by)
    assert entry.target
    recorded = json.dumps([entry.before, entry.after])
    for secret in (world.keys.sk, world.keys.pk, INTEGRATION_KEY, world.session_token):
        assert secret not in recorded
    shown = SECRET_KEY_SHOWN.search(response.get_data(as_text=True))
    if shown:
        assert shown.group(1) not in recorded


def test_a_flow_started_from_a_title_is_audited_as_created(world: World) -> None:
    """The "new flow" form's other path (a title, no document) creates a flow too."""
    before = len(entries(world))
    response = form(world, "/admin/flows/new", {"title": "Pricing workshop"}, role="mentor")
    assert response.status_code == 302
    new = entries(world)[before:]
    assert [(entry.action, entry.actor) for entry in new] == [
        ("flow.created", world.emails["mentor"])
    ]
    assert new[0].after == {"title": "Pricing workshop"}


def test_the_trail_is_listed_newest_first_with_filters_and_pages(world: World) -> None:
    form(world, "/admin/settings/keys/new", {"kind": "secret"})
    form(world, f"/admin/settings/keys/{key_id(world)}/revoke")
    world.api("POST", "/jobs", json={"kind": "export", "flow": "onboarding"})
    listed = world.api("GET", "/audit")
    assert listed.status_code == 200
    actions = [item["action"] for item in listed.json["items"]]
    assert actions == ["export.started", "key.revoked", "key.created"]
    assert listed.json["next_cursor"] is None
    revoked = listed.json["items"][1]
    assert revoked["actor"] == world.emails["admin"]
    assert revoked["before"]["revoked"] is False and revoked["after"]["revoked"] is True
    keys_only = world.api("GET", "/audit?action=key").json["items"]
    assert [item["action"] for item in keys_only] == ["key.revoked", "key.created"]
    by_key = world.api("GET", f"/audit?actor={world.sk_prefix}…").json["items"]
    assert [item["action"] for item in by_key] == ["export.started"]
    first = world.api("GET", "/audit?limit=2").json
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = world.api("GET", f"/audit?limit=2&after={first['next_cursor']}").json
    assert [item["action"] for item in rest["items"]] == ["key.created"]
    assert rest["next_cursor"] is None
    assert world.api("GET", "/audit?after=bogus").status_code == 422


def test_the_audit_page_is_for_admins_and_owners(world: World) -> None:
    form(world, f"/admin/settings/keys/{key_id(world)}/revoke")
    page = world.console("admin").get("/admin/audit/?action=key.revoked")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "key.revoked" in body and world.emails["admin"] in body
    assert world.console("owner").get("/admin/audit/").status_code == 200
    assert world.console("mentor").get("/admin/audit/").status_code == 403


def test_an_api_key_of_another_org_or_kind_cannot_read_the_trail(world: World, create_org) -> None:
    other = create_org(name="Other")
    client = world.app.test_client()
    url = f"/v1/orgs/{world.slug}/audit"
    assert client.get(url, headers={"Authorization": f"Bearer {other.sk}"}).status_code == 404
    assert client.get(url, headers={"Authorization": f"Bearer {world.keys.pk}"}).status_code == 403


def test_a_change_that_fails_leaves_no_entry(world: World) -> None:
    # The entry is in the change's transaction: an invalid origin changes nothing, and records
    # nothing.
    response = form(world, "/admin/settings/general/origins", {"allowed_origins": "not a url"})
    assert response.status_code == 422
    assert entries(world) == []


def test_summaries_leave_secrets_out() -> None:
    assert audit.summary(
        {"api_key": "x", "secret": "y", "token_hash": "z", "url": "https://a", "n": {"password": 1}}
    ) == {"url": "https://a", "n": {}}


def test_operator_cli_changes_are_audited_as_cli(cli, tmp_path) -> None:  # noqa: F811
    cli("org", "create", "acme", "--name", "Acme")
    secret = cli("key", "create", "acme", "--kind", "secret").stdout.strip().splitlines()[-1]
    cli("flow", "push", "acme", str(SMALL_FLOW), "--publish")
    cli("org", "set", "acme", "--allowed-origins", "https://app.example")
    cli(
        "staff",
        "create",
        "ops@acme.example",
        "--org",
        "acme",
        "--role",
        "admin",
        stdin="a long password\n",
    )
    cli("key", "revoke", "acme", secret[:11])
    database = sqlite3.connect(tmp_path / "instance" / "mentorflow.db")
    rows = database.execute("SELECT actor, action FROM audit_entries ORDER BY id").fetchall()
    database.close()
    assert rows == [
        ("cli", "key.created"),
        ("cli", "flow.created"),
        ("cli", "flow.published"),
        ("cli", "settings.changed"),
        ("cli", "member.added"),
        ("cli", "key.revoked"),
    ]
