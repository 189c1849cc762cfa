"""Celery tasks: thin wrappers that take ids, run in the app context and own the transaction."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app

from mentorflow.delivery import services as delivery
from mentorflow.delivery import webhooks
from mentorflow.flows import erasure, learner_sessions, preview
from mentorflow.jobs import runner as jobs
from mentorflow.platform import idempotency
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db

log = logging.getLogger(__name__)


@shared_task(name="mentorflow.worker.tasks.deliver_due_deliveries")
def deliver_due_deliveries() -> dict[str, int]:
    """Deliver every due delivery, each org's sink calls beside the others'."""
    try:
        result = delivery.deliver_due()
    except SoftTimeLimitExceeded:
        # Outcomes recorded so far stay; claims still out come due again when their lease
        # ends. A fresh task carries on.
        log.warning("delivery task passed its soft time limit; carrying on in a new task")
        deliver_due_deliveries.apply_async()
        return {}
    if not result.drained:
        # The budget ran out with deliveries still due: carry on in a fresh task rather than
        # leaving the backlog to the next sweep (other tasks in the queue get a turn first).
        deliver_due_deliveries.apply_async()
    return {"delivered": result.delivered, "retried": result.retried, "dead": result.dead}


@shared_task(name="mentorflow.worker.tasks.sweep_due_deliveries")
def sweep_due_deliveries() -> int:
    """Wake a worker if anything is due: a lost wake-up delays a delivery, never loses it."""
    due = delivery.count_due()
    db.session.rollback()
    if due:
        deliver_due_deliveries.apply_async()
    return due


@shared_task(name="mentorflow.worker.tasks.requeue_stale_jobs")
def requeue_stale_jobs() -> int:
    """Queue again the jobs still pending long after they were created (their message was lost)."""
    stale = jobs.stale_pending_job_ids()
    db.session.rollback()
    for job_id in stale:
        run_job.apply_async(args=[job_id])
    return len(stale)


@shared_task(name="mentorflow.worker.tasks.abandon_inactive_sessions")
def abandon_inactive_sessions() -> int:
    """Mark sessions idle past their org's TTL abandoned."""
    begin_write(db.session)
    count = learner_sessions.abandon_inactive_sessions(int(current_app.config["ABANDON_AFTER"]))
    db.session.commit()
    if count:
        log.info("marked %d sessions abandoned", count)
    return count


@shared_task(name="mentorflow.worker.tasks.prune_idempotency_keys")
def prune_idempotency_keys() -> int:
    """Delete idempotency keys past their 24 h retention."""
    begin_write(db.session)
    count = idempotency.prune_expired()
    db.session.commit()
    return count


@shared_task(name="mentorflow.worker.tasks.delete_expired_previews")
def delete_expired_previews() -> int:
    """Delete "Try the draft" sessions after a day, and preview versions nobody uses."""
    begin_write(db.session)
    count = preview.delete_expired_previews()
    db.session.commit()
    return count


@shared_task(name="mentorflow.worker.tasks.prune_webhook_attempts")
def prune_webhook_attempts() -> int:
    """Delete webhook log entries past their 30 days."""
    begin_write(db.session)
    count = webhooks.prune_attempts()
    db.session.commit()
    return count


@shared_task(name="mentorflow.worker.tasks.purge_expired_exports")
def purge_expired_exports() -> int:
    """Delete export files older than ``MENTORFLOW_EXPORT_RETENTION``."""
    return jobs.purge_expired_files(int(current_app.config["EXPORT_RETENTION"]))


@shared_task(name="mentorflow.worker.tasks.erase_expired_sessions")
def erase_expired_sessions() -> int:
    """Erase each org's closed sessions past its ``retention_days``: a batch per org, each
    an erase job whose result is the receipt. Return how many jobs ran."""
    ran = 0
    for org_id, days in erasure.orgs_with_retention():
        try:
            job_id = erasure.create_retention_job(org_id, days)
        except Exception:
            db.session.rollback()
            log.exception("retention sweep failed for org id %s", org_id)
            continue
        if job_id is not None:
            jobs.run_job(job_id)
            ran += 1
    db.session.rollback()
    return ran


@shared_task(name="mentorflow.worker.tasks.run_job")
def run_job(job_id: int) -> None:
    """Run a background job (export, import) and record its outcome on the job row."""
    jobs.run_job(job_id)


def enqueue_job(job_id: int) -> Any:
    """Queue a job for a worker."""
    return run_job.apply_async(args=[job_id], retry=False)
