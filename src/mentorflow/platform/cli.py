"""The operator CLI: ``mentorflow …`` (a Flask CLI group, so ``db`` comes from Flask-Migrate)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from mentorflow.flows import services as flow_services
from mentorflow.flows.document import DocumentError, dump_document, load_document
from mentorflow.flows.legacy_cli import legacy
from mentorflow.platform.app import create_app
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.progress import run_and_wait
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import KeyKind, Role


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _org(slug: str) -> Any:
    # Every command that names an org goes on to write: take SQLite's write lock up front.
    begin_write(db.session)
    try:
        return tenant_services.get_org(slug)
    except tenant_services.TenantError as exc:
        _fail(str(exc))


@click.group(
    cls=FlaskGroup,
    create_app=create_app,
    add_version_option=False,
    help="Operate a mentorflow installation.",
)
def main() -> None:
    """Run mentorflow commands."""


@main.group()
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
        _fail(str(exc))
    db.session.commit()
    click.echo(f"created organization {created.slug} ({created.name})")


@org.command("set")
@click.argument("slug")
@click.option("--allowed-origins", help="Comma-separated browser origins for CORS ('' clears).")
@click.option("--abandon-after", help="Inactivity before a session is abandoned: 30m, 12h, 7d, 2w.")
@with_appcontext
def org_set(slug: str, allowed_origins: str | None, abandon_after: str | None) -> None:
    """Change an organization's settings."""
    target = _org(slug)
    try:
        tenant_services.update_org_settings(
            target,
            allowed_origins=None if allowed_origins is None else allowed_origins.split(","),
            abandon_after=None
            if abandon_after is None
            else tenant_services.parse_duration(abandon_after),
        )
    except tenant_services.TenantError as exc:
        _fail(str(exc))
    db.session.commit()
    ttl = target.abandon_after(current_app.config["ABANDON_AFTER"])
    origins = ", ".join(target.allowed_origins) or "(none)"
    click.echo(f"{target.slug}: allowed origins {origins}; abandon after {ttl}s")


@org.command("integrate")
@click.argument("slug")
@click.argument("sink", type=click.Choice(["posthog", "memory"]))
@click.option("--api-key", help="The org's own key for the service (stored encrypted).")
@click.option("--url", help="The service's host or base URL.")
@click.option(
    "--send-answers/--no-send-answers",
    default=None,
    help="PostHog only: include answers in event properties (off by default).",
)
@click.option("--clear", is_flag=True, help="Forget the org's credentials; use the platform's.")
@with_appcontext
def org_integrate(
    slug: str,
    sink: str,
    api_key: str | None,
    url: str | None,
    send_answers: bool | None,
    clear: bool,
) -> None:
    """Give an organization its own PostHog or Supermemory credentials."""
    target = _org(slug)
    try:
        tenant_services.set_integration(
            target,
            sink,
            current_app.config,
            api_key=api_key,
            url=url,
            send_answers=send_answers,
            clear=clear,
        )
    except tenant_services.TenantError as exc:
        _fail(str(exc))
    db.session.commit()
    shown = {
        k: v
        for k, v in target.settings["integrations"].get(sink, {}).items()
        if k != "api_key_encrypted"
    }
    has_key = "api_key_encrypted" in target.settings["integrations"].get(sink, {})
    click.echo(f"{slug}: {sink} {'(own key) ' if has_key else ''}{shown or '(platform defaults)'}")


@main.group()
def key() -> None:
    """Manage API keys."""


@key.command("create")
@click.argument("org_slug", metavar="ORG")
@click.option("--kind", type=click.Choice([k.value for k in KeyKind]), required=True)
@with_appcontext
def key_create(org_slug: str, kind: str) -> None:
    """Create an API key; it is printed once, as the last line."""
    api_key, secret = tenant_services.create_api_key(_org(org_slug), KeyKind(kind))
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
        revoked = tenant_services.revoke_api_key(_org(org_slug), prefix)
    except tenant_services.TenantError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"revoked {revoked[0].prefix}…")


@main.group()
def flow() -> None:
    """Author and publish flows."""


def read_document(path: Path) -> dict[str, Any]:
    """Load and validate a flow document file, failing with the file name and field paths."""
    try:
        return load_document(path.read_bytes())
    except OSError as exc:
        _fail(f"{path}: {exc.strerror}")
    except DocumentError as exc:
        lines = "\n".join(
            f"  {path}:{error.line}: {error}" if error.line else f"  {path}: {error}"
            for error in exc.errors
        )
        _fail(f"{path}: the flow document is not valid:\n{lines}")
    raise AssertionError("unreachable")


@flow.command("push")
@click.argument("org_slug", metavar="ORG")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--publish", is_flag=True, help="Publish the draft as a new version.")
@click.option("--notes", help="Publish notes.")
@with_appcontext
def flow_push(org_slug: str, file: Path, publish: bool, notes: str | None) -> None:
    """Create or update a flow's draft from a YAML or JSON document."""
    target = _org(org_slug)
    definition = read_document(file)
    pushed, created = flow_services.save_draft(target, definition)
    verb = "created" if created else "updated"
    message = f"{verb} draft of {pushed.slug} (revision {pushed.draft_revision})"
    if publish:
        version, new = flow_services.publish_version(pushed, notes=notes, by="cli")
        message += (
            f"; published version {version.number}"
            if new
            else (f"; version {version.number} already has this content")
        )
    db.session.commit()
    click.echo(message)


@flow.command("pull")
@click.argument("org_slug", metavar="ORG")
@click.argument("slug")
@click.option("--version", "number", type=int, help="A published version (default: the draft).")
@with_appcontext
def flow_pull(org_slug: str, slug: str, number: int | None) -> None:
    """Print a flow's draft, or one of its versions, as YAML."""
    try:
        found = flow_services.get_flow(_org(org_slug), slug)
        definition = (
            found.draft if number is None else flow_services.get_version(found, number).definition
        )
    except flow_services.FlowError as exc:
        _fail(str(exc))
    click.echo(dump_document(definition), nl=False)


@flow.command("rollback")
@click.argument("org_slug", metavar="ORG")
@click.argument("slug")
@click.argument("number", metavar="VERSION", type=int)
@with_appcontext
def flow_rollback(org_slug: str, slug: str, number: int) -> None:
    """Publish an older version of a flow again."""
    try:
        found = flow_services.get_flow(_org(org_slug), slug)
        flow_services.rollback_flow(found, number, by="cli")
    except flow_services.FlowError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"{slug}: version {number} is published again")


@main.group()
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
            email, password.rstrip("\n"), _org(org_slug), Role(role)
        )
    except tenant_services.TenantError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"{user.email} is {role} of {org_slug}")


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def serve(host: str, port: int) -> None:
    """Serve the API and console with gunicorn."""
    from mentorflow.platform.server import run_gunicorn

    run_gunicorn(
        host,
        port,
        workers=int(current_app.config["WEB_CONCURRENCY"]),
        timeout=int(current_app.config["WEB_TIMEOUT"]),
    )


@main.command("worker")
@click.option(
    "--concurrency", type=int, help="Worker processes (default MENTORFLOW_WORKER_CONCURRENCY)."
)
@click.option("--loglevel", default="INFO", show_default=True)
@with_appcontext
def worker(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker that delivers events and runs jobs."""
    processes = concurrency or int(current_app.config["WORKER_CONCURRENCY"])
    current_app.extensions["celery"].worker_main(
        ["worker", f"--loglevel={loglevel}", f"--concurrency={processes}"]
    )


@main.command("beat")
@click.option("--loglevel", default="INFO", show_default=True)
@with_appcontext
def beat(loglevel: str) -> None:
    """Run the one Celery beat: delivery sweep, abandonment, idempotency pruning."""
    current_app.extensions["celery"].start(["beat", f"--loglevel={loglevel}"])


@main.command("up")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--verbose", is_flag=True, help="Also show the worker's and beat's routine lines.")
def up(host: str, port: int, verbose: bool) -> None:
    """Run the web server, a worker and the beat together until Ctrl-C (development)."""
    from mentorflow.platform.supervisor import run_up

    command = [sys.executable, "-m", "mentorflow.platform.cli"]
    sys.exit(run_up(command, host, port, verbose=verbose))


@main.command("export")
@click.argument("org_slug", metavar="ORG")
@click.argument("flow_slug", metavar="FLOW")
@click.option("--timeout", default=600, show_default=True, help="Seconds to wait for the worker.")
@with_appcontext
def export(org_slug: str, flow_slug: str, timeout: int) -> None:
    """Export a flow's sessions and answers as CSV through a worker, with a progress bar."""
    from mentorflow.worker import jobs

    target = _org(org_slug)
    try:
        job = jobs.create_export(target, flow_slug, by="cli")
    except jobs.JobError as exc:
        _fail(str(exc))
    db.session.commit()
    job_id = job.id
    job = run_and_wait(job_id, timeout)
    if job.status != "completed":
        _fail(f"job {job_id} {job.status}: {job.error or 'no worker picked it up in time'}")
    click.echo(f"exported {job.result['rows']} sessions to {jobs.export_path(job)}")


@main.group()
def deliveries() -> None:
    """Inspect and retry event deliveries."""


@deliveries.command("status")
@with_appcontext
def deliveries_status() -> None:
    """Show pending, delivered and dead deliveries per sink, and the oldest pending age."""
    from mentorflow.worker.delivery import delivery_status

    rows = delivery_status()
    click.echo(f"{'sink':<10} {'pending':>8} {'oldest pending':>15} {'delivered':>10} {'dead':>6}")
    for row in rows:
        oldest = row["oldest_pending_seconds"]
        age = "-" if oldest is None else f"{oldest:.1f}s"
        click.echo(
            f"{row['sink']:<10} {row['pending']:>8} {age:>15} {row['delivered']:>10} "
            f"{row['dead']:>6}"
        )
    if not rows:
        click.echo("(no deliveries yet)")


@deliveries.command("retry")
@click.option("--dead", is_flag=True, help="Also retry dead deliveries.")
@with_appcontext
def deliveries_retry(dead: bool) -> None:
    """Make pending (and with --dead, dead) deliveries due now and wake a worker."""
    from mentorflow.worker import delivery, tasks

    count = delivery.retry_deliveries(dead=dead)
    try:
        tasks.deliver_due_deliveries.apply_async(retry=False)
    except Exception as exc:
        click.echo(f"broker unreachable ({exc}); the beat's sweep will deliver them", err=True)
    click.echo(f"{count} deliveries are due now")


@main.command("demo")
@click.option("--base-url", default="http://127.0.0.1:5000", show_default=True)
@with_appcontext
def demo(base_url: str) -> None:
    """Seed the demo org, staff owner, keys and flow (idempotent) and print them."""
    from mentorflow.platform.demo import print_walkthrough, seed_demo

    print_walkthrough(seed_demo(), base_url)


main.add_command(legacy)

if __name__ == "__main__":
    main()
