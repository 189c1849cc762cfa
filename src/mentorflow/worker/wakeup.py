"""Waking the workers after a commit, without the request ever waiting on the broker."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from flask import current_app

from mentorflow.worker import tasks

log = logging.getLogger(__name__)

#: After a failed wake-up, don't try the broker again for this long (the sweep covers it).
BROKER_BACKOFF_SECONDS = 5.0


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
                tasks.deliver_due_deliveries.apply_async(retry=False)
        except Exception as exc:
            self._broker_down_until[broker] = time.monotonic() + BROKER_BACKOFF_SECONDS
            log.warning(
                "could not wake the workers (broker: %s); the sweep will deliver the events", exc
            )


#: One per process: its thread serves every app of the process.
wake_workers = WakeUp(delay=0.05)
