"""``mentorflow serve | worker | beat | up``: the processes of an installation."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from mentorflow.cli.common import fail
from mentorflow.cli.server import run_gunicorn
from mentorflow.cli.supervisor import run_up
from mentorflow.platform.config import secret_key_problem
from mentorflow.platform.ratelimit import refuse_per_process_storage


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def serve(host: str, port: int) -> None:
    """Serve the API and console with gunicorn."""
    problem = secret_key_problem(current_app.config)
    if problem:
        fail(problem)
    workers = int(current_app.config["WEB_CONCURRENCY"])
    try:
        refuse_per_process_storage(current_app.config, workers)
    except ValueError as exc:
        fail(str(exc))
    run_gunicorn(
        host,
        port,
        workers=workers,
        threads=int(current_app.config["WEB_THREADS"]),
        timeout=int(current_app.config["WEB_TIMEOUT"]),
    )


@click.command("worker")
@click.option(
    "--concurrency", type=int, help="Worker processes (default MENTORFLOW_WORKER_CONCURRENCY)."
)
@click.option("--loglevel", default="INFO", show_default=True)
@with_appcontext
def worker(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker that delivers events and runs jobs."""
    processes = concurrency or int(current_app.config["WORKER_CONCURRENCY"])
    current_app.extensions["celery"].worker_main(
        ["worker", f"--loglevel={loglevel}", f"--concurrency={processes}"]
    )


@click.command("beat")
@click.option("--loglevel", default="INFO", show_default=True)
@with_appcontext
def beat(loglevel: str) -> None:
    """Run the one Celery beat: delivery sweep, abandonment, idempotency pruning."""
    current_app.extensions["celery"].start(["beat", f"--loglevel={loglevel}"])


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--verbose", is_flag=True, help="Also show the worker's and beat's routine lines.")
def up(host: str, port: int, verbose: bool) -> None:
    """Run the web server, a worker and the beat together until Ctrl-C (development)."""
    command = [sys.executable, "-m", "mentorflow.cli"]
    sys.exit(run_up(command, host, port, verbose=verbose))
