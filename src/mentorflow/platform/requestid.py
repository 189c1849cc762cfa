"""Request ids: each API request carries one, echoed in ``X-Request-Id`` and in its log records.

A client's own ``X-Request-Id`` is kept when it is sane (1 to 128 letters, digits and
``-_.:/+=@``), so a support request can quote the id the client logged; anything else is
replaced by a generated one rather than echoed or written to the logs.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from flask import Flask, Response, g, has_request_context, request

HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9\-_.:/+=@]{1,128}")
#: ``%(request_id)s`` of a record logged outside any request.
NO_REQUEST = "-"
#: Lines logged outside a request keep their usual shape; a request's add its id.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"

log = logging.getLogger(__name__)


def current_request_id() -> str:
    """Return this request's id, or ``-`` outside a request."""
    if not has_request_context():
        return NO_REQUEST
    request_id = g.get("request_id")
    if request_id is None:
        request_id = g.request_id = _accepted(request.headers.get(HEADER)) or uuid.uuid4().hex
    return request_id


def _accepted(value: str | None) -> str | None:
    return value if value is not None and _SANE.fullmatch(value) else None


def _install_log_record_factory() -> None:
    """Give every log record a ``request_id`` attribute (the request's id, or ``-``)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "adds_request_id", False):
        return

    def record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = current_request_id()
        return record

    record_with_request_id.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record_with_request_id)


def init_request_id(app: Flask) -> None:
    """Give every request an id first thing, and echo it on the response (every path)."""
    _install_log_record_factory()

    @app.before_request
    def _assign_request_id() -> None:
        current_request_id()

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        response.headers[HEADER] = current_request_id()
        if request.path.startswith("/v1"):
            # An access line (off at the default INFO level) that a request's id ties to the
            # request's other records.
            log.debug("%s %s -> %s", request.method, request.path, response.status_code)
        return response


class RequestIdFormatter(logging.Formatter):
    """Formats ``LOG_FORMAT``: ``… mentorflow.x [<request id>]: message`` within a request."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", NO_REQUEST)
        record.request_tag = "" if request_id == NO_REQUEST else f" [{request_id}]"
        return super().format(record)


def log_handler() -> logging.Handler:
    """Return a stderr handler whose lines carry the request id of a request's records."""
    handler = logging.StreamHandler()
    handler.setFormatter(RequestIdFormatter(LOG_FORMAT))
    return handler
