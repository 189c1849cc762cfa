"""Run the app under gunicorn, the production server."""

from __future__ import annotations

import re
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from mentorflow.app import create_app

#: A stream ticket in a query string: the access log keeps only its first characters.
_TICKET = re.compile(r"(ticket=[^&\s]{0,6})[^&\s]*")


class RedactingLogger(Logger):
    """gunicorn's logger, with stream tickets cut out of the access log's request lines."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q", "U"):
            if isinstance(atoms.get(name), str):
                atoms[name] = _TICKET.sub(r"\1…", atoms[name])
        return atoms


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        return create_app()


def run_gunicorn(host: str, port: int, *, workers: int, threads: int, timeout: int) -> None:
    """Serve on ``host:port`` with ``workers`` threaded workers of ``threads`` each.

    Threaded (gthread): an open session stream waits in a thread of its own, not in a whole
    worker process, so a worker holds hundreds of streams and still answers requests.
    """
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": timeout,
            # Streams end at a stop: don't wait long for them before ending the worker.
            "graceful_timeout": 5,
            "accesslog": "-",
            "logger_class": RedactingLogger,
            "preload_app": False,
        }
    ).run()
