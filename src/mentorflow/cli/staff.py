"""``mentorflow staff``: create staff users and end their sessions."""

from __future__ import annotations

import sys

import click
import sqlalchemy as sa
from flask.cli import with_appcontext

from mentorflow.cli.common import fail, org_for_write
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.accounts import end_sessions, find_staff
from mentorflow.tenants.models import Org, Role


@click.group()
def staff() -> None:
    """Manage console staff."""


@staff.command("create")
@click.argument("email")
@click.option("--org", "org_slug", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@with_appcontext
def staff_create(email: str, org_slug: str, role: str) -> None:
    """Create a staff user; the password is read from stdin."""
    password = (
        click.prompt("Password", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()
    )
    try:
        user = tenant_services.create_staff(
            email, password.rstrip("\n"), org_for_write(org_slug), Role(role)
        )
    except tenant_services.TenantError as exc:
        fail(str(exc))
    org_id = db.session.scalar(sa.select(Org.id).where(Org.slug == org_slug))
    audit.record(org_id, "member.added", f"member:{user.email}", after={"role": role})
    db.session.commit()
    click.echo(f"{user.email} is {role} of {org_slug}")


@staff.command("sign-out")
@click.argument("email")
@with_appcontext
def staff_sign_out(email: str) -> None:
    """End every console session of EMAIL (a lost laptop, a leaked cookie)."""
    begin_write(db.session)
    user = find_staff(email)
    if user is None:
        fail(f"no staff account '{email.strip().lower()}'")
    end_sessions(user)
    db.session.commit()
    click.echo(f"every console session of {user.email} is signed out")
