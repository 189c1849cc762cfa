"""Rate limits per client address and per account, counted with the ``limits`` library.

The public API (``/v1/``) allows ``MENTORFLOW_RATE_LIMIT`` requests per address: one counter
increment in a ``before_request`` hook, a problem+json 429 with ``Retry-After`` past it. Every
counted response says where the client stands in the ``RateLimit-Policy`` and ``RateLimit``
fields of the IETF draft (draft-ietf-httpapi-ratelimit-headers-10), e.g.
``RateLimit-Policy: "api";q=1200;w=60`` and ``RateLimit: "api";r=1187;t=42``. CORS
preflights (``OPTIONS``) are not counted: a browser sends one before a real request, which is
counted. The console throttles its password forms with :func:`throttle` and sign-in with
:func:`throttle_sign_in` (per address and per account). An empty ``MENTORFLOW_RATE_LIMIT``
turns all of them off.

Counters live in storage every process of the deployment shares (:func:`storage_url`): the
broker's Redis when the broker is Redis, else the app's database (:class:`DatabaseStorage`).
``memory://`` counts per process; ``mentorflow serve`` refuses it with more than one worker
(:func:`refuse_per_process_storage`).

When the storage is down the API lets requests through (logged): the limit protects capacity,
and learners should not lose their session to a Redis restart. Password forms fail closed
(:class:`LimiterUnavailable`, a 503): a throttle that lets guesses through unchecked is no
throttle.

``limits`` is the engine under Flask-Limiter. Flask-Limiter itself resolved routes, exemptions
and headers on every request of the app, which cost more than the step commit's SQL statements
(``bench/README.md``); an increment is all these limits need.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.exceptions import ServiceUnavailable, TooManyRequests

from mentorflow.platform.db import IMMEDIATE
from mentorflow.platform.errors import abort
from mentorflow.platform.extensions import db

log = logging.getLogger(__name__)

#: Paths under the API's limit: the learner and jobs APIs.
API_PREFIX = "/v1/"
#: After a storage error, skip the storage for this long (then try again).
STORAGE_RETRY_SECONDS = 5.0
#: ``RATE_LIMIT_STORAGE_URL`` for counters in the app's own database.
DATABASE_STORAGE_URL = "database://"
#: ``RATE_LIMIT_STORAGE_URL`` for counters in each process's memory.
MEMORY_STORAGE_URL = "memory://"
#: Seconds a Redis counter may take to connect or answer before it counts as an outage.
REDIS_TIMEOUT_SECONDS = 2.0
SIGN_IN_TOO_MANY = "Too many sign-in attempts; wait a little and try again."


class LimiterUnavailable(ServiceUnavailable):
    """A throttle that fails closed could not reach its counters."""

    description = (
        "This form is unavailable right now: its attempt counter can't be reached. Try again later."
    )


class RateLimitCounter(db.Model):
    """One fixed-window counter of :class:`DatabaseStorage`."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    count: Mapped[int]
    #: When the window ends, in seconds since the epoch (``limits``' own clock).
    expires_at: Mapped[float] = mapped_column(sa.Double, index=True)


def _increment(dialect: str) -> sa.Insert:
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    table = RateLimitCounter.__table__
    stmt = insert(table).values(
        key=sa.bindparam("key"), count=sa.bindparam("amount"), expires_at=sa.bindparam("expires")
    )
    # One statement, so two processes counting at once never lose a hit; a window that has
    # ended starts again from this hit.
    ended = table.c.expires_at <= sa.bindparam("now")
    return stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "count": sa.case(
                (ended, stmt.excluded.count), else_=table.c.count + stmt.excluded.count
            ),
            "expires_at": sa.case((ended, stmt.excluded.expires_at), else_=table.c.expires_at),
        },
    ).returning(table.c.count)


_INCREMENT = {dialect: _increment(dialect) for dialect in ("postgresql", "sqlite")}


class DatabaseStorage(Storage):
    """Fixed-window counters in a table of the app's database (``limits`` has no SQL storage).

    For the embedded default, where there is no Redis: every process of the deployment shares
    the database. Each hit is one upsert in a transaction of its own, apart from the request's.
    """

    STORAGE_SCHEME = None
    #: Drop counters whose window has ended at most this often per process.
    SWEEP_SECONDS = 60.0
    #: Longer keys (an odd forwarded address) are stored as their hash.
    MAX_KEY_LENGTH = 200

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__()
        self.engine = engine
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return sa.exc.SQLAlchemyError

    def _connect(self) -> sa.Connection:
        connection = self.engine.connect()
        if connection.dialect.name == "sqlite":
            return connection.execution_options(**{IMMEDIATE: True})
        # One statement: no BEGIN/COMMIT round trips around it.
        return connection.execution_options(isolation_level="AUTOCOMMIT")

    def _key(self, key: str) -> str:
        if len(key) <= self.MAX_KEY_LENGTH:
            return key
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self._connect() as connection, connection.begin():
            count = connection.execute(
                _INCREMENT[connection.dialect.name],
                {"key": self._key(key), "amount": amount, "expires": now + expiry, "now": now},
            ).scalar_one()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.SWEEP_SECONDS
            self._delete(RateLimitCounter.expires_at <= now)
        return count

    def _row(self, key: str) -> tuple[int, float] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(RateLimitCounter.count, RateLimitCounter.expires_at).where(
                    RateLimitCounter.key == self._key(key)
                )
            ).first()
        if row is None or row.expires_at <= time.time():
            return None
        return row.count, row.expires_at

    def get(self, key: str) -> int:
        row = self._row(key)
        return 0 if row is None else row[0]

    def get_expiry(self, key: str) -> float:
        row = self._row(key)
        return time.time() if row is None else row[1]

    def check(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def _delete(self, condition: Any) -> int:
        with self._connect() as connection, connection.begin():
            return connection.execute(sa.delete(RateLimitCounter).where(condition)).rowcount

    def reset(self) -> int | None:
        return self._delete(sa.true())

    def clear(self, key: str) -> None:
        self._delete(RateLimitCounter.key == self._key(key))


class LazyMemoryStorage(MemoryStorage):
    """``limits``' per-process memory storage, minus its expiry thread.

    ``MemoryStorage`` starts a ``threading.Timer`` whenever none is alive, so a busy process
    starts a thread every 10 ms only to drop expired counters. A counter past its window is
    already dropped when it is next read; here the sweep of the others runs on the request
    path at most once per ``SWEEP_SECONDS``. Should ``limits`` rename the private hook this
    overrides, its own timer simply stays (slower, still correct).
    """

    SWEEP_SECONDS = 1.0
    _next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()


def storage_url(config: Any) -> str:
    """Return where counters live: the setting, else the broker's Redis, else the database."""
    configured = str(config.get("RATE_LIMIT_STORAGE_URL") or "")
    if configured:
        return configured
    broker = str(config.get("BROKER_URL") or "")
    if broker.startswith(("redis://", "rediss://")):
        return broker
    return DATABASE_STORAGE_URL


def open_storage(url: str, engine: sa.Engine | None = None) -> Storage:
    """The counters' storage at ``url`` (``database://`` is :class:`DatabaseStorage`)."""
    if url == MEMORY_STORAGE_URL:
        return LazyMemoryStorage()
    if url == DATABASE_STORAGE_URL:
        if engine is None:
            raise ValueError("database:// rate-limit storage needs the app's engine")
        return DatabaseStorage(engine)
    if url.startswith(("redis://", "rediss://", "redis+unix://")):
        # A Redis that stops answering must not hold every request for the OS's TCP timeout.
        return storage_from_string(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
    return storage_from_string(url)


def refuse_per_process_storage(config: Any, workers: int) -> None:
    """Raise ValueError when limits are on, counted per process, and ``workers`` > 1."""
    if workers > 1 and config.get("RATE_LIMIT") and storage_url(config) == MEMORY_STORAGE_URL:
        raise ValueError(
            f"MENTORFLOW_RATE_LIMIT_STORAGE_URL=memory:// counts per process, so {workers} "
            "workers would allow each limit that many times over. Leave it empty (the broker's "
            "Redis or the database), set a shared redis:// URL, or serve with one worker "
            "(MENTORFLOW_WEB_CONCURRENCY=1)."
        )


@dataclass(frozen=True)
class Quota:
    """Where one key stands in its window after a request was counted."""

    scope: str
    limit: int
    window: int
    remaining: int
    #: Seconds until the window ends (and the quota is whole again).
    reset: int
    exceeded: bool

    def headers(self) -> dict[str, str]:
        """The draft's ``RateLimit-Policy`` and ``RateLimit`` fields for this quota."""
        return {
            "RateLimit-Policy": f'"{self.scope}";q={self.limit};w={self.window}',
            "RateLimit": f'"{self.scope}";r={self.remaining};t={self.reset}',
        }


class RateLimit:
    """``limit`` (such as ``"10 per minute"``) per key in a fixed window, under ``scope``."""

    #: Window ends remembered per process, so a hit needs one storage call, not three.
    MAX_REMEMBERED_WINDOWS = 10_000

    def __init__(
        self,
        limit: str | RateLimitItem,
        storage: Storage,
        scope: str,
        *,
        fail_closed: bool = False,
    ) -> None:
        self.item = parse(limit) if isinstance(limit, str) else limit
        self.scope = scope
        self.fail_closed = fail_closed
        self._limiter = FixedWindowRateLimiter(storage)
        self._storage = storage
        self._storage_down_until = 0.0
        self._window_ends: dict[str, float] = {}

    def hit(self, key: str) -> int | None:
        """Count one request for ``key``; return the seconds to wait if it is over the limit.

        A storage outage (Redis down) lets requests through, logged, or with ``fail_closed``
        raises :class:`LimiterUnavailable`.
        """
        quota = self.count(key)
        return quota.reset if quota is not None and quota.exceeded else None

    def count(self, key: str) -> Quota | None:
        """Count one request for ``key``; return its quota (None while the storage is down,
        or :class:`LimiterUnavailable` with ``fail_closed``)."""
        if time.monotonic() < self._storage_down_until:
            return self._unavailable()
        counter = self.item.key_for(self.scope, key)
        window = self.item.get_expiry()
        try:
            # What FixedWindowRateLimiter.hit does, keeping the count it drops.
            count = self._storage.incr(counter, window)
            window_end = self._window_end(counter, count, window)
        except Exception:
            self._storage_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
            if self.fail_closed:
                log.exception("rate-limit storage failed; %s refused for a while", self.scope)
            else:
                log.exception("rate-limit storage failed; requests pass unchecked for a while")
            return self._unavailable()
        return Quota(
            scope=self.scope,
            limit=self.item.amount,
            window=window,
            remaining=max(0, self.item.amount - count),
            reset=max(1, math.ceil(window_end - time.time())),
            exceeded=count > self.item.amount,
        )

    def _window_end(self, counter: str, count: int, window: int) -> float:
        """Return when the counter's window ends (epoch seconds)."""
        now = time.time()
        if count == 1:
            # This hit opened the window: the storage set its expiry to now + window.
            end = now + window
        else:
            end = self._window_ends.get(counter, 0.0)
            if end > now:
                return end
            # Opened by another process (or before this one remembered it): ask once.
            end = self._storage.get_expiry(counter)
        if len(self._window_ends) >= self.MAX_REMEMBERED_WINDOWS:
            self._window_ends.clear()
        self._window_ends[counter] = end
        return end

    def _unavailable(self) -> None:
        if self.fail_closed:
            raise LimiterUnavailable(retry_after=math.ceil(STORAGE_RETRY_SECONDS))
        return None


class RateLimits:
    """The app's counter storage and the console throttles made on it so far."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.throttles: dict[tuple[str, str], RateLimit] = {}


def init_rate_limit(app: Flask) -> None:
    """Open the counters' storage; limit the API when ``RATE_LIMIT`` is set (the default)."""
    with app.app_context():
        storage = open_storage(storage_url(app.config), db.engine)
    app.extensions["mentorflow_rate_limits"] = RateLimits(storage)
    if not app.config.get("RATE_LIMIT"):
        return
    api_limit = RateLimit(app.config["RATE_LIMIT"], storage, "api")

    @app.before_request
    def _limit_api() -> None:
        if request.method == "OPTIONS" or not _is_api_path(request.path):
            return
        quota = g.rate_limit_quota = api_limit.count(request.remote_addr or "unknown")
        if quota is not None and quota.exceeded:
            abort(
                429,
                message=f"Too many requests: the limit is {api_limit.item}. "
                f"Retry in {quota.reset} s.",
                headers={"Retry-After": str(quota.reset)},
            )

    @app.after_request
    def _quota_headers(response: Response) -> Response:
        quota = g.get("rate_limit_quota")
        if quota is not None:
            response.headers.update(quota.headers())
        return response


def _is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/")


def throttle(limit: str, scope: str, message: str, *, key: str | None = None) -> None:
    """Count an attempt under ``scope`` for ``key`` (default: this address); 429 past ``limit``.

    For console forms that check a password (sign-in, joining with an existing account).
    Fails closed: :class:`LimiterUnavailable` (503) when the counters can't be reached.
    """
    if not current_app.config.get("RATE_LIMIT"):
        return
    limits = current_app.extensions["mentorflow_rate_limits"]
    rate_limit = limits.throttles.get((limit, scope))
    if rate_limit is None:
        rate_limit = limits.throttles[(limit, scope)] = RateLimit(
            limit, limits.storage, scope, fail_closed=True
        )
    retry_after = rate_limit.hit(key or request.remote_addr or "unknown")
    if retry_after is not None:
        raise TooManyRequests(description=message, retry_after=retry_after)


def account_key(email: str) -> str:
    """Return the counter key of an account: a hash, so counters hold no addresses."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def throttle_sign_in(email: str) -> None:
    """Count a sign-in attempt from this address and for ``email``; 429 past either limit."""
    config = current_app.config
    throttle(config["SIGN_IN_LIMIT"], "console-login", SIGN_IN_TOO_MANY)
    if email.strip():
        throttle(
            config["SIGN_IN_ACCOUNT_LIMIT"],
            "console-login-account",
            SIGN_IN_TOO_MANY,
            key=account_key(email),
        )
