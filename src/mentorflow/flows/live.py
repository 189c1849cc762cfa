"""Sessions as they change: what the push hub polls, and server-sent events of a session."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app

from mentorflow.flows.models import LearnerSession
from mentorflow.platform.extensions import db
from mentorflow.platform.push import Change, Subscription, current_hub

#: Ask EventSource to reconnect this soon (ms) after a stream ends.
RECONNECT_MS = 2000


def read_changes(
    session_ids: set[str], flows: set[tuple[int, int]], since: datetime
) -> list[Change]:
    """Return the versions of ``session_ids`` and of ``flows``' sessions updated since ``since``."""
    conditions: list[Any] = []
    ids = sorted(session_ids)
    for start in range(0, len(ids), 500):
        conditions.append(LearnerSession.id.in_(ids[start : start + 500]))
    for org_id, flow_id in flows:
        conditions.append(
            sa.and_(
                LearnerSession.org_id == org_id,
                LearnerSession.flow_id == flow_id,
                LearnerSession.updated_at >= since,
            )
        )
    if not conditions:
        return []
    rows = db.session.execute(
        sa.select(
            LearnerSession.org_id,
            LearnerSession.flow_id,
            LearnerSession.id,
            LearnerSession.version,
        ).where(sa.or_(*conditions))
    ).all()
    db.session.close()
    return [Change(row.org_id, row.flow_id, row.id, row.version) for row in rows]


def sse(data: Any, *, event: str, event_id: int | None = None) -> str:
    """Return one server-sent event carrying ``data`` as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def follow(
    subscription: Subscription,
    first: list[str],
    *,
    read: Callable[[], tuple[int, str] | None],
    sent_version: int,
    still_allowed: Callable[[], bool],
) -> Iterator[str]:
    """Yield ``first``, then an event each time ``read`` finds a newer version, and a heartbeat
    comment every ``STREAM_HEARTBEAT_SECONDS`` (when ``still_allowed`` is checked again and the
    session re-read, in case a change was not heard). Ends when ``read`` finds nothing, the
    credential no longer works, or after ``STREAM_MAX_SECONDS``.

    ``read`` returns (version, event text) of the current state. Holds no database connection
    while it waits.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    hub = current_hub()
    heartbeat = float(app.config["STREAM_HEARTBEAT_SECONDS"])
    lifetime = float(app.config["STREAM_MAX_SECONDS"])

    def in_app_context(function: Callable[[], Any]) -> Any:
        # The body is iterated after the request's context is gone. Each look at the database
        # gets an app context (and so a database session) of its own, ended before the next
        # wait: no connection is held between events, and no context spans a yield.
        with app.app_context():
            return function()

    def events() -> Iterator[str]:
        try:
            yield from _follow(
                subscription,
                first,
                lambda: in_app_context(read),
                sent_version,
                lambda: in_app_context(still_allowed),
                heartbeat,
                lifetime,
            )
        finally:
            hub.unsubscribe(subscription)

    return events()


def _follow(
    subscription: Subscription,
    first: list[str],
    read: Callable[[], tuple[int, str] | None],
    sent_version: int,
    still_allowed: Callable[[], bool],
    heartbeat: float,
    lifetime: float,
) -> Iterator[str]:
    now = time.monotonic()
    deadline = now + lifetime
    next_beat = now + heartbeat
    yield f"retry: {RECONNECT_MS}\n\n"
    yield from first
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        changes = subscription.wait(min(next_beat, deadline) - now)
        beat = time.monotonic() >= next_beat
        if beat and not still_allowed():
            return
        if beat or any(change.version > sent_version for change in changes):
            current = read()
            if current is None:
                return
            version, text = current
            if version > sent_version:
                sent_version = version
                yield text
        if beat:
            next_beat = time.monotonic() + heartbeat
            yield ": heartbeat\n\n"
