"""``mentorflow export``: background jobs started from the command line."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from mentorflow.cli.common import WAIT_SECONDS, fail, org_for_write
from mentorflow.cli.progress import run_and_wait
from mentorflow.flows.export import create_export
from mentorflow.jobs.runner import JobError, job_file
from mentorflow.platform.extensions import db


@click.command("export")
@click.argument("org_slug", metavar="ORG")
@click.argument("flow_slug", metavar="FLOW")
@click.option(
    "--timeout",
    default=600,
    type=WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait for the worker (1 to 86400).",
)
@with_appcontext
def export(org_slug: str, flow_slug: str, timeout: int) -> None:
    """Export a flow's sessions and answers as CSV through a worker, with a progress bar."""
    target = org_for_write(org_slug)
    try:
        job = create_export(target, flow_slug, by="cli")
    except JobError as exc:
        fail(str(exc))
    db.session.commit()
    job_id = job.id
    job = run_and_wait(job_id, timeout)
    if job.status != "completed":
        fail(f"job {job_id} {job.status}: {job.error or 'no worker picked it up in time'}")
    click.echo(f"exported {job.result['rows']} sessions to {job_file(job)}")
