"""``mentorflow legacy import``: bring sessions over from the old nested-context app."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from mentorflow.cli.common import WAIT_SECONDS
from mentorflow.cli.progress import run_and_wait
from mentorflow.flows.legacy import (
    LEGACY_IMPORT,
    ImportReport,
    LegacyImportError,
    import_legacy_sessions,
    import_target,
)
from mentorflow.jobs.runner import create_job
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import Org


@click.group("legacy")
def legacy() -> None:
    """Import sessions from the old client-synced app."""


@legacy.command("import")
@click.argument("org_slug", metavar="ORG")
@click.argument("flow_slug", metavar="FLOW")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True, readable=True))
@click.option("--apply", is_flag=True, help="Write the sessions (default: a dry run).")
@click.option(
    "--background", is_flag=True, help="Run as a job on a worker; wait with a progress bar."
)
@click.option(
    "--timeout",
    default=3600,
    type=WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait for the worker (1 to 86400).",
)
@with_appcontext
def legacy_import(
    org_slug: str, flow_slug: str, file: Path, apply: bool, background: bool, timeout: int
) -> None:
    """Import old sessions (one JSON object a line) into FLOW's published version.

    A dry run by default: it prints what would be created, updated, skipped and left out,
    and writes nothing. Running it again with the same file changes nothing.
    """
    org = _org(org_slug)
    try:
        import_target(org, flow_slug)
        if background:
            report = _run_in_background(org, flow_slug, file.resolve(), apply, timeout)
        else:
            db.session.commit()  # each batch is its own transaction
            report = _run_here(org, flow_slug, file, apply)
    except LegacyImportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.render())


def _org(slug: str) -> Org:
    begin_write(db.session)
    try:
        return tenant_services.get_org(slug)
    except tenant_services.TenantError as exc:
        raise click.ClickException(str(exc)) from None


def _run_here(org: Org, flow_slug: str, file: Path, apply: bool) -> ImportReport:
    with click.progressbar(length=100, label=f"reading {file.name}", file=sys.stderr) as bar:
        shown = 0

        def progress(done: int, total: int) -> None:
            nonlocal shown
            percent = 100 if total == 0 else done * 100 // total
            bar.update(percent - shown)
            shown = percent

        return import_legacy_sessions(org, flow_slug, file, apply=apply, progress=progress)


def _run_in_background(
    org: Org, flow_slug: str, file: Path, apply: bool, timeout: int
) -> ImportReport:
    # The worker opens the file by this absolute path: it must see the same filesystem.
    job = create_job(
        org, LEGACY_IMPORT, {"flow": flow_slug, "path": str(file), "apply": apply}, by="cli"
    )
    db.session.commit()
    job_id = job.id
    job = run_and_wait(job_id, timeout)
    if job.status != "completed":
        raise LegacyImportError(
            f"job {job_id} {job.status}: {job.error or 'no worker picked it up in time'}"
        )
    return ImportReport.from_dict(job.result)
