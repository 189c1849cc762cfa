"""Sessions as they change: what the push hub polls, and server-sent events of a session."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app

from mentorflow.flows.learner_state import STATE_KEY_PREFIX, read_state_versions
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.extensions import db
from mentorflow.platform.push import Change, Subscription, current_hub

#: Ask EventSource to reconnect this soon (ms) after a stream ends.
RECONNECT_MS = 2000


def read_changes(
    session_ids: set[str],
    flows: set[tuple[int, int]],
    since: datetime,
    learner_ids: set[int] | None = None,
) -> list[Change]:
    """Return the versions of ``session_ids``, of ``flows``' sessions updated since ``since``,
    and of ``learner_ids``' states and sessions updated since then."""
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
    learners = sorted(learner_ids or ())
    for start in range(0, len(learners), 500):
        conditions.append(
            sa.and_(
                LearnerSession.learner_id.in_(learners[start : start + 500]),
                LearnerSession.updated_at >= since,
            )
        )
    changes = [
        Change(org_id, 0, f"{STATE_KEY_PREFIX}{learner_id}", version, learner_id)
        for org_id, learner_id, version in read_state_versions(set(learners))
    ]
    if conditions:
        rows = db.session.execute(
            sa.select(
                LearnerSession.org_id,
                LearnerSession.flow_id,
                LearnerSession.id,
                LearnerSession.version,
                LearnerSession.learner_id,
            ).where(sa.or_(*conditions))
        ).all()
        changes += [
            Change(row.org_id, row.flow_id, row.id, row.version, row.learner_id) for row in rows
        ]
    db.session.close()
    return changes


def session_exists(org_id: int, session_id: str) -> bool:
    """Return whether the org has this session (one indexed read)."""
    found = db.session.scalar(
        sa.select(LearnerSession.version).where(
            LearnerSession.id == session_id, LearnerSession.org_id == org_id
        )
    )
    return found is not None


def sse(data: Any, *, event: str, event_id: int | None = None) -> str:
    """Return one server-sent event carrying ``data`` as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


#: Called (in an app context) with the changes heard and whether some may have been missed
#: (re-read everything watched); returns the events to send, or None to end the stream.
OnWake = Callable[[list[Change], bool], "list[str] | None"]


def follow(
    subscription: Subscription,
    first: list[str],
    *,
    on_wake: OnWake,
    still_allowed: Callable[[], bool],
) -> Iterable[str]:
    """Return the body of a stream: ``first``, then what ``on_wake`` makes of each change heard,
    and a heartbeat comment every ``STREAM_HEARTBEAT_SECONDS``, when ``still_allowed`` is
    checked again (the stream ends once it is false). Ends after ``STREAM_MAX_SECONDS``.

    Holds no database connection while it waits.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    hub = current_hub()
    heartbeat = float(app.config["STREAM_HEARTBEAT_SECONDS"])
    lifetime = float(app.config["STREAM_MAX_SECONDS"])

    def in_app_context(function: Callable[..., Any], *args: Any) -> Any:
        # The body is iterated after the request's context is gone. Each look at the database
        # gets an app context (and so a database session) of its own, ended before the next
        # wait: no connection is held between events, and no context spans a yield.
        with app.app_context():
            return function(*args)

    def events() -> Iterator[str]:
        try:
            now = time.monotonic()
            deadline, next_beat = now + lifetime, now + heartbeat
            yield f"retry: {RECONNECT_MS}\n\n"
            yield from first
            while (now := time.monotonic()) < deadline:
                changes, resync = subscription.wait(min(next_beat, deadline) - now)
                beat = time.monotonic() >= next_beat
                if beat and not in_app_context(still_allowed):
                    return
                if changes or resync:
                    texts = in_app_context(on_wake, changes, resync)
                    if texts is None:
                        return
                    yield from texts
                if beat:
                    next_beat = time.monotonic() + heartbeat
                    yield ": heartbeat\n\n"
        finally:
            hub.unsubscribe(subscription)

    return _Body(events(), lambda: hub.unsubscribe(subscription))


class _Body:
    """A stream's body that lets its subscription go when the server closes it, even if it
    was never iterated (the client left before the first byte)."""

    def __init__(self, events: Iterator[str], release: Callable[[], None]) -> None:
        self._events, self._release = events, release

    def __iter__(self) -> Iterator[str]:
        return self._events

    def close(self) -> None:
        self._events.close()  # type: ignore[attr-defined]
        self._release()
