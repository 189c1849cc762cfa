"""The application factory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from mentorflow.platform import config as config_module
from mentorflow.platform.db import install_sqlite_behaviour
from mentorflow.platform.extensions import api, db, migrate
from mentorflow.platform.jsonio import JSONProvider
from mentorflow.platform.push import init_push
from mentorflow.platform.ratelimit import init_rate_limit
from mentorflow.platform.requestid import init_request_id, log_handler

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the mentorflow app: defaults, then ``MENTORFLOW_*`` variables, then ``config``."""
    instance_path = config_module.default_instance_path()
    if config and config.get("INSTANCE_PATH"):
        instance_path = Path(config["INSTANCE_PATH"]).resolve()
    app = Flask("mentorflow", instance_path=str(instance_path), instance_relative_config=True)
    app.json = JSONProvider(app)
    app.config.from_mapping(config_module.DEFAULTS)
    app.config.from_prefixed_env("MENTORFLOW")
    if config:
        app.config.from_mapping(config)
    app.config["INSTANCE_PATH"] = str(instance_path)
    # Owner-only when new: it holds the SQLite database, exports and the generated secret.
    instance_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_module.finalize(app.config, instance_path)
    logging.basicConfig(level=app.config["LOG_LEVEL"], handlers=[log_handler()])

    _import_models()
    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            install_sqlite_behaviour(engine)
    migrate.init_app(
        app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True
    )
    api.init_app(app)
    init_request_id(app)
    init_rate_limit(app)
    _register_blueprints(app)
    _register_health(app)
    _init_worker(app)
    if app.config["TRUSTED_PROXIES"]:
        # The client's address as the trusted proxies saw it; off by default, since anyone
        # can send an X-Forwarded-For header.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXIES"])
    return app


def _init_worker(app: Flask) -> None:
    from mentorflow.delivery.webhooks import webhook_sinks
    from mentorflow.flows.erasure import ERASE
    from mentorflow.flows.export import EXPORT_JOB
    from mentorflow.flows.legacy import LEGACY_IMPORT_JOB
    from mentorflow.flows.migration import MIGRATION_JOB
    from mentorflow.jobs.runner import register_job_enqueuer, register_job_kinds
    from mentorflow.platform.outbox import register_sink_router
    from mentorflow.worker.celery_setup import celery_init_app
    from mentorflow.worker.tasks import enqueue_job

    register_job_kinds(app, EXPORT_JOB, LEGACY_IMPORT_JOB, MIGRATION_JOB, ERASE)
    register_job_enqueuer(app, enqueue_job)
    # Each of an org's webhook endpoints is a sink of the events it subscribes to.
    register_sink_router(app, webhook_sinks)
    celery_init_app(app)


def _import_models() -> None:
    # Every model must be known to the metadata before migrations compare against it.
    pass


def _register_blueprints(app: Flask) -> None:
    from mentorflow.flows.learner_sessions import session_token_owner
    from mentorflow.flows.learners import learner_token_owner
    from mentorflow.tenants.credentials import init_credentials

    init_credentials(
        app, session_token_owner=session_token_owner, learner_token_owner=learner_token_owner
    )
    from mentorflow.delivery.webhooks_api import blp as webhooks_blp
    from mentorflow.delivery.webhooks_api import register_delivery_wakeup
    from mentorflow.flows.api import blp as flows_blp
    from mentorflow.flows.batch_api import blp as batch_blp
    from mentorflow.flows.erasure_api import blp as erasure_blp
    from mentorflow.flows.export_api import blp as job_starts_blp
    from mentorflow.flows.feed_api import blp as feed_blp
    from mentorflow.flows.learner_state_api import blp as learner_state_blp
    from mentorflow.flows.learners_api import blp as learners_blp
    from mentorflow.flows.live import read_changes
    from mentorflow.flows.messages_api import blp as messages_blp
    from mentorflow.flows.stream_api import blp as stream_blp
    from mentorflow.jobs.api import blp as jobs_blp
    from mentorflow.tenants.audit_api import blp as audit_blp
    from mentorflow.worker.wakeup import wake_workers

    api.register_blueprint(flows_blp)
    api.register_blueprint(batch_blp)
    api.register_blueprint(learners_blp)
    api.register_blueprint(feed_blp)
    api.register_blueprint(stream_blp)
    api.register_blueprint(messages_blp)
    api.register_blueprint(learner_state_blp)
    init_push(app, read_changes)
    api.register_blueprint(jobs_blp)
    api.register_blueprint(job_starts_blp)
    api.register_blueprint(audit_blp)
    api.register_blueprint(webhooks_blp)
    api.register_blueprint(erasure_blp)
    # A replay makes deliveries due: wake the workers as a commit of new events does.
    register_delivery_wakeup(app, lambda: wake_workers([]))

    from mentorflow.admin.console import csrf, init_console
    from mentorflow.admin.player import bp as player_bp
    from mentorflow.platform.apidocs import bp as apidocs_bp

    app.register_blueprint(apidocs_bp)
    app.register_blueprint(player_bp)
    # The API authenticates with bearer keys, not cookies: no CSRF token there.
    csrf.exempt(flows_blp)
    csrf.exempt(batch_blp)
    csrf.exempt(learners_blp)
    csrf.exempt(feed_blp)
    csrf.exempt(stream_blp)
    csrf.exempt(messages_blp)
    csrf.exempt(learner_state_blp)
    csrf.exempt(jobs_blp)
    csrf.exempt(job_starts_blp)
    csrf.exempt(audit_blp)
    csrf.exempt(webhooks_blp)
    csrf.exempt(erasure_blp)
    init_console(app)


def _register_health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        """Report whether the app can reach its database."""
        try:
            db.session.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return {"status": "unavailable", "database": type(exc).__name__}, 503
        return {"status": "ok", "database": "ok"}, 200
