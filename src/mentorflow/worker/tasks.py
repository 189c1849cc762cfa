"""Celery tasks. They take ids, run inside the Flask app context, and own their transactions."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from celery import shared_task
from flask import current_app

from mentorflow.flows import services as flow_services
from mentorflow.platform import idempotency
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import after_commit
from mentorflow.worker import delivery, jobs

log = logging.getLogger(__name__)

#: After a failed wake-up, don't try the broker again for this long (the sweep covers it).
BROKER_BACKOFF_SECONDS = 5.0


@shared_task(name="mentorflow.worker.tasks.deliver_due_deliveries")
def deliver_due_deliveries() -> dict[str, int]:
    """Deliver every due delivery, batch by batch."""
    result = delivery.deliver_due()
    if not result.drained:
        # The budget ran out with deliveries still due: carry on in a fresh task rather than
        # leaving the backlog to the next sweep (other tasks in the queue get a turn first).
        deliver_due_deliveries.apply_async()
    return {"delivered": result.delivered, "retried": result.retried, "dead": result.dead}


@shared_task(name="mentorflow.worker.tasks.sweep_due_deliveries")
def sweep_due_deliveries() -> int:
    """Wake a worker if anything is due: a lost wake-up delays a delivery, never loses it."""
    due = delivery.count_due()
    stale_jobs = jobs.requeue_stale_pending()
    db.session.rollback()
    if due:
        deliver_due_deliveries.apply_async()
    for job_id in stale_jobs:
        run_job.apply_async(args=[job_id])
    return due


@shared_task(name="mentorflow.worker.tasks.abandon_inactive_sessions")
def abandon_inactive_sessions() -> int:
    """Mark sessions idle past their org's TTL abandoned."""
    begin_write(db.session)
    count = flow_services.abandon_inactive_sessions(int(current_app.config["ABANDON_AFTER"]))
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


@shared_task(name="mentorflow.worker.tasks.run_job")
def run_job(job_id: int) -> None:
    """Run a background job (export, import) and record its outcome on the job row."""
    jobs.run(job_id)


class WakeUp:
    """One debounced wake-up of the workers per burst of commits in this process.

    A commit sets a flag and returns (no thread, no broker call on the request path). One
    thread per process waits for the flag, lets the burst gather for ``delay`` seconds, clears
    the flag and sends one message. The message leaves after every commit it covers, so the
    task it starts sees all of them; a commit that comes after the flag was cleared sets it
    again and gets the next message. No commit is left waiting for the sweep.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._app: Any = None
        #: Broker URL -> until when it is left alone after a failed wake-up.
        self._broker_down_until: dict[str, float] = {}
        self._reset()
        # A forked child (a gunicorn worker) starts with no thread: it makes its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, event_ids: list[uuid.UUID]) -> None:
        if self._wanted.is_set():
            return
        self._app = current_app._get_current_object()  # type: ignore[attr-defined]
        self._wanted.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="mentorflow-wake-up", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            time.sleep(self.delay)
            self._wanted.clear()
            self._send(self._app)

    def _send(self, app: Any) -> None:
        broker = app.config["BROKER_URL"]
        if time.monotonic() < self._broker_down_until.get(broker, 0.0):
            return
        try:
            with app.app_context():
                deliver_due_deliveries.apply_async(retry=False)
        except Exception as exc:
            self._broker_down_until[broker] = time.monotonic() + BROKER_BACKOFF_SECONDS
            log.warning(
                "could not wake the workers (broker: %s); the sweep will deliver the events", exc
            )


#: After commit, ask a worker to deliver what the transaction wrote.
wake_workers = after_commit(WakeUp(delay=0.05))


def enqueue_job(job_id: int) -> Any:
    """Queue a job for a worker."""
    return run_job.apply_async(args=[job_id], retry=False)
