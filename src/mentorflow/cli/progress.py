"""Waiting on a background job from the command line, with a progress bar."""

from __future__ import annotations

import sys
import time

import click

from mentorflow.jobs.models import Job, JobStatus
from mentorflow.platform.extensions import db
from mentorflow.worker import tasks


def run_and_wait(job_id: int, timeout: int) -> Job:
    """Hand a committed job to a worker, then show its progress until it ends or times out."""
    try:
        tasks.enqueue_job(job_id)
    except Exception as exc:
        click.echo(
            f"job {job_id} is queued, but the broker is unreachable ({exc}); "
            "the beat's sweep will hand it to a worker",
            err=True,
        )
    return wait_for_job(job_id, timeout)


def wait_for_job(job_id: int, timeout: int) -> Job:
    """Show a job's progress until it completes, fails, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    with click.progressbar(length=100, label=f"job {job_id}", file=sys.stderr) as bar:
        shown = 0
        while True:
            db.session.rollback()  # a fresh snapshot: the worker commits on its own connection
            job = db.session.get(Job, job_id)
            bar.update(job.progress - shown)
            shown = job.progress
            if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
                return job
            if time.monotonic() > deadline:
                return job
            time.sleep(0.5)
