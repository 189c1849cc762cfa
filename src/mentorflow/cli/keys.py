"""``mentorflow key``: create and revoke an organization's API keys."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from mentorflow.cli.common import fail, org_for_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import KeyKind


@click.group()
def key() -> None:
    """Manage API keys."""


@key.command("create")
@click.argument("org_slug", metavar="ORG")
@click.option("--kind", type=click.Choice([k.value for k in KeyKind]), required=True)
@with_appcontext
def key_create(org_slug: str, kind: str) -> None:
    """Create an API key; it is printed once, as the last line."""
    api_key, secret = tenant_services.create_api_key(org_for_write(org_slug), KeyKind(kind))
    audit.record(api_key.org_id, "key.created", f"key:{api_key.prefix}", after={"kind": kind})
    db.session.commit()
    click.echo(
        f"created {kind} key {api_key.prefix}… for {org_slug}; it is shown only now:", err=True
    )
    click.echo(secret)


@key.command("revoke")
@click.argument("org_slug", metavar="ORG")
@click.argument("prefix")
@with_appcontext
def key_revoke(org_slug: str, prefix: str) -> None:
    """Revoke an API key by its prefix."""
    try:
        revoked = tenant_services.revoke_api_key(org_for_write(org_slug), prefix)
    except tenant_services.TenantError as exc:
        fail(str(exc))
    for each in revoked:
        audit.record(
            each.org_id,
            "key.revoked",
            f"key:{each.prefix}",
            before={"kind": str(each.kind), "revoked": False},
            after={"kind": str(each.kind), "revoked": True},
        )
    db.session.commit()
    click.echo(f"revoked {revoked[0].prefix}…")
