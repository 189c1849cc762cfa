"""Staff accounts against an attacker: invitations, sign-in, sessions, and what the logs keep."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import sqlalchemy as sa
import werkzeug.security
from flask import Flask

from console_client import PASSWORD, Console, add_staff, csrf_token
from mentorflow.cli.staff import staff as staff_cli
from mentorflow.platform.db import DriverStatement, begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Membership, Org, StaffUser

LINK = re.compile(r'id="invitation-link"[^>]*>http://localhost/admin/invite/#([^<]+)<')
VICTIM = "victim@hire.example"


def text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def signed_in(app: Flask, email: str, password: str = PASSWORD) -> Console:
    console = Console(app.test_client())
    assert console.login(email, password).status_code == 302
    return console


def invite(console: Console, email: str, role: str) -> str:
    """Invite ``email``; return the token of the link the inviter is shown."""
    response = console.post("/admin/settings/members/invite", {"email": email, "role": role})
    assert response.status_code == 201, text(response)
    return LINK.search(text(response)).group(1)


def open_invitation(console: Console, token: str, **fields: str) -> Any:
    data = {"csrf_token": csrf_token(console.client, "/admin/invite/"), "token": token, **fields}
    return console.client.post("/admin/invite/", data=data)


def role_in(org: Org, email: str) -> str | None:
    db.session.rollback()
    role = db.session.scalar(
        sa.select(Membership.role)
        .join(StaffUser)
        .where(Membership.org_id == org.id, StaffUser.email == email)
    )
    return None if role is None else str(role)


def account(email: str) -> StaffUser | None:
    db.session.rollback()
    return db.session.scalar(sa.select(StaffUser).where(StaffUser.email == email))


def can_use_console(console: Console) -> bool:
    response = console.get("/admin/settings/")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


@pytest.fixture
def orgs(create_org) -> tuple[Org, Org]:
    """Org A, whose admin is the attacker, and org B, which will hire the victim."""
    a, b = create_org(name="Org A"), create_org(name="Org B")
    add_staff(a.org, "attacker@a.example", "admin")
    add_staff(b.org, "owner@b.example", "owner")
    return a.org, b.org


# Invitations: the link is the proof, and an existing account must sign in as itself.


def test_an_invitation_makes_no_account_without_its_link(ctx: Flask, orgs) -> None:
    org_a, _ = orgs
    attacker = signed_in(ctx, "attacker@a.example")
    token = invite(attacker, VICTIM, "viewer")
    digest = next(iter(fresh_settings(org_a)["invitations"]))
    # What another admin of A sees (the members page, cancel links) is no token.
    for guess in (digest, f"{org_a.id}.{digest}", f"{org_a.id}.", token[:-1], ""):
        response = open_invitation(
            attacker, guess, join="1", password="chosen by attacker", confirm="chosen by attacker"
        )
        assert response.status_code in (200, 404), guess
        assert account(VICTIM) is None, guess
    assert role_in(org_a, VICTIM) is None


def test_an_existing_account_accepts_only_signed_in_as_itself(ctx: Flask, orgs) -> None:
    org_a, org_b = orgs
    add_staff(org_b, VICTIM, "mentor")
    password_hash = account(VICTIM).password_hash
    attacker = signed_in(ctx, "attacker@a.example")
    token = invite(attacker, VICTIM, "admin")

    # The inviter holds the link, but neither their own session nor the victim's password
    # typed into the invitation page makes them the victim.
    page = open_invitation(attacker, token)
    assert "sign in to it to accept" in text(page) and 'type="password"' not in text(page)
    assert open_invitation(attacker, token, join="1").status_code == 403
    stranger = Console(ctx.test_client())
    assert open_invitation(stranger, token, join="1", password=PASSWORD).status_code == 403
    assert role_in(org_a, VICTIM) is None
    assert account(VICTIM).password_hash == password_hash  # nothing overwritten

    victim = signed_in(ctx, VICTIM)
    assert open_invitation(victim, token, join="1").status_code == 302
    assert role_in(org_a, VICTIM) == "admin" and role_in(org_b, VICTIM) == "mentor"


def test_an_account_squatted_through_an_invitation_is_lost_to_a_password_reset(
    ctx: Flask, orgs
) -> None:
    """Org A's admin uses their own invitation to make the future hire's account first."""
    _, org_b = orgs
    attacker = signed_in(ctx, "attacker@a.example")
    token = invite(attacker, VICTIM, "viewer")
    squatter = Console(ctx.test_client())
    joined = open_invitation(
        squatter, token, join="1", password="squatter's pass", confirm="squatter's pass"
    )
    assert joined.status_code == 302 and can_use_console(squatter)

    # Org B invites the hire; the squatter, signed in as the account, has no link of B's.
    invite(signed_in(ctx, "owner@b.example"), VICTIM, "admin")
    assert open_invitation(squatter, token, join="1").status_code == 404  # A's link is used up
    assert role_in(org_b, VICTIM) is None

    # B's operator gives the real person the account: every session of the squatter ends.
    result = _cli(
        ctx, "create", VICTIM, "--org", org_b.slug, "--role", "admin", input="the hire's pw 1\n"
    )
    assert result.exit_code == 0, result.output
    assert not can_use_console(squatter)
    assert Console(ctx.test_client()).login(VICTIM, "squatter's pass").status_code == 401


def _cli(app: Flask, *args: str, input: str | None = None) -> Any:
    return app.test_cli_runner().invoke(staff_cli, list(args), input=input)


def fresh_settings(org: Org) -> dict[str, Any]:
    db.session.rollback()
    return db.session.get(Org, org.id).settings


# Sign-in: an unknown email costs what a known one does, and answers the same.


def test_unknown_and_known_emails_answer_alike(
    ctx: Flask, orgs, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = []
    real = werkzeug.security._hash_internal

    def counting(*args: Any) -> Any:
        hashed.append(args[0])
        return real(*args)

    monkeypatch.setattr(werkzeug.security, "_hash_internal", counting)

    def attempt(email: str) -> tuple[int, str]:
        console = Console(ctx.test_client())
        response = console.login(email, "not the password")
        body = re.sub(r'value="[^"]+"', "", text(response))  # the CSRF tokens differ
        return response.status_code, body.replace(email, "EMAIL")

    attempt("warm-up@nowhere.example")
    hashed.clear()
    unknown = attempt("nobody@nowhere.example")
    assert len(hashed) == 1  # a password hash was checked for an unknown email
    known = attempt("attacker@a.example")
    assert len(hashed) == 2
    assert hashed[0] == hashed[1]  # with the same method and cost
    assert unknown == known and unknown[0] == 401


# Sessions: sign-out and a new password end every session of the account.


def steal_cookie(console: Console, app: Flask) -> Console:
    """Return another browser holding a copy of ``console``'s session cookie."""
    cookie = console.client.get_cookie("session")
    thief = Console(app.test_client())
    thief.client.set_cookie("session", cookie.value)
    return thief


def test_a_cookie_captured_before_sign_out_stops_working(ctx: Flask, orgs) -> None:
    owner = signed_in(ctx, "owner@b.example")
    thief = steal_cookie(owner, ctx)
    assert can_use_console(thief)
    other_device = signed_in(ctx, "owner@b.example")
    bystander = signed_in(ctx, "attacker@a.example")

    signed_out = owner.post("/admin/logout")
    assert signed_out.status_code == 302 and "/admin/login" in signed_out.location
    assert not can_use_console(owner)
    assert not can_use_console(thief)
    assert not can_use_console(other_device)  # sign out everywhere
    assert can_use_console(bystander)  # other accounts keep their sessions
    assert can_use_console(signed_in(ctx, "owner@b.example"))


def test_a_new_password_ends_every_other_session(ctx: Flask, orgs) -> None:
    owner = signed_in(ctx, "owner@b.example")
    thief = steal_cookie(owner, ctx)
    other_device = signed_in(ctx, "owner@b.example")
    page = owner.get("/admin/account")
    assert page.status_code == 200 and "Change password" in text(page)

    def change(current: str, new: str, confirm: str) -> Any:
        return owner.post(
            "/admin/account",
            {"current": current, "password": new, "confirm": confirm},
            form_page="/admin/account",
        )

    wrong = change("not my password", "a new password", "a new password")
    assert wrong.status_code == 401 and "not your current password" in text(wrong)
    short = change(PASSWORD, "short", "short")
    assert short.status_code == 422 and "Use at least 8 characters." in text(short)
    assert can_use_console(thief) and can_use_console(other_device)

    changed = change(PASSWORD, "a new password", "a new password")
    assert changed.status_code == 302
    assert can_use_console(owner)  # this session goes on
    assert not can_use_console(thief) and not can_use_console(other_device)
    assert Console(ctx.test_client()).login("owner@b.example").status_code == 401
    assert can_use_console(signed_in(ctx, "owner@b.example", "a new password"))


def test_operators_sign_an_account_out_everywhere(ctx: Flask, orgs) -> None:
    owner = signed_in(ctx, "owner@b.example")
    result = _cli(ctx, "sign-out", "Owner@B.example")
    assert result.exit_code == 0 and "signed out" in result.output
    assert not can_use_console(owner)
    unknown = _cli(ctx, "sign-out", "nobody@b.example")
    assert unknown.exit_code != 0 and "no staff account" in unknown.output


# Logs: database errors carry no SQL parameters.


def test_database_errors_name_no_parameters(ctx: Flask, orgs) -> None:
    secret = "learner-answer-5f3a9c"
    begin_write(db.session)
    db.session.add(StaffUser(email="owner@b.example", password_hash=secret))
    with pytest.raises(sa.exc.IntegrityError) as orm_error:
        db.session.flush()
    db.session.rollback()
    assert secret not in str(orm_error.value)

    statement = DriverStatement(
        sa.insert(StaffUser.__table__), ["email", "password_hash", "is_superuser", "created_at"]
    )
    begin_write(db.session)
    with pytest.raises(sa.exc.IntegrityError) as driver_error:
        statement.execute(
            db.session.connection(),
            {
                "email": "owner@b.example",
                "password_hash": secret,
                "is_superuser": False,
                "created_at": utcnow(),
                "session_generation": 0,
            },
        )
    db.session.rollback()
    assert secret not in str(driver_error.value)


# SQLite stores NUL characters; only PostgreSQL refuses the value and names it in its error.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True, scope="session")
def test_postgresql_refusing_a_value_does_not_log_it(ctx: Flask, orgs) -> None:
    assert db.engine.dialect.name == "postgresql"
    secret = "learner-answer-\x00-7d1e"
    begin_write(db.session)
    db.session.add(StaffUser(email="nul@b.example", password_hash=secret))
    with pytest.raises(sa.exc.DataError) as refused:
        db.session.flush()
    db.session.rollback()
    assert "learner-answer-" not in str(refused.value)
