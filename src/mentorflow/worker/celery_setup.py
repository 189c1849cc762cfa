"""Celery the Flask way: one Celery app per Flask app, tasks run inside its app context.

``celery_init_app`` is the worker package's only set-up: it binds Celery, registers the
wake-up that runs after each commit that wrote outbox events, and the worker-process hooks.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown
from flask import Flask

from mentorflow.delivery.sinks import close_clients
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import register_after_commit
from mentorflow.worker.wakeup import wake_workers


def beat_schedule(sweep_seconds: float) -> dict[str, dict[str, Any]]:
    """Return the periodic work; exactly one `mentorflow beat` runs it."""
    return {
        "sweep-due-deliveries": {
            "task": "mentorflow.worker.tasks.sweep_due_deliveries",
            "schedule": timedelta(seconds=sweep_seconds),
        },
        "abandon-inactive-sessions": {
            "task": "mentorflow.worker.tasks.abandon_inactive_sessions",
            "schedule": timedelta(minutes=1),
        },
        "requeue-stale-jobs": {
            "task": "mentorflow.worker.tasks.requeue_stale_jobs",
            "schedule": timedelta(seconds=sweep_seconds),
        },
        "prune-idempotency-keys": {
            "task": "mentorflow.worker.tasks.prune_idempotency_keys",
            "schedule": timedelta(hours=1),
        },
        "delete-expired-previews": {
            "task": "mentorflow.worker.tasks.delete_expired_previews",
            "schedule": timedelta(hours=1),
        },
        "purge-expired-exports": {
            "task": "mentorflow.worker.tasks.purge_expired_exports",
            "schedule": timedelta(hours=1),
        },
        "prune-webhook-attempts": {
            "task": "mentorflow.worker.tasks.prune_webhook_attempts",
            "schedule": timedelta(hours=6),
        },
        "erase-expired-sessions": {
            "task": "mentorflow.worker.tasks.erase_expired_sessions",
            "schedule": timedelta(hours=1),
        },
    }


def delivery_time_limits(config: Any) -> dict[str, dict[str, float]]:
    """Return the Celery time limits of the delivery tasks.

    A delivery task stops claiming after one lease and waits for its calls, each bounded by
    ``SINK_TIMEOUT``; the soft limit is the backstop should anything else hang (a database
    that stops answering), and the hard limit the backstop of that.
    """
    soft = float(config["DELIVERY_LEASE_SECONDS"]) + 2 * float(config["SINK_TIMEOUT"]) + 10
    return {
        "mentorflow.worker.tasks.deliver_due_deliveries": {
            "soft_time_limit": soft,
            "time_limit": soft + 30,
        },
        "mentorflow.worker.tasks.sweep_due_deliveries": {"soft_time_limit": 30, "time_limit": 60},
    }


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app bound to ``app`` and store it in ``app.extensions["celery"]``."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    broker_url = app.config["BROKER_URL"]
    if broker_url == "filesystem://":
        # The same broker: its host means nothing, but without one kombu logs a warning
        # ("No hostname was supplied") for every connection of every process.
        broker_url = "filesystem://localhost/"
    celery_app.config_from_object(
        {
            "broker_url": broker_url,
            "task_ignore_result": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_serializer": "json",
            "accept_content": ["json"],
            "timezone": "UTC",
            "broker_connection_retry_on_startup": True,
            # A learner's step must never wait on a broker that is down: fail fast, the sweep
            # delivers what the wake-up could not announce.
            "broker_connection_timeout": 2,
            "broker_transport_options": _transport_options(broker_url, app.config),
            "beat_schedule": beat_schedule(float(app.config["SWEEP_INTERVAL_SECONDS"])),
            "task_annotations": delivery_time_limits(app.config),
            "beat_schedule_filename": str(Path(app.instance_path) / "celerybeat-schedule"),
            "worker_hijack_root_logger": False,
            **app.config.get("CELERY", {}),
        }
    )
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    register_after_commit(app, wake_workers)
    worker_process_init.connect(_fresh_connections_after_fork, weak=False)
    worker_process_shutdown.connect(_close_sink_clients, weak=False)
    return celery_app


def _transport_options(broker_url: str, config: Any) -> dict[str, Any]:
    if broker_url.startswith(("redis://", "rediss://")):
        return {"socket_connect_timeout": 2, "socket_timeout": 5, "visibility_timeout": 3600}
    if broker_url.startswith("filesystem://"):
        folder = Path(config["BROKER_FOLDER"])
        for name in ("queue", "processed", "control"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            # The exchange tables (``celery.exchange``, ``celery.pidbox.exchange``), which kombu
            # otherwise writes to ``control/`` under the working directory.
            "control_folder": str(folder / "control"),
        }
    return {}


def _fresh_connections_after_fork(**kwargs: Any) -> None:
    # A forked pool process must not share the parent's pooled database connections.
    for engine in getattr(db, "_app_engines", {}).values():
        for bound in engine.values():
            bound.dispose(close=False)


def _close_sink_clients(**kwargs: Any) -> None:
    close_clients()
