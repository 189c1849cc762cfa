"""The change feed: an org's events (or one session's) page by page behind an opaque cursor.

The feed reads ``outbox_events``, which holds every event type (``session.started``,
``step.completed``, ``step.reopened``, ``session.completed``, ``session.abandoned``) written in
the transaction of the change that caused it. Nothing prunes them, so they are kept for as
long as the session exists (the contract asks for at least 30 days).

Ordering and its proof. A consumer that stores ``next_cursor`` must never miss an event nor
see one twice, even when transactions commit out of order. A sequence number alone fails: a
slow transaction takes number 7, a fast one takes 8 and commits, a reader returns 8 and moves
its cursor past 7; when the slow one commits, 7 is behind every cursor and never read.

On PostgreSQL each event row carries ``txid``, its inserting (top-level) transaction's id
(``pg_current_xact_id()``, a server default, so the hot path's INSERT is unchanged) and
``feed_seq`` from an identity. The cursor is ``(txid, feed_seq)``; a page is the events with
``(txid, feed_seq) > cursor`` *and* ``txid < xmin``, in that order, where ``xmin`` is
``pg_snapshot_xmin(pg_current_snapshot())`` of the reading statement's own snapshot: every
transaction with an id below ``xmin`` has finished (committed or rolled back) before that
snapshot was taken, so its events are either all visible to the read or will never be.

- Nothing is seen twice: pages are strictly increasing in ``(txid, feed_seq)``, each starting
  after the previous page's last key.
- Nothing is missed: say a read returned events up to key ``c = (t, s)``, with ``t < xmin``.
  Every event with a key ``<= c`` has a txid ``<= t < xmin``, so its transaction had finished
  before that read: it was visible to it (and returned, as the page is the ordered run of
  visible keys after the previous cursor) or it never commits. Any event that commits later
  belongs to a transaction still running then, whose id is ``>= xmin > t``, so its key sorts
  after ``c`` and a later page returns it once its transaction and every older one finished.
  Events of one transaction share its txid and become visible together, ordered by
  ``feed_seq``.

The price is latency, not correctness: an event shows once every transaction that started
before it finished, so a write transaction left open (anywhere in the cluster) holds the feed
back until it ends. Reading transactions take no transaction id and hold nothing back.

On SQLite writers are serialised (one write lock, held from the first write to the commit):
a trigger numbers each row from ``feed_sequence`` under that lock, so ``feed_seq`` order is
commit order, the visible events are always a prefix of it, and ``txid`` is 0. Numbers come
from ``feed_sequence`` rather than ``MAX(feed_seq) + 1`` so that deleting the newest events
never lets a number be given again behind a stored cursor.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from mentorflow.flows.models import Flow, LearnerSession
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import EventType, OutboxEvent

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
EVENT_TYPES = tuple(str(event_type) for event_type in EventType)

#: Payload members shown as the event's own fields, or kept for the sinks only.
_NOT_DATA = (
    "org",
    "session_id",
    "flow",
    "flow_version",
    "step_id",
    "occurred_at",
    "distinct_id",
    "memory_container",
    "external_user_id",
)
_CURSOR_TEXT = re.compile(r"^(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})$")
_MAX_KEY = 2**63 - 1


class InvalidCursor(ValueError):
    """The text is not a cursor this feed gave."""


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in the feed: after the event with this (transaction id, sequence) key."""

    txid: int = 0
    seq: int = 0

    def encode(self) -> str:
        """Return the opaque text form handed to clients."""
        return base64.urlsafe_b64encode(f"{self.txid}.{self.seq}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor's text form; raise InvalidCursor for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise InvalidCursor(text) from exc
        match = _CURSOR_TEXT.match(raw)
        if not match or len(text) > 64:
            raise InvalidCursor(text)
        txid, seq = int(match[1]), int(match[2])
        if txid > _MAX_KEY or seq > _MAX_KEY:
            raise InvalidCursor(text)
        return cls(txid, seq)


@dataclass
class FeedPage:
    """One page of events, ready for orjson (each ``data`` is an ``orjson.Fragment``), and
    where the next page starts."""

    events: list[dict[str, Any]]
    next_cursor: str
    has_more: bool

    def body(self) -> dict[str, Any]:
        return {"events": self.events, "next_cursor": self.next_cursor, "has_more": self.has_more}


_events = OutboxEvent.__table__
_sessions = LearnerSession.__table__
# ``data``, the rest of the payload, is cut by the database and handed on as the JSON text it
# is (an ``orjson.Fragment``): decoding and encoding it again cost more than the query, and
# the text keeps every value exactly as stored. The names removed are constants.
_POSTGRESQL_NAMES = ", ".join(f"'{name}'" for name in _NOT_DATA)
_SQLITE_PATHS = ", ".join(f"'$.{name}'" for name in _NOT_DATA)
_DATA_POSTGRESQL = sa.literal_column(
    f"(outbox_events.payload - ARRAY[{_POSTGRESQL_NAMES}]::text[])::text"
)
_DATA_SQLITE = sa.literal_column(f"json_remove(outbox_events.payload, {_SQLITE_PATHS})")
#: The reading statement's own snapshot's xmin, as the bigint ``txid`` is stored.
_SNAPSHOT_XMIN = sa.literal_column("((pg_snapshot_xmin(pg_current_snapshot())::text)::bigint)")


def read_events(
    org_id: int,
    *,
    after: Cursor | None = None,
    limit: int = DEFAULT_LIMIT,
    types: list[str] | None = None,
    flow: str | None = None,
    learner: str | None = None,
    session_id: str | None = None,
) -> FeedPage:
    """Return the org's next ``limit`` events after ``after``, oldest first, with filters."""
    after = after or Cursor()
    key = sa.tuple_(_events.c.txid, _events.c.feed_seq)
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    payload = _events.c.payload
    stmt = (
        sa.select(
            _events.c.id,
            _events.c.txid,
            _events.c.feed_seq,
            _events.c.type,
            _events.c.created_at,
            _events.c.session_id,
            # A learner's own events (learner.state_changed) have no session: their payload
            # names the learner.
            sa.func.coalesce(
                _sessions.c.external_user_id, payload["external_user_id"].as_string()
            ).label("external_user_id"),
            payload["flow"].as_string().label("flow"),
            payload["flow_version"].as_integer().label("flow_version"),
            payload["step_id"].as_string().label("step_id"),
            (_DATA_POSTGRESQL if postgresql else _DATA_SQLITE).label("data"),
        )
        .select_from(_events.outerjoin(_sessions, _sessions.c.id == _events.c.session_id))
        .where(_events.c.org_id == org_id, key > sa.tuple_(after.txid, after.seq))
        .order_by(_events.c.txid, _events.c.feed_seq)
        .limit(limit + 1)
    )
    if postgresql:
        stmt = stmt.where(_events.c.txid < _SNAPSHOT_XMIN)
    if session_id is not None:
        stmt = stmt.where(_events.c.session_id == session_id)
    if types:
        stmt = stmt.where(_events.c.type.in_(types))
    if learner is not None:
        stmt = stmt.where(
            sa.or_(
                _sessions.c.external_user_id == learner,
                sa.and_(
                    _events.c.session_id.is_(None),
                    payload["external_user_id"].as_string() == learner,
                ),
            )
        )
    if flow is not None:
        flow_ids = sa.select(Flow.id).where(Flow.org_id == org_id, Flow.slug == flow)
        stmt = stmt.where(_sessions.c.flow_id.in_(flow_ids))
    rows = db.session.execute(stmt).all()
    has_more = len(rows) > limit
    events = [_event(row) for row in rows[:limit]]
    next_cursor = events[-1]["cursor"] if events else after.encode()
    return FeedPage(events, next_cursor, has_more)


def _event(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "cursor": Cursor(row.txid, row.feed_seq).encode(),
        "type": row.type,
        "occurred_at": row.created_at.isoformat(),
        "session_id": row.session_id,
        "external_user_id": row.external_user_id,
        "flow": row.flow,
        "flow_version": row.flow_version,
        "step_id": row.step_id,
        "data": orjson.Fragment(row.data),
    }
