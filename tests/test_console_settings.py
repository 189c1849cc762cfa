"""Console settings: members and invitations, API keys, CORS origins, integrations, abandonment."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from console_client import PASSWORD, Console, add_staff, csrf_token
from mentorflow.delivery.integrations import set_integration
from mentorflow.delivery.sinks import close_clients
from mentorflow.flows import learner_sessions
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import ApiKey, Membership, Org, Role, StaffUser
from recorder import Recorder

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
WEEK = 7 * 24 * 3600
LINK = re.compile(r'id="invitation-link"[^>]*>(http://localhost/admin/invite/#([^<]+))<')
SECRET = re.compile(r'id="new-key"[^>]*>((?:pk|sk)_[A-Za-z0-9_-]{40,})<')


@pytest.fixture(autouse=True)
def _fresh_sink_clients() -> Iterator[None]:
    yield
    close_clients()


class Studio:
    """An org with one staff member per role, and consoles signed in as them."""

    def __init__(self, app: Flask, keys: Any) -> None:
        self.app, self.keys, self.org, self.slug = app, keys, keys.org, keys.slug
        self.emails = {
            role: add_staff(self.org, f"{role}@{self.slug}.example", role)
            for role in ("owner", "admin", "mentor", "viewer")
        }

    def console(self, role_or_email: str) -> Console:
        console = Console(self.app.test_client())
        response = console.login(self.emails.get(role_or_email, role_or_email))
        assert response.status_code == 302, response.get_data(as_text=True)
        return console

    def user_id(self, role: str) -> int:
        return db.session.scalar(
            sa.select(StaffUser.id).where(StaffUser.email == self.emails[role])
        )

    def settings(self) -> dict[str, Any]:
        return fresh(self.org).settings

    def role_of(self, email: str) -> Role | None:
        db.session.rollback()
        return db.session.scalar(
            sa.select(Membership.role)
            .join(StaffUser)
            .where(Membership.org_id == self.org.id, StaffUser.email == email)
        )


def fresh(obj: Any) -> Any:
    """Return ``obj`` as the database has it now, after the requests' commits."""
    db.session.rollback()
    db.session.refresh(obj)
    return obj


@pytest.fixture
def studio(ctx: Flask, create_org) -> Studio:
    return Studio(ctx, create_org(name="Studio A"))


@pytest.fixture
def other_studio(ctx: Flask, create_org) -> Studio:
    return Studio(ctx, create_org(name="Studio B"))


def text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def invite(console: Console, email: str, role: str = "mentor") -> str:
    """Invite ``email``; return the token of the link (the part after ``#``)."""
    response = console.post("/admin/settings/members/invite", {"email": email, "role": role})
    assert response.status_code == 201, text(response)
    return LINK.search(text(response)).group(2)


def open_invitation(client: Any, token: str, **fields: str) -> Any:
    """Do what the invitation page's script does with the link's token: post it."""
    data = {"csrf_token": csrf_token(client, "/admin/invite/"), "token": token, **fields}
    return client.post("/admin/invite/", data=data)


def join(client: Any, token: str, **fields: str) -> Any:
    """Submit the invitation page's form: join the org."""
    return open_invitation(client, token, join="1", **fields)


def mutating_forms(studio: Studio) -> dict[str, tuple[str, dict[str, str]]]:
    """Every settings form that changes something, by endpoint: its URL and a valid body."""
    key_id = db.session.scalar(sa.select(ApiKey.id).where(ApiKey.org_id == studio.org.id))
    mentor = studio.user_id("mentor")
    return {
        "settings.invite": (
            "/admin/settings/members/invite",
            {"email": "new@example.com", "role": "viewer"},
        ),
        "settings.change_role": (f"/admin/settings/members/{mentor}/role", {"role": "viewer"}),
        "settings.remove_member": (f"/admin/settings/members/{mentor}/remove", {}),
        "settings.cancel_invitation": ("/admin/settings/invitations/0123abcd/cancel", {}),
        "settings.create_key": ("/admin/settings/keys/new", {"kind": "secret"}),
        "settings.revoke_key": (f"/admin/settings/keys/{key_id}/revoke", {}),
        "settings.save_origins": (
            "/admin/settings/general/origins",
            {"allowed_origins": "https://evil.example"},
        ),
        "settings.save_abandonment": (
            "/admin/settings/general/abandonment",
            {"abandon_after": "1h"},
        ),
        "settings.save_analytics": (
            "/admin/settings/general/analytics",
            {"analytics_answers": "y"},
        ),
        "settings.save_retention": ("/admin/settings/general/retention", {"retention_days": "30"}),
        "settings.save_integration": (
            "/admin/settings/integrations/posthog",
            {"api_key": "phc_x", "url": "https://x.example"},
        ),
        "settings.clear_integration": ("/admin/settings/integrations/memory/clear", {}),
        "settings.test_integration": ("/admin/settings/integrations/posthog/test", {}),
    }


# Who may see and change what.


def test_every_settings_form_is_in_the_permission_tests(studio: Studio) -> None:
    endpoints = {
        rule.endpoint
        for rule in studio.app.url_map.iter_rules()
        if rule.endpoint.startswith("settings.") and "POST" in rule.methods
    }
    assert endpoints == set(mutating_forms(studio))


def test_anonymous_visitors_are_sent_to_sign_in(client) -> None:
    for url in ("/admin/settings/", "/admin/settings/keys", "/admin/settings/members"):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login" in response.location


@pytest.mark.parametrize("role", ["viewer", "mentor"])
def test_viewers_and_mentors_see_a_summary_without_secrets(studio: Studio, role: str) -> None:
    begin_write(db.session)
    tenant_services.update_org_settings(studio.org, allowed_origins=["https://learn.example"])
    set_integration(studio.org, "posthog", studio.app.config, api_key="phc_very_secret")
    db.session.commit()
    encrypted = studio.org.settings["integrations"]["posthog"]["api_key_encrypted"]
    console = studio.console(role)

    page = console.get("/admin/settings/")
    body = text(page)
    assert page.status_code == 200
    assert "https://learn.example" in body and "<strong>7d</strong>" in body
    assert ">set</span>" in body
    assert "phc_very_secret" not in body and encrypted not in body
    assert studio.keys.pk[:11] not in body  # not even key prefixes
    assert "/admin/settings/keys" not in body and "Manage" not in body
    for url in (
        "/admin/settings/members",
        "/admin/settings/keys",
        "/admin/settings/general",
        "/admin/settings/integrations",
    ):
        assert console.get(url).status_code == 403, url


@pytest.mark.parametrize("role", ["viewer", "mentor"])
def test_viewers_and_mentors_cannot_change_anything(studio: Studio, role: str) -> None:
    before_settings = studio.settings()
    before_members = db.session.scalar(sa.select(sa.func.count()).select_from(Membership))
    before_keys = db.session.scalars(sa.select(ApiKey.revoked_at)).all()
    console = studio.console(role)
    for url, data in mutating_forms(studio).values():
        response = console.post(url, data)
        assert response.status_code == 403, (url, response.status_code)
    assert studio.settings() == before_settings
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Membership)) == before_members
    assert db.session.scalars(sa.select(ApiKey.revoked_at)).all() == before_keys
    assert studio.role_of(studio.emails["mentor"]) is Role.MENTOR


def test_forms_need_a_csrf_token(studio: Studio) -> None:
    console = studio.console("owner")
    response = console.client.post(
        "/admin/settings/general/abandonment", data={"abandon_after": "1h"}
    )
    assert response.status_code == 400
    assert "abandon_after" not in studio.settings()


def test_another_orgs_staff_get_404_on_the_first_orgs_objects(
    studio: Studio, other_studio: Studio
) -> None:
    token = invite(studio.console("owner"), "someone@example.com")
    digest = next(iter(studio.settings()["invitations"]))
    key_id = db.session.scalar(sa.select(ApiKey.id).where(ApiKey.org_id == studio.org.id))
    mentor = studio.user_id("mentor")
    outsider = other_studio.console("owner")

    for url, data in [
        (f"/admin/settings/members/{mentor}/role", {"role": "viewer"}),
        (f"/admin/settings/members/{mentor}/remove", {}),
        (f"/admin/settings/keys/{key_id}/revoke", {}),
        (f"/admin/settings/invitations/{digest}/cancel", {}),
    ]:
        assert outsider.post(url, data).status_code == 404, url

    assert studio.role_of(studio.emails["mentor"]) is Role.MENTOR
    assert fresh(db.session.get(ApiKey, key_id)).revoked_at is None
    assert digest in studio.settings()["invitations"]
    for url in ("/admin/settings/members", "/admin/settings/keys"):
        body = text(outsider.get(url))
        assert studio.emails["mentor"] not in body and "someone@example.com" not in body
        assert studio.keys.pk[:11] not in body
    still_works = open_invitation(studio.console("owner").client, token)
    assert still_works.status_code == 200 and "Join Studio A" in text(still_works)


# API keys.


def test_a_new_key_is_shown_once_and_authenticates_until_revoked(
    studio: Studio, publish_flow
) -> None:
    publish_flow(studio.org, SMALL_FLOW)
    console = studio.console("admin")

    created = console.post("/admin/settings/keys/new", {"kind": "secret"})
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    secret = SECRET.search(text(created)).group(1)
    assert secret.startswith("sk_") and "shown only this once" in text(created)
    db.session.rollback()
    key = db.session.scalars(sa.select(ApiKey).where(ApiKey.prefix == secret[:11])).one()
    assert key.org_id == studio.org.id and key.key_hash != secret
    assert secret not in str(db.session.execute(sa.select(ApiKey.__table__)).all())

    flow_url = f"/v1/orgs/{studio.slug}/flows/onboarding"
    auth = {"Authorization": f"Bearer {secret}"}
    used = console.client.get(flow_url, headers=auth)
    assert used.status_code == 200
    used.close()  # last_used_at is written once the response is done
    listing = text(console.get("/admin/settings/keys"))
    assert secret not in listing and f"{key.prefix}…" in listing
    row = listing.split(f'data-prefix="{key.prefix}"')[1].split("</tr>")[0]
    assert "secret" in row and "active" in row and "never" not in row  # last used is set

    revoked = console.post(f"/admin/settings/keys/{key.id}/revoke", follow_redirects=True)
    assert f"Revoked {key.prefix}…" in text(revoked)
    assert fresh(key).revoked_at is not None
    assert console.client.get(flow_url, headers=auth).status_code == 401
    row = text(console.get("/admin/settings/keys")).split(f'data-prefix="{key.prefix}"')[1]
    assert "revoked" in row.split("</tr>")[0]
    # The other keys of the org still work.
    other = {"Authorization": f"Bearer {studio.keys.pk}"}
    assert console.client.get(flow_url, headers=other).status_code == 200


def test_an_unknown_key_kind_is_refused(studio: Studio) -> None:
    console = studio.console("admin")
    before = db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey))
    assert console.post("/admin/settings/keys/new", {"kind": "root"}).status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == before


# CORS origins and the abandonment TTL.


def test_allowed_origins_reach_the_api_responses(
    studio: Studio, publish_flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(studio.app.config, "ORG_CACHE_SECONDS", 0)
    publish_flow(studio.org, SMALL_FLOW)
    console = studio.console("admin")

    saved = console.post(
        "/admin/settings/general/origins",
        {
            "allowed_origins": "https://Learn.Example.com/\n\n  http://localhost:3000\nhttps://learn.example.com"
        },
        follow_redirects=True,
    )
    assert "Saved 2 allowed origins" in text(saved)
    assert studio.settings()["allowed_origins"] == [
        "http://localhost:3000",
        "https://learn.example.com",
    ]

    def allowed(origin: str) -> str | None:
        response = console.client.get(
            f"/v1/orgs/{studio.slug}/flows/onboarding",
            headers={"Authorization": f"Bearer {studio.keys.pk}", "Origin": origin},
        )
        assert response.status_code == 200
        return response.headers.get("Access-Control-Allow-Origin")

    assert allowed("https://learn.example.com") == "https://learn.example.com"
    assert allowed("http://localhost:3000") == "http://localhost:3000"
    assert allowed("https://evil.example") is None

    console.post("/admin/settings/general/origins", {"allowed_origins": ""})
    assert studio.settings()["allowed_origins"] == []
    assert allowed("https://learn.example.com") is None


def test_bad_origins_are_refused_line_by_line(studio: Studio) -> None:
    console = studio.console("admin")
    response = console.post(
        "/admin/settings/general/origins",
        {"allowed_origins": "https://ok.example\nlearn.example.com\nhttps://app.example/player\n*"},
    )
    body = text(response)
    assert response.status_code == 422
    assert "Line 2: “learn.example.com” is not an origin" in body
    assert (
        "Line 3: “https://app.example/player”: an origin has no path; use https://app.example"
        in body
    )
    assert "Line 4: “*”: wildcards are not allowed" in body
    assert "Line 1" not in body
    assert "learn.example.com\nhttps://app.example/player" in body  # the text is kept to fix
    assert studio.settings()["allowed_origins"] == []


def test_abandonment_ttl_changes_when_sessions_are_abandoned(
    studio: Studio, publish_flow, learner
) -> None:
    publish_flow(studio.org, SMALL_FLOW)
    walker = learner(studio.keys)
    walker.start("onboarding")
    console = studio.console("admin")
    assert "Currently <strong>7d</strong>, the platform default" in text(
        console.get("/admin/settings/general")
    )

    for bad, message in [
        ("soon", "must look like 30m, 12h, 7d or 2w"),
        ("30s", "at least 1m"),
        ("", "Give a duration"),
    ]:
        response = console.post("/admin/settings/general/abandonment", {"abandon_after": bad})
        assert response.status_code == 422 and message in text(response), bad
    assert "abandon_after" not in studio.settings()

    saved = console.post(
        "/admin/settings/general/abandonment", {"abandon_after": "2h"}, follow_redirects=True
    )
    assert "Sessions idle for 2h are now marked abandoned" in text(saved)
    assert studio.settings()["abandon_after"] == 7200
    assert "<strong>2h</strong>" in text(console.get("/admin/settings/"))

    begin_write(db.session)
    db.session.execute(
        sa.update(LearnerSession)
        .where(LearnerSession.id == walker.session_id)
        .values(last_activity_at=utcnow() - timedelta(hours=3))
    )
    assert learner_sessions.abandon_inactive_sessions(WEEK) == 1
    db.session.commit()
    assert walker.get().json["session"]["status"] == "abandoned"


# Members and roles.


def test_admins_change_roles_and_remove_members_below_owner(studio: Studio) -> None:
    console = studio.console("admin")
    changed = console.post(
        f"/admin/settings/members/{studio.user_id('mentor')}/role",
        {"role": "viewer"},
        follow_redirects=True,
    )
    assert f"{studio.emails['mentor']} is now viewer" in text(changed)
    assert studio.role_of(studio.emails["mentor"]) is Role.VIEWER

    removed = console.post(
        f"/admin/settings/members/{studio.user_id('viewer')}/remove", follow_redirects=True
    )
    assert f"Removed {studio.emails['viewer']}" in text(removed)
    assert studio.role_of(studio.emails["viewer"]) is None
    # The staff account stays; only the membership went.
    assert (
        db.session.scalar(sa.select(StaffUser.id).where(StaffUser.email == studio.emails["viewer"]))
        is not None
    )
    viewer = Console(studio.app.test_client())
    viewer.login(studio.emails["viewer"])
    assert viewer.get("/admin/settings/").status_code == 302


def test_admins_cannot_make_or_touch_owners(studio: Studio) -> None:
    console = studio.console("admin")
    owner = studio.user_id("owner")
    assert (
        console.post(
            f"/admin/settings/members/{studio.user_id('mentor')}/role", {"role": "owner"}
        ).status_code
        == 403
    )
    assert (
        console.post(f"/admin/settings/members/{owner}/role", {"role": "admin"}).status_code == 403
    )
    assert console.post(f"/admin/settings/members/{owner}/remove").status_code == 403
    response = console.post(
        "/admin/settings/members/invite", {"email": "boss@example.com", "role": "owner"}
    )
    assert response.status_code == 403
    assert studio.role_of(studio.emails["owner"]) is Role.OWNER
    assert studio.role_of(studio.emails["mentor"]) is Role.MENTOR
    assert "invitations" not in studio.settings()
    page = text(console.get("/admin/settings/members"))
    assert '<option value="owner"' not in page and "only owners change owners" in page


def test_the_last_owner_can_be_neither_demoted_nor_removed(studio: Studio) -> None:
    console = studio.console("owner")
    me = studio.user_id("owner")
    demoted = console.post(
        f"/admin/settings/members/{me}/role", {"role": "admin"}, follow_redirects=True
    )
    assert "is the last owner of this organization" in text(demoted)
    removed = console.post(f"/admin/settings/members/{me}/remove", follow_redirects=True)
    assert "is the last owner of this organization" in text(removed)
    assert studio.role_of(studio.emails["owner"]) is Role.OWNER

    # With a second owner, the first may step down.
    promoted = console.post(
        f"/admin/settings/members/{studio.user_id('admin')}/role", {"role": "owner"}
    )
    assert promoted.status_code == 302
    assert studio.role_of(studio.emails["admin"]) is Role.OWNER
    assert console.post(f"/admin/settings/members/{me}/role", {"role": "mentor"}).status_code == 302
    assert studio.role_of(studio.emails["owner"]) is Role.MENTOR
    # Now the former admin is the last owner.
    new_owner = studio.console("admin")
    response = new_owner.post(
        f"/admin/settings/members/{studio.user_id('admin')}/remove", follow_redirects=True
    )
    assert "is the last owner" in text(response)
    assert studio.role_of(studio.emails["admin"]) is Role.OWNER


def test_an_unknown_role_is_refused(studio: Studio) -> None:
    console = studio.console("owner")
    response = console.post(
        f"/admin/settings/members/{studio.user_id('mentor')}/role",
        {"role": "superuser"},
        follow_redirects=True,
    )
    assert "Pick one of the roles" in text(response)
    assert studio.role_of(studio.emails["mentor"]) is Role.MENTOR


# Invitations.


def test_an_invitation_link_makes_a_member_once(
    studio: Studio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mentorflow.admin.settings")
    admin = studio.console("admin")
    created = admin.post(
        "/admin/settings/members/invite", {"email": "  New.Mentor@Example.com ", "role": "mentor"}
    )
    body = text(created)
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    assert "No email was sent" in body
    link, token = LINK.search(body).groups()
    assert link == f"http://localhost/admin/invite/#{token}"  # browsers never send a fragment
    assert "no email is sent" in caplog.text
    assert token not in caplog.text  # the log has a fingerprint of the invitation only

    stored = studio.settings()["invitations"]
    assert token not in str(stored)
    ((digest, invitation),) = stored.items()
    assert digest[:8] in caplog.text
    assert invitation["email"] == "new.mentor@example.com" and invitation["role"] == "mentor"
    assert invitation["invited_by"] == studio.emails["admin"]
    listing = text(admin.get("/admin/settings/members"))
    assert "new.mentor@example.com" in listing and token not in listing

    newcomer = Console(studio.app.test_client())
    landing = newcomer.get("/admin/invite/")
    assert landing.status_code == 200 and 'id="open-invitation"' in text(landing)
    script = re.search(r'<script src="([^"]+)"', text(landing)).group(1)
    with newcomer.get(script) as served:
        assert "location.hash" in served.get_data(as_text=True)
    page = open_invitation(newcomer.client, token)
    assert page.status_code == 200 and "Join Studio A" in text(page)

    def accept(password: str, confirm: str) -> Any:
        return join(newcomer.client, token, password=password, confirm=confirm)

    short = accept("short", "short")
    assert short.status_code == 422 and "Use at least 8 characters." in text(short)
    differ = accept("long enough 1", "long enough 2")
    assert differ.status_code == 422 and "The two passwords differ." in text(differ)
    assert studio.role_of("new.mentor@example.com") is None

    joined = accept("a fine password", "a fine password")
    assert joined.status_code == 302 and joined.location.endswith("/admin/")
    assert studio.role_of("new.mentor@example.com") is Role.MENTOR
    assert studio.settings()["invitations"] == {}
    home = newcomer.get("/admin/settings/")
    assert home.status_code == 200 and "You are mentor" in text(home)

    assert open_invitation(newcomer.client, token).status_code == 404
    used = open_invitation(Console(studio.app.test_client()).client, token)
    assert used.status_code == 404 and "used already" in text(used)
    again = Console(studio.app.test_client())
    assert again.login("new.mentor@example.com", "a fine password").status_code == 302


def test_existing_staff_sign_in_to_accept(studio: Studio, other_studio: Studio) -> None:
    email = other_studio.emails["mentor"]
    token = invite(studio.console("owner"), email, "viewer")
    visitor = Console(studio.app.test_client())
    page = text(open_invitation(visitor.client, token))
    assert "has a staff account already: sign in to it to accept" in page
    assert 'type="password"' not in page  # the invitation page checks no password

    refused = join(visitor.client, token, password=PASSWORD)
    assert refused.status_code == 403
    assert studio.role_of(email) is None

    # Signing in brings the invitee back to the invitation, which they confirm.
    signed_in = visitor.client.post(
        "/admin/login?next=/admin/invite/",
        data={"email": email, "password": PASSWORD, "csrf_token": csrf_token(visitor.client)},
    )
    assert signed_in.status_code == 302 and signed_in.location.endswith("/admin/invite/")
    back = visitor.get("/admin/invite/")
    assert back.status_code == 200 and f"You are signed in as {email}" in text(back)
    joined = join(visitor.client, token)
    assert joined.status_code == 302
    assert studio.role_of(email) is Role.VIEWER
    assert other_studio.role_of(email) is Role.MENTOR  # still in their first org, same role
    assert Console(studio.app.test_client()).login(email).status_code == 302  # same password


def test_signed_in_invitees_just_confirm(studio: Studio, other_studio: Studio) -> None:
    email = other_studio.emails["viewer"]
    token = invite(studio.console("owner"), email, "admin")
    invitee = other_studio.console("viewer")
    page = text(open_invitation(invitee.client, token))
    assert "You are signed in as" in page and 'type="password"' not in page
    joined = join(invitee.client, token)
    assert joined.status_code == 302
    assert studio.role_of(email) is Role.ADMIN
    assert invitee.get("/admin/settings/keys").status_code == 200  # now in Studio A, as admin


def test_expired_and_cancelled_links_are_refused(studio: Studio) -> None:
    owner = studio.console("owner")
    expired_token = invite(owner, "late@example.com")
    cancelled_token = invite(owner, "cancelled@example.com")
    replaced_token = invite(owner, "twice@example.com")
    current_token = invite(owner, "twice@example.com")

    begin_write(db.session)
    org = db.session.get(Org, studio.org.id)
    invitations = {
        digest: dict(invitation) for digest, invitation in org.settings["invitations"].items()
    }
    for invitation in invitations.values():
        if invitation["email"] == "late@example.com":
            invitation["expires_at"] = (utcnow() - timedelta(minutes=1)).isoformat()
    org.settings = {**org.settings, "invitations": invitations}
    db.session.commit()
    assert len(invitations) == 3  # the second invitation of twice@ replaced the first

    visitor = Console(studio.app.test_client())
    expired = open_invitation(visitor.client, expired_token)
    assert expired.status_code == 410 and "expired" in text(expired)
    posted = join(
        visitor.client, expired_token, password="a fine password", confirm="a fine password"
    )
    assert posted.status_code == 410
    assert studio.role_of("late@example.com") is None
    assert "expired" in text(owner.get("/admin/settings/members"))

    digest = next(d for d, i in invitations.items() if i["email"] == "cancelled@example.com")
    owner.post(f"/admin/settings/invitations/{digest}/cancel")
    assert open_invitation(visitor.client, cancelled_token).status_code == 404
    assert open_invitation(visitor.client, replaced_token).status_code == 404
    assert open_invitation(visitor.client, current_token).status_code == 200
    for bogus in ("nonsense", f"{studio.org.id}.made-up", digest, "x" * 5000):
        assert open_invitation(visitor.client, bogus).status_code == 404, bogus
    # The token is never in a path: links of the old form are not invitations.
    assert visitor.get(f"/admin/invite/{current_token}").status_code == 404


def test_members_cannot_be_invited_again(studio: Studio) -> None:
    response = studio.console("admin").post(
        "/admin/settings/members/invite", {"email": studio.emails["viewer"], "role": "admin"}
    )
    assert response.status_code == 422
    assert "is already a member of Studio A (viewer)" in text(response)
    bad = studio.console("admin").post(
        "/admin/settings/members/invite", {"email": "not an email", "role": "viewer"}
    )
    assert bad.status_code == 422 and "Invalid email address" in text(bad)
    assert "invitations" not in studio.settings()


# Integrations.


@pytest.fixture
def local_sinks(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the sinks reach the recorder, which listens on 127.0.0.1."""
    monkeypatch.setitem(studio.app.config, "ALLOW_PRIVATE_SINKS", True)


def configure(console: Console, sink: str, **fields: str) -> Any:
    return console.post(f"/admin/settings/integrations/{sink}", fields)


def test_integration_keys_are_write_only(studio: Studio) -> None:
    console = studio.console("admin")
    saved = configure(
        console,
        "posthog",
        api_key="phc_org_secret",
        url="https://eu.i.posthog.com",
        send_answers="y",
    )
    assert saved.status_code == 302
    posthog = studio.settings()["integrations"]["posthog"]
    assert posthog["host"] == "https://eu.i.posthog.com" and posthog["send_answers"] is True
    encrypted = posthog["api_key_encrypted"]
    assert "phc_org_secret" not in encrypted

    page = text(console.get("/admin/settings/integrations"))
    assert "phc_org_secret" not in page and encrypted not in page
    card = page.split('id="integration-posthog"')[1].split('id="integration-memory"')[0]
    assert ">set</span>" in card and "https://eu.i.posthog.com" in card
    assert "sent with events" in card

    # An empty key field keeps the stored key; the checkbox left out turns answers off.
    configure(console, "posthog", api_key="", url="")
    posthog = studio.settings()["integrations"]["posthog"]
    assert posthog["api_key_encrypted"] == encrypted and posthog["send_answers"] is False
    assert posthog["host"] == "https://eu.i.posthog.com"

    cleared = console.post("/admin/settings/integrations/posthog/clear", follow_redirects=True)
    assert "the platform's apply" in text(cleared)
    assert "posthog" not in studio.settings()["integrations"]
    card = text(cleared).split('id="integration-posthog"')[1].split('id="integration-memory"')[0]
    assert ">none</span>" in card


def test_platform_default_credentials_are_named_not_shown(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(studio.app.config, "SUPERMEMORY_API_KEY", "sm_platform_secret")
    page = text(studio.console("viewer").get("/admin/settings/"))
    assert "platform default" in page and "sm_platform_secret" not in page


def test_bad_integration_settings_are_refused(studio: Studio) -> None:
    console = studio.console("admin")
    bad_url = configure(console, "posthog", api_key="phc_x", url="eu.i.posthog.com")
    assert bad_url.status_code == 422 and "Give an http(s) URL" in text(bad_url)
    no_key = configure(console, "memory", url="https://memory.example")
    assert no_key.status_code == 422
    assert "the platform's key is never sent to another host" in text(no_key)
    assert console.post("/admin/settings/integrations/mailchimp", {}).status_code == 404
    assert console.post("/admin/settings/integrations/mailchimp/test").status_code == 404
    assert "integrations" not in studio.settings()


def test_posthog_test_event_reaches_posthog(
    studio: Studio, recorder: Recorder, local_sinks: None
) -> None:
    console = studio.console("admin")
    configure(console, "posthog", api_key="phc_org_key", url=recorder.url)

    sent = console.post("/admin/settings/integrations/posthog/test", follow_redirects=True)
    assert f"PostHog at {recorder.url} accepted the test event" in text(sent)
    (event,) = recorder.posthog_events()
    assert event["event"] == "step.completed"
    assert event["properties"]["session_id"].startswith("console-test-")
    assert event["properties"]["$groups"] == {"organization": studio.slug}
    assert "answer" not in event["properties"]  # send_answers is off
    assert event["uuid"] in text(sent)
    (request,) = [r for r in recorder.requests if r.path == "/batch/"]
    assert request.body["api_key"] == "phc_org_key"


def test_posthog_test_event_failure_is_shown(
    studio: Studio, recorder: Recorder, local_sinks: None
) -> None:
    console = studio.console("admin")
    configure(console, "posthog", api_key="phc_org_key", url=recorder.url)
    recorder.fail("/batch/", 500)
    failed = console.post("/admin/settings/integrations/posthog/test", follow_redirects=True)
    assert "The PostHog test event was not delivered: PostHog answered 500" in text(failed)
    assert recorder.posthog_events() == []


def test_supermemory_test_event_writes_a_document(
    studio: Studio, recorder: Recorder, local_sinks: None
) -> None:
    console = studio.console("owner")
    configure(console, "memory", api_key="sm_org_key", url=recorder.url)

    sent = console.post("/admin/settings/integrations/memory/test", follow_redirects=True)
    assert f"Supermemory at {recorder.url} stored a test document" in text(sent)
    (document,) = recorder.memory_documents()
    assert document["namespace"] == f"mentorflow-{studio.slug}-console-test"
    assert document["id"].startswith("console-test-") and document["id"].endswith("-1")
    assert "Is the integration working?" in document["content"]
    assert document["id"] in text(sent)


def test_supermemory_test_event_failure_is_shown(
    studio: Studio, recorder: Recorder, local_sinks: None
) -> None:
    console = studio.console("admin")
    configure(console, "memory", api_key="sm_org_key", url=recorder.url)
    recorder.fail("/ns/", 401)
    failed = console.post("/admin/settings/integrations/memory/test", follow_redirects=True)
    assert "The Supermemory test event was not delivered: Supermemory answered 401" in text(failed)
    assert recorder.memory_documents() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://0x7f000001",
        "http://2130706433:6379",
        "http://[::1]:5432",
        "http://localhost:9200",
        "http://10.0.0.5",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:169.254.169.254]",
        "http://[fd00:ec2::254]",
    ],
)
def test_an_integration_url_inside_the_network_is_refused_on_save(studio: Studio, url: str) -> None:
    refused = configure(studio.console("admin"), "posthog", api_key="phc_x", url=url)
    assert refused.status_code == 422
    assert "This URL can't receive events: its address is" in text(refused)
    assert "integrations" not in studio.settings()


def test_a_metadata_url_is_refused_even_where_private_sinks_are_allowed(
    studio: Studio, local_sinks: None
) -> None:
    refused = configure(
        studio.console("admin"), "memory", api_key="sm_x", url="http://169.254.169.254"
    )
    assert refused.status_code == 422
    assert "its address is a cloud metadata service" in text(refused)


def test_the_test_event_checks_the_address_when_it_connects(
    studio: Studio, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Saved while allowed (as a name that resolved outside then, before its DNS changed):
    # the guard checks the address again at every connection.
    console = studio.console("admin")
    monkeypatch.setitem(studio.app.config, "ALLOW_PRIVATE_SINKS", True)
    assert configure(console, "posthog", api_key="phc_x", url=recorder.url).status_code == 302
    assert configure(console, "memory", api_key="sm_x", url=recorder.url).status_code == 302
    monkeypatch.setitem(studio.app.config, "ALLOW_PRIVATE_SINKS", False)

    for sink, label in (("posthog", "PostHog"), ("memory", "Supermemory")):
        sent = console.post(f"/admin/settings/integrations/{sink}/test", follow_redirects=True)
        assert (
            f"The {label} test event was not delivered: {label} at {recorder.url} was not "
            "called: its address is not a public one"
        ) in text(sent)
    assert recorder.requests == []


@pytest.mark.parametrize(("sink", "path"), [("posthog", "/batch/"), ("memory", "/ns/")])
def test_the_test_event_never_shows_what_the_host_answered(
    studio: Studio, recorder: Recorder, local_sinks: None, sink: str, path: str
) -> None:
    console = studio.console("admin")
    configure(console, sink, api_key="key_x", url=recorder.url)
    secret = "root:x:0:0:root:/root:/bin/bash"
    recorder.fail(path, 500, body={"detail": secret, "error": secret, "details": secret})
    failed = text(console.post(f"/admin/settings/integrations/{sink}/test", follow_redirects=True))
    assert "answered 500 (a server error)" in failed
    assert secret not in failed


@pytest.mark.parametrize(("sink", "path"), [("posthog", "/batch/"), ("memory", "/ns/")])
def test_the_test_event_does_not_follow_a_redirect(
    studio: Studio, recorder: Recorder, local_sinks: None, sink: str, path: str
) -> None:
    console = studio.console("admin")
    configure(console, sink, api_key="key_x", url=recorder.url)
    recorder.fail(path, 302, headers={"Location": f"{recorder.url}/internal/admin"})
    failed = text(console.post(f"/admin/settings/integrations/{sink}/test", follow_redirects=True))
    assert "answered 302: it answered with a redirect, and redirects are never followed" in failed
    assert [r.path for r in recorder.requests if r.path.startswith("/internal")] == []
    assert len(recorder.requests) == 1


def test_test_event_without_credentials_is_a_dry_run(studio: Studio) -> None:
    sent = studio.console("admin").post(
        "/admin/settings/integrations/posthog/test", follow_redirects=True
    )
    body = text(sent)
    assert "No PostHog API key" in body and "dry run" in body
    written = Path(studio.app.config["INSTANCE_PATH"]) / "outbox-posthog.jsonl"
    assert "console-test-" in written.read_text().splitlines()[-1]
