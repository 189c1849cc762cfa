"""Configuration defaults; ``MENTORFLOW_*`` environment variables override them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from mentorflow.platform import jsonio
from mentorflow.platform.files import make_private_dir, open_private, touch_private

#: The longest duration any setting takes. Longer is a typo, and far longer overflows the date
#: arithmetic of the periodic work that reads it (the abandonment sweep).
MAX_DURATION = 365 * 86400
#: The shortest inactivity before a session is abandoned.
MIN_ABANDON_AFTER = 60
#: The shortest life a learner token may be given.
MIN_LEARNER_TOKEN_TTL = 60

#: Every setting an operator may change, with its default. The README documents each one.
DEFAULTS: dict[str, Any] = {
    # SQLAlchemy URL; empty means a SQLite file in the instance folder.
    "DATABASE_URL": "",
    # Celery broker; empty means the embedded SQLite transport in the instance folder.
    "BROKER_URL": "",
    # Sinks that get one delivery per outbox event.
    "SINKS": "posthog,memory",
    # Default inactivity before a session is marked abandoned, in seconds (orgs may override).
    "ABANDON_AFTER": 7 * 24 * 3600,
    # Delivery of outbox events to sinks.
    "DELIVERY_MAX_ATTEMPTS": 8,
    "DELIVERY_BACKOFF_SECONDS": 2.0,
    "DELIVERY_BACKOFF_MAX_SECONDS": 3600.0,
    "DELIVERY_LEASE_SECONDS": 60,
    "DELIVERY_BATCH_SIZE": 100,
    # Sink calls one worker process makes side by side.
    "DELIVERY_CONCURRENCY": 8,
    # Of those, the most one org may have at once (always fewer than all of them).
    "DELIVERY_ORG_CONCURRENCY": 2,
    # Seconds a sink call may take before it counts as a failed (retryable) attempt.
    "SINK_TIMEOUT": 10,
    # Let sinks reach loopback and private addresses (development, tests); off in production.
    "ALLOW_PRIVATE_SINKS": False,
    # Seconds a webhook endpoint may fail every attempt before it is disabled (3 days).
    "WEBHOOK_DISABLE_AFTER": 3 * 24 * 3600,
    # Sessions the beat's retention sweep erases per org and run (the rest wait a run).
    "RETENTION_BATCH_SIZE": 200,
    # How often the beat re-enqueues due deliveries (a lost wake-up waits at most this long).
    "SWEEP_INTERVAL_SECONDS": 15,
    # Fernet key for per-org integration credentials; empty derives one from SECRET_KEY.
    "ENCRYPTION_KEY": "",
    # Celery worker processes of `mentorflow worker` (and `mentorflow up`).
    "WORKER_CONCURRENCY": 2,
    # Ping each pooled PostgreSQL connection before use (costs a round trip per request).
    "DB_PRE_PING": False,
    # Let psycopg prepare statements on the server (after 5 runs of one statement). Off behind
    # PgBouncer in transaction pooling mode older than 1.21 (Debian 12 ships 1.18), where the
    # next transaction may run on another server connection that never prepared them.
    "DB_PREPARED_STATEMENTS": True,
    # How long a process may serve an org's settings (CORS origins, TTL) from memory.
    "ORG_CACHE_SECONDS": 5,
    # Largest request body the learner API reads (JSON), and the console (flow documents).
    "API_MAX_BODY_BYTES": 256 * 1024,
    "CONSOLE_MAX_BODY_BYTES": 4 * 1024 * 1024,
    # Requests per client address to the learner API; "" disables every limit and throttle.
    "RATE_LIMIT": "1200 per minute",
    # Console sign-in attempts per client address, and per account (email) from any address.
    "SIGN_IN_LIMIT": "10 per minute",
    "SIGN_IN_ACCOUNT_LIMIT": "20 per hour",
    # Where rate-limit counters live, shared by every process: empty means the broker's Redis
    # when the broker is Redis, else the database; redis://... or memory:// (one process).
    "RATE_LIMIT_STORAGE_URL": "",
    # Proxies in front of the app whose X-Forwarded-For entries to trust; 0 trusts none.
    "TRUSTED_PROXIES": 0,
    # gunicorn settings used by `mentorflow serve`.
    "WEB_CONCURRENCY": 4,
    "WEB_TIMEOUT": 30,
    # Threads per gunicorn worker (gthread): an open session stream holds one while it waits.
    "WEB_THREADS": 256,
    # Session streams (server-sent events); 0 turns them off and clients poll instead.
    "STREAMS": True,
    # Streams one web process holds at once; more are refused (503), so requests keep threads.
    "STREAM_LIMIT": 240,
    # Seconds between a stream's heartbeats, at which it also re-checks its credential.
    "STREAM_HEARTBEAT_SECONDS": 15,
    # Seconds before a stream ends (the client reconnects with Last-Event-ID).
    "STREAM_MAX_SECONDS": 3600,
    # Seconds a stream ticket (for browsers' EventSource) may wait before it is used.
    "STREAM_TICKET_TTL": 60,
    # Without Redis: how often each web process reads the versions its streams watch.
    "STREAM_POLL_INTERVAL": 0.25,
    # Set the session cookie's Secure flag (behind HTTPS).
    "SECURE_COOKIES": False,
    "LOG_LEVEL": "INFO",
    # Sink credentials (issue #3 delivers through them).
    "POSTHOG_API_KEY": "",
    "POSTHOG_HOST": "https://us.i.posthog.com",
    "SUPERMEMORY_API_KEY": "",
    "SUPERMEMORY_BASE_URL": "https://api.supermemory.ai",
    # Seconds an export's files are kept before the beat's hourly purge deletes them.
    "EXPORT_RETENTION": 7 * 24 * 3600,
    # Seconds a learner's session token keeps working after its session completes or is
    # abandoned.
    "SESSION_TOKEN_LIFETIME": 30 * 24 * 3600,
    # Seconds a learner token (lt_…) works when minted without ttl_seconds, and the most a
    # mint may ask for.
    "LEARNER_TOKEN_TTL": 7 * 24 * 3600,
    "LEARNER_TOKEN_MAX_TTL": 30 * 24 * 3600,
    # "production", "development", or "auto": production unless the database is SQLite.
    "ENVIRONMENT": "auto",
}

#: The shortest ``MENTORFLOW_SECRET_KEY`` `mentorflow serve` accepts in production.
MIN_SECRET_KEY_BYTES = 32
ENVIRONMENTS = ("auto", "production", "development")


def default_instance_path() -> Path:
    """Return ``MENTORFLOW_INSTANCE_PATH``, else ``instance/`` of a source checkout, else CWD's."""
    configured = os.environ.get("MENTORFLOW_INSTANCE_PATH")
    if configured:
        return Path(configured).resolve()
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "mentorflow").is_dir():
        return checkout / "instance"
    return Path.cwd() / "instance"


def finalize(config: dict[str, Any], instance_path: Path) -> None:
    """Derive the library settings (SQLAlchemy, smorest, cookies) from ours."""
    # Werkzeug answers 413 before reading a larger body; /v1 lowers it per request.
    config["MAX_CONTENT_LENGTH"] = int(config["CONSOLE_MAX_BODY_BYTES"])
    if not config.get("DATABASE_URL"):
        config["DATABASE_URL"] = f"sqlite:///{instance_path / 'mentorflow.db'}"
    url = str(config["DATABASE_URL"])
    _create_sqlite_file(url)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    config["DATABASE_URL"] = url
    config["SQLALCHEMY_DATABASE_URI"] = url
    engine_options = config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    engine_options.setdefault("json_serializer", jsonio.dumps)
    # A database error's message (which the log keeps) names no parameter: they hold
    # learners' answers and token hashes.
    engine_options.setdefault("hide_parameters", True)
    if url.startswith("postgresql"):
        # No ping per checkout (a round trip on every request): stale connections are
        # recycled, and a disconnect invalidates the whole pool at its first error.
        engine_options.setdefault("pool_pre_ping", bool(config.get("DB_PRE_PING")))
        engine_options.setdefault("pool_recycle", 1800)
        engine_options.setdefault("pool_size", 10)
        engine_options.setdefault("max_overflow", 20)
        if not config.get("DB_PREPARED_STATEMENTS"):
            connect_args = engine_options.setdefault("connect_args", {})
            connect_args.setdefault("prepare_threshold", None)
    if not config.get("BROKER_URL"):
        # The embedded default: a real broker in files of the instance folder (no Redis).
        config["BROKER_URL"] = "filesystem://"
        config.setdefault("BROKER_FOLDER", str(instance_path / "broker"))
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = _instance_secret(instance_path)
        config["SECRET_KEY_GENERATED"] = True
    config.setdefault("API_TITLE", "mentorflow learner API")
    config.setdefault("API_VERSION", "v1")
    config.setdefault("OPENAPI_VERSION", "3.1.0")
    config.setdefault("OPENAPI_URL_PREFIX", "/v1")
    config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config["SESSION_COOKIE_SECURE"] = bool(config.get("SECURE_COOKIES"))
    config["SINKS"] = _as_list(config["SINKS"])
    config["TRUSTED_PROXIES"] = _proxy_count(config["TRUSTED_PROXIES"])
    config["WEBHOOK_DISABLE_AFTER"] = _bounded_seconds(
        "WEBHOOK_DISABLE_AFTER", config["WEBHOOK_DISABLE_AFTER"], 1, MAX_DURATION
    )
    config["RETENTION_BATCH_SIZE"] = _bounded_seconds(
        "RETENTION_BATCH_SIZE", config["RETENTION_BATCH_SIZE"], 1, 10000
    )
    config["ABANDON_AFTER"] = _bounded_seconds(
        "ABANDON_AFTER", config["ABANDON_AFTER"], MIN_ABANDON_AFTER, MAX_DURATION
    )
    config["LEARNER_TOKEN_MAX_TTL"] = _bounded_seconds(
        "LEARNER_TOKEN_MAX_TTL",
        config["LEARNER_TOKEN_MAX_TTL"],
        MIN_LEARNER_TOKEN_TTL,
        MAX_DURATION,
    )
    config["LEARNER_TOKEN_TTL"] = _bounded_seconds(
        "LEARNER_TOKEN_TTL",
        config["LEARNER_TOKEN_TTL"],
        MIN_LEARNER_TOKEN_TTL,
        config["LEARNER_TOKEN_MAX_TTL"],
    )


def _bounded_seconds(name: str, value: Any, minimum: int, maximum: int) -> int:
    # The operator's default meets the bounds an org's own setting meets: a typo such as
    # 1000000 days would otherwise fail the sweep for every org that keeps the default.
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or not minimum <= seconds <= maximum:
        raise ValueError(
            f"MENTORFLOW_{name} must be a number of seconds from {minimum} to {maximum}, "
            f"not {value!r}"
        )
    return seconds


def _proxy_count(value: Any) -> int:
    # A count, not a list of addresses: each trusted proxy appends one X-Forwarded-For entry.
    try:
        count = int(value or 0)
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise ValueError(
            f"MENTORFLOW_TRUSTED_PROXIES must be a number of proxies (0 or more), not {value!r}"
        )
    return count


def is_production(config: Any) -> bool:
    """Return whether ``config`` runs in production: ``ENVIRONMENT``, else a non-SQLite database.

    ``make run``'s embedded demo is on SQLite; a server database means real learners.
    """
    setting = str(config.get("ENVIRONMENT") or "auto").strip().lower()
    if setting not in ENVIRONMENTS:
        raise ValueError(
            f"MENTORFLOW_ENVIRONMENT is '{setting}'; expected one of {', '.join(ENVIRONMENTS)}"
        )
    if setting != "auto":
        return setting == "production"
    return not str(config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite")


def secret_key_problem(config: Any) -> str | None:
    """Return why the web server must not start with ``config``'s secret key, if it must not."""
    try:
        production = is_production(config)
    except ValueError as exc:
        return str(exc)
    if not production:
        return None
    if config.get("SECRET_KEY_GENERATED"):
        return (
            "refusing to serve in production without MENTORFLOW_SECRET_KEY: set it to a random "
            f"value of at least {MIN_SECRET_KEY_BYTES} bytes, the same for every process "
            '(python -c "import secrets; print(secrets.token_urlsafe(48))")'
        )
    if len(str(config.get("SECRET_KEY", "")).encode()) < MIN_SECRET_KEY_BYTES:
        return (
            f"refusing to serve in production: MENTORFLOW_SECRET_KEY is shorter than "
            f"{MIN_SECRET_KEY_BYTES} bytes; set a random value of at least that length"
        )
    return None


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _create_sqlite_file(url: str) -> None:
    # SQLite would create the file with the process's umask (often world-readable); its
    # journal and WAL files copy the database file's mode.
    if not url.startswith("sqlite:///"):
        return
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    if path and path != ":memory:" and Path(path).parent.is_dir():
        touch_private(Path(path))


def _instance_secret(instance_path: Path) -> str:
    # Development convenience: a random key kept in the instance folder, so sessions survive
    # restarts. Production sets MENTORFLOW_SECRET_KEY.
    path = instance_path / "secret_key"
    if path.is_file():
        return path.read_text().strip()
    make_private_dir(instance_path)
    key = secrets.token_urlsafe(48)
    with open_private(path) as handle:
        handle.write(key)
    return key
