"""``mentorflow flow``: push, pull and roll back flow documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext

from mentorflow.cli.common import fail, org_for_write
from mentorflow.flows import authoring
from mentorflow.flows.document import DocumentError, dump_document, load_document
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit


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
@with_appcontext
def flow_push(org_slug: str, file: Path, publish: bool, notes: str | None) -> None:
    """Create or update a flow's draft from a YAML or JSON document."""
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
