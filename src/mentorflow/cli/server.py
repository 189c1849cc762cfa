"""Run the app under gunicorn, the production server."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from mentorflow.app import create_app


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        return create_app()


def run_gunicorn(host: str, port: int, *, workers: int, timeout: int) -> None:
    """Serve on ``host:port`` with ``workers`` sync workers until stopped."""
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "timeout": timeout,
            "accesslog": "-",
            "preload_app": False,
        }
    ).run()
