"""``mentorflow org``: create organizations and change their settings."""

from __future__ import annotations

from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from mentorflow.cli.common import fail, org_for_write
from mentorflow.delivery.integrations import set_integration
from mentorflow.delivery.sinks import sink_types
from mentorflow.flows import erasure
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.analytics import analytics_answers as answers_sent
from mentorflow.tenants.analytics import set_analytics_answers


@click.group()
def org() -> None:
    """Manage organizations."""


@org.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="Display name.")
@with_appcontext
def org_create(slug: str, name: str) -> None:
    """Create an organization."""
    begin_write(db.session)
    try:
        created = tenant_services.create_org(slug, name)
    except tenant_services.TenantError as exc:
        fail(str(exc))
    db.session.commit()
    click.echo(f"created organization {created.slug} ({created.name})")


@org.command("set")
@click.argument("slug")
@click.option("--allowed-origins", help="Comma-separated browser origins for CORS ('' clears).")
@click.option(
    "--abandon-after",
    help="Inactivity before a session is abandoned: 30m, 12h, 7d, 2w (1m to 365d).",
)
@click.option(
    "--analytics-answers",
    type=click.Choice(["on", "off"]),
    help="Send step answers and message content to PostHog (off by default: ids, types and "
    "timings only).",
)
@click.option(
    "--retention-days",
    type=int,
    help="Erase completed and abandoned sessions older than N days (1 to 3650; 0 keeps them).",
)
@with_appcontext
def org_set(
    slug: str,
    allowed_origins: str | None,
    abandon_after: str | None,
    analytics_answers: str | None,
    retention_days: int | None,
) -> None:
    """Change an organization's settings."""
    target = org_for_write(slug)
    before = {
        "allowed_origins": target.allowed_origins,
        **_abandon(target),
        "analytics_answers": answers_sent(target.settings),
        "retention_days": erasure.retention_days_of(target),
    }
    if analytics_answers is not None:
        set_analytics_answers(target, analytics_answers == "on")
    try:
        tenant_services.update_org_settings(
            target,
            allowed_origins=None if allowed_origins is None else allowed_origins.split(","),
            abandon_after=None
            if abandon_after is None
            else tenant_services.parse_abandon_after(abandon_after),
        )
        if retention_days is not None:
            erasure.set_retention_days(target, retention_days)
    except (tenant_services.TenantError, erasure.ErasureError) as exc:
        fail(str(exc))
    after = {
        "allowed_origins": target.allowed_origins,
        **_abandon(target),
        "analytics_answers": answers_sent(target.settings),
        "retention_days": erasure.retention_days_of(target),
    }
    audit.record(target.id, "settings.changed", f"org:{target.slug}", before=before, after=after)
    db.session.commit()
    ttl = target.abandon_after(current_app.config["ABANDON_AFTER"])
    origins = ", ".join(target.allowed_origins) or "(none)"
    answers = "on" if answers_sent(target.settings) else "off"
    days = erasure.retention_days_of(target)
    retention = f"{days} days" if days else "kept"
    click.echo(
        f"{target.slug}: allowed origins {origins}; abandon after {ttl}s; "
        f"analytics answers {answers}; retention {retention}"
    )


@org.command("integrate")
@click.argument("slug")
@click.argument("sink", type=click.Choice(list(sink_types)))
@click.option("--api-key", help="The org's own key for the service (stored encrypted).")
@click.option("--url", help="The service's host or base URL.")
@click.option(
    "--send-answers/--no-send-answers",
    default=None,
    help="PostHog only: include answers in event properties (off by default).",
)
@click.option(
    "--personal-api-key",
    help="PostHog only: a personal API key (persons:write) that erasures delete persons with "
    "(stored encrypted).",
)
@click.option("--project-id", help="PostHog only: the project id erasures delete persons in.")
@click.option("--clear", is_flag=True, help="Forget the org's credentials; use the platform's.")
@with_appcontext
def org_integrate(
    slug: str,
    sink: str,
    api_key: str | None,
    url: str | None,
    send_answers: bool | None,
    personal_api_key: str | None,
    project_id: str | None,
    clear: bool,
) -> None:
    """Give an organization its own PostHog or Supermemory credentials."""
    target = org_for_write(slug)
    try:
        set_integration(
            target,
            sink,
            current_app.config,
            api_key=api_key,
            url=url,
            send_answers=send_answers,
            personal_api_key=personal_api_key,
            project_id=project_id,
            clear=clear,
        )
    except tenant_services.TenantError as exc:
        fail(str(exc))
    audit.record(
        target.id,
        "integration.cleared" if clear else "integration.changed",
        f"integration:{sink}",
        after={"url": url, "key_replaced": bool(api_key), "send_answers": send_answers},
    )
    db.session.commit()
    shown = {
        k: v
        for k, v in target.settings["integrations"].get(sink, {}).items()
        if not k.endswith("_encrypted")
    }
    has_key = "api_key_encrypted" in target.settings["integrations"].get(sink, {})
    click.echo(f"{slug}: {sink} {'(own key) ' if has_key else ''}{shown or '(platform defaults)'}")


def _abandon(target: Any) -> dict[str, Any]:
    return {"abandon_after": target.settings.get("abandon_after")}
