"""``mentorflow staff``: create staff users."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from mentorflow.cli.common import fail, org_for_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import Role


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
    db.session.commit()
    click.echo(f"{user.email} is {role} of {org_slug}")
