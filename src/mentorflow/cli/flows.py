"""``mentorflow flow``: push, pull and roll back flow documents."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext

from mentorflow.cli.common import WAIT_SECONDS, fail, org_for_write
from mentorflow.cli.progress import run_and_wait
from mentorflow.flows import authoring, migration
from mentorflow.flows.document import DocumentError, dump_document, load_document
from mentorflow.flows.models import Flow
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit
from mentorflow.tenants.models import Org


@click.group()
def flow() -> None:
    """Author and publish flows."""


def read_document(path: Path) -> dict[str, Any]:
    """Load and validate a flow document file, failing with the file name and field paths."""
    try:
        return load_document(path.read_bytes())
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")
    except DocumentError as exc:
        lines = "\n".join(
            f"  {path}:{error.line}: {error}" if error.line else f"  {path}: {error}"
            for error in exc.errors
        )
        fail(f"{path}: the flow document is not valid:\n{lines}")
    raise AssertionError("unreachable")


@flow.command("push")
@click.argument("org_slug", metavar="ORG")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--publish", is_flag=True, help="Publish the draft as a new version.")
@click.option("--notes", help="Publish notes.")
@click.option(
    "--migrate",
    type=click.Choice(["dry-run", "apply"]),
    help="With --publish: report which active sessions of older versions can move to the "
    "published version (dry-run), or move them with a background job and wait for it (apply). "
    "Without it, they stay on their version.",
)
@click.option(
    "--timeout",
    default=600,
    type=WAIT_SECONDS,
    show_default=True,
    help="With --migrate apply: seconds to wait for the worker (1 to 86400).",
)
@with_appcontext
def flow_push(
    org_slug: str,
    file: Path,
    publish: bool,
    notes: str | None,
    migrate: str | None,
    timeout: int,
) -> None:
    """Create or update a flow's draft from a YAML or JSON document."""
    if migrate and not publish:
        fail("--migrate moves sessions to the published version: add --publish")
    target = org_for_write(org_slug)
    definition = read_document(file)
    pushed, created = authoring.save_draft(target, definition)
    verb = "created" if created else "updated"
    message = f"{verb} draft of {pushed.slug} (revision {pushed.draft_revision})"
    audit.record(
        target.id,
        "flow.created" if created else "flow.draft_saved",
        f"flow:{pushed.slug}",
        after={"draft_revision": pushed.draft_revision},
    )
    if publish:
        version, new = authoring.publish_version(pushed, notes=notes, by="cli")
        if new:
            audit.record(
                target.id,
                "flow.published",
                f"flow:{pushed.slug}",
                after={"version": version.number},
            )
        message += (
            f"; published version {version.number}"
            if new
            else (f"; version {version.number} already has this content")
        )
    db.session.commit()
    click.echo(message)
    if migrate:
        move_sessions(target, pushed, apply=migrate == "apply", timeout=timeout)


def move_sessions(org: Org, flow: Flow, *, apply: bool, timeout: int) -> None:
    """Report who can move to the published version; with ``apply``, move them and wait."""
    version = flow.published_version
    plan = migration.dry_run(flow, version)
    movable = [move for move in plan if move.can_move]
    click.echo(
        f"{len(plan)} active session{'s' if len(plan) != 1 else ''} on older versions: "
        f"{len(movable)} can move to version {version.number}, "
        f"{len(plan) - len(movable)} stay pinned"
    )
    for move in plan:
        click.echo(_move_line(move.can_move, asdict(move)))
    if not apply:
        click.echo("(dry run: nothing moved; --migrate apply moves them)")
        return
    if not movable:
        return
    begin_write(db.session)
    job = migration.create_migration(org, flow, version, by="cli")
    db.session.commit()
    job_id = job.id
    job = run_and_wait(job_id, timeout)
    if job.status != "completed":
        fail(f"job {job_id} {job.status}: {job.error or 'no worker picked it up in time'}")
    moved, pinned = job.result["moved"], job.result["pinned"]
    click.echo(
        f"moved {len(moved)} session{'s' if len(moved) != 1 else ''} to version "
        f"{version.number}; {len(pinned)} stayed pinned"
    )
    for move in [*moved, *pinned]:
        click.echo(_move_line(move["reason"] is None, move))


def _move_line(can_move: bool, move: dict[str, Any]) -> str:
    where = f"v{move['from_version']} {move['from_step_id']}"
    if can_move:
        return f"  moves   {move['session_id']}  {move['learner']}  {where} -> {move['to_step_id']}"
    return f"  pinned  {move['session_id']}  {move['learner']}  {where}: {move['reason']}"


@flow.command("pull")
@click.argument("org_slug", metavar="ORG")
@click.argument("slug")
@click.option("--version", "number", type=int, help="A published version (default: the draft).")
@with_appcontext
def flow_pull(org_slug: str, slug: str, number: int | None) -> None:
    """Print a flow's draft, or one of its versions, as YAML."""
    try:
        found = authoring.get_flow(org_for_write(org_slug), slug)
        definition = (
            found.draft if number is None else authoring.get_version(found, number).definition
        )
    except authoring.FlowError as exc:
        fail(str(exc))
    click.echo(dump_document(definition), nl=False)


@flow.command("rollback")
@click.argument("org_slug", metavar="ORG")
@click.argument("slug")
@click.argument("number", metavar="VERSION", type=int)
@with_appcontext
def flow_rollback(org_slug: str, slug: str, number: int) -> None:
    """Publish an older version of a flow again."""
    try:
        found = authoring.get_flow(org_for_write(org_slug), slug)
        before = found.published_version.number if found.published_version else None
        authoring.rollback_flow(found, number, by="cli")
    except authoring.FlowError as exc:
        fail(str(exc))
    audit.record(
        found.org_id,
        "flow.rolled_back",
        f"flow:{slug}",
        before={"version": before},
        after={"version": number},
    )
    db.session.commit()
    click.echo(f"{slug}: version {number} is published again")
