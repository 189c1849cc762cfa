"""Rate limits per client address, counted with the ``limits`` library.

The public API (``/v1/``) allows ``MENTORFLOW_RATE_LIMIT`` requests per address: one counter
increment in a ``before_request`` hook, a problem+json 429 with ``Retry-After`` past it. The
console throttles its password forms with :func:`throttle`. Counters live in
``MENTORFLOW_RATE_LIMIT_STORAGE_URL`` (``memory://`` per process, ``redis://…`` shared);
an empty ``MENTORFLOW_RATE_LIMIT`` turns both off.

``limits`` is the engine under Flask-Limiter. Flask-Limiter itself resolved routes, exemptions
and headers on every request of the app, which cost more than the step commit's SQL statements
(``bench/README.md``); an increment is all these limits need.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, current_app, request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from mentorflow.platform.errors import abort

log = logging.getLogger(__name__)

#: Paths under the API's limit: the learner and jobs APIs.
API_PREFIX = "/v1/"
#: After a storage error, let requests through unchecked for this long (then try again).
STORAGE_RETRY_SECONDS = 5.0


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


def open_storage(url: str) -> Storage:
    """The counters' storage at ``url`` (``memory://`` is :class:`LazyMemoryStorage`)."""
    if url == "memory://":
        return LazyMemoryStorage()
    return storage_from_string(url)


class RateLimit:
    """``limit`` (such as ``"10 per minute"``) per key in a fixed window, under ``scope``."""

    def __init__(self, limit: str | RateLimitItem, storage: Storage, scope: str) -> None:
        self.item = parse(limit) if isinstance(limit, str) else limit
        self.scope = scope
        self._limiter = FixedWindowRateLimiter(storage)
        self._storage_down_until = 0.0

    def hit(self, key: str) -> int | None:
        """Count one request for ``key``; return the seconds to wait if it is over the limit.

        A storage outage (Redis down) lets requests through, logged, rather than failing them.
        """
        if time.monotonic() < self._storage_down_until:
            return None
        try:
            if self._limiter.hit(self.item, self.scope, key):
                return None
            reset_time, _ = self._limiter.get_window_stats(self.item, self.scope, key)
        except Exception:
            self._storage_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
            log.exception("rate-limit storage failed; requests pass unchecked for a while")
            return None
        return max(1, math.ceil(reset_time - time.time()))


class RateLimits:
    """The app's counter storage and the console throttles made on it so far."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.throttles: dict[tuple[str, str], RateLimit] = {}


def init_rate_limit(app: Flask) -> None:
    """Open the counters' storage; limit the API when ``RATE_LIMIT`` is set (the default)."""
    storage = open_storage(app.config["RATE_LIMIT_STORAGE_URL"])
    app.extensions["mentorflow_rate_limits"] = RateLimits(storage)
    if not app.config.get("RATE_LIMIT"):
        return
    api_limit = RateLimit(app.config["RATE_LIMIT"], storage, "api")

    @app.before_request
    def _limit_api() -> None:
        if not request.path.startswith(API_PREFIX):
            return
        retry_after = api_limit.hit(request.remote_addr or "unknown")
        if retry_after is not None:
            abort(
                429,
                message=f"Too many requests: the limit is {api_limit.item}. "
                f"Retry in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )


def throttle(limit: str, scope: str, message: str) -> None:
    """Count an attempt from this address under ``scope``; 429 with ``message`` past ``limit``.

    For console forms that check a password (sign-in, joining with an existing account).
    """
    if not current_app.config.get("RATE_LIMIT"):
        return
    limits = current_app.extensions["mentorflow_rate_limits"]
    rate_limit = limits.throttles.get((limit, scope))
    if rate_limit is None:
        rate_limit = limits.throttles[(limit, scope)] = RateLimit(limit, limits.storage, scope)
    retry_after = rate_limit.hit(request.remote_addr or "unknown")
    if retry_after is not None:
        raise TooManyRequests(description=message, retry_after=retry_after)
