"""The public API's rate limit: ``MENTORFLOW_RATE_LIMIT`` requests per client address.

Counted with the ``limits`` library (the engine under Flask-Limiter) in a ``before_request``
hook: one counter increment per API request. Flask-Limiter's own per-request route and
exemption resolution cost more than the step commit's SQL statements (``bench/README.md``);
the console's sign-in throttle, which is per route, stays with Flask-Limiter.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from mentorflow.platform.errors import abort

log = logging.getLogger(__name__)

#: Paths under the limit: the learner and jobs APIs.
API_PREFIX = "/v1/"
_NAMESPACE = "mentorflow-api"
#: After a storage error, let requests through unchecked for this long (then try again).
STORAGE_RETRY_SECONDS = 5.0


class ApiRateLimit:
    """A fixed window per client address, shared by every process using the same storage."""

    def __init__(self, limit: str, storage_url: str) -> None:
        self.item = parse(limit)
        self.limiter = FixedWindowRateLimiter(storage_from_string(storage_url))
        self._storage_down_until = 0.0

    def check(self) -> None:
        """Count this request; answer 429 with Retry-After when the client is over its limit."""
        if not request.path.startswith(API_PREFIX) or time.monotonic() < self._storage_down_until:
            return
        client = request.remote_addr or "unknown"
        try:
            allowed = self.limiter.hit(self.item, _NAMESPACE, client)
            if allowed:
                return
            reset_time, _ = self.limiter.get_window_stats(self.item, _NAMESPACE, client)
        except Exception:
            # A limiter outage (Redis down) must not fail learners' requests.
            self._storage_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
            log.exception("rate-limit storage failed; requests pass unchecked for a while")
            return
        retry_after = max(1, math.ceil(reset_time - time.time()))
        abort(
            429,
            message=f"Too many requests: the limit is {self.item}. Retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def init_rate_limit(app: Flask) -> None:
    """Limit the API when ``RATE_LIMIT`` is set (it is by default)."""
    limit = app.config.get("RATE_LIMIT")
    if not limit:
        return
    rate_limit = ApiRateLimit(limit, app.config["RATE_LIMIT_STORAGE_URL"])
    app.extensions["mentorflow_rate_limit"] = rate_limit
    app.before_request(rate_limit.check)
