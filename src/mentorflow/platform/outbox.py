"""The transactional outbox: events written with the change that caused them.

``emit_event`` adds an outbox row and one pending delivery per configured sink to the current
transaction: the ORM session's, or a :func:`write_transaction` (the learner hot path's Core
transaction). Nothing leaves the process until that transaction commits; what happens after the
commit (waking the workers) is registered per app with :func:`register_after_commit`.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship
from sqlalchemy.sql.functions import FunctionElement

from mentorflow.platform.db import (
    IMMEDIATE,
    DriverStatement,
    WritePart,
    enum_column,
    execute_together,
    utcnow,
)
from mentorflow.platform.extensions import db

log = logging.getLogger(__name__)


class EventType(enum.StrEnum):
    SESSION_STARTED = "session.started"
    STEP_COMPLETED = "step.completed"
    SESSION_COMPLETED = "session.completed"
    SESSION_ABANDONED = "session.abandoned"
    STEP_REOPENED = "step.reopened"
    MESSAGE_CREATED = "message.created"
    SESSION_CLAIMED = "session.claimed"
    LEARNER_STATE_CHANGED = "learner.state_changed"
    SESSION_MIGRATED = "session.migrated"
    LEARNER_ERASED = "learner.erased"
    SESSION_ERASED = "session.erased"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class current_transaction_id(FunctionElement):  # named as the SQL function it is
    """The id of the inserting transaction: PostgreSQL's ``pg_current_xact_id()``; 0 elsewhere.

    The change feed orders events by (transaction id, feed_seq) and shows only those of
    finished transactions (``mentorflow.flows.feed``). SQLite serialises its writers, so there
    the order of ``feed_seq`` alone is the commit order and the id is 0.
    """

    type = sa.BigInteger()
    inherit_cache = True


@compiles(current_transaction_id, "postgresql")
def _current_transaction_id_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    # xid8 has no cast to bigint; its text form is the 64-bit (epoch-extended) number.
    return "((pg_current_xact_id()::text)::bigint)"


@compiles(current_transaction_id)
def _current_transaction_id_default(element: Any, compiler: Any, **kw: Any) -> str:
    return "0"


class OutboxEvent(db.Model):
    """An event written with the change that caused it: the sinks' outbox and the change feed.

    ``txid`` and ``feed_seq`` are set by the database (a server default and an identity on
    PostgreSQL; on SQLite a trigger numbers rows from ``feed_sequence``), so the hot path's
    INSERT does not name them.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (sa.Index("ix_outbox_events_org_feed", "org_id", "txid", "feed_seq"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("learner_sessions.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(sa.String(40))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    txid: Mapped[int] = mapped_column(sa.BigInteger, server_default=current_transaction_id())
    feed_seq: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity())

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="event", cascade="all, delete-orphan"
    )


class FeedSequence(db.Model):
    """SQLite only: the last ``feed_seq`` given, so a number is never given twice (a trigger
    on ``outbox_events`` takes the next one). PostgreSQL uses the column's identity."""

    __tablename__ = "feed_sequence"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(sa.BigInteger)


class Delivery(db.Model):
    __tablename__ = "deliveries"
    __table_args__ = (sa.Index("ix_deliveries_due", "status", "next_attempt_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("outbox_events.id", ondelete="CASCADE"), primary_key=True
    )
    sink: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    status: Mapped[DeliveryStatus] = mapped_column(
        enum_column(DeliveryStatus), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    delivered_at: Mapped[datetime | None]

    event: Mapped[OutboxEvent] = relationship(back_populates="deliveries")


_EVENT_COLUMNS = ("id", "org_id", "session_id", "type", "payload", "created_at")
_DELIVERY_COLUMNS = ("event_id", "sink", "status", "attempts", "next_attempt_at")
_MULTI_ROW_INSERTS: dict[tuple[str, int], DriverStatement] = {}


def _insert_rows(table: sa.Table, columns: tuple[str, ...], count: int) -> DriverStatement:
    """One INSERT of ``count`` rows (one round trip, whatever the number of rows); the
    parameters of row ``i`` are named ``{column}_{i}``."""
    statement = _MULTI_ROW_INSERTS.get((table.name, count))
    if statement is None:
        rows = [
            {name: sa.bindparam(f"{name}_{i}", type_=table.c[name].type) for name in columns}
            for i in range(count)
        ]
        statement = DriverStatement(table.insert().values(rows))
        _MULTI_ROW_INSERTS[(table.name, count)] = statement
    return statement


def _numbered(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}


@dataclass
class WriteTransaction:
    """A Core write transaction and the outbox events emitted in it.

    With ``one_statement`` (PostgreSQL only), its writes (:meth:`write`, :func:`emit_event`)
    are held and sent at its end as one statement (:func:`execute_together`): a step commit
    is then BEGIN, the locking read, that statement and COMMIT, four round trips.
    """

    connection: sa.Connection
    event_ids: list[uuid.UUID] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    one_statement: bool = False
    held: list[WritePart] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def write(
        self,
        statement: DriverStatement,
        params: dict[str, Any],
        *,
        unless_row: type[Exception] | None = None,
    ) -> None:
        """Run an INSERT or UPDATE now, or hold it for the end (``one_statement``).

        ``unless_row`` (held writes only, a statement with RETURNING): raised at the end if the
        statement returned no row, rolling the transaction back.
        """
        if self.one_statement:
            self.held.append((statement, params, unless_row))
        else:
            statement.execute(self.connection, params)

    def add_event(self, event: dict[str, Any], sinks: list[str]) -> None:
        """Write an outbox row and its pending deliveries (now, or held for the end)."""
        deliveries = _pending_deliveries(event, sinks)
        if self.one_statement:
            self.events.append(event)
            self.deliveries += deliveries
        else:
            _write_event(self.connection, event, deliveries)
        self.event_ids.append(event["id"])

    def send_held(self) -> None:
        """Send the held writes as one statement: the events (one multi-row INSERT, in the
        order emitted), their deliveries (one more), then the other writes."""
        parts: list[WritePart] = list(self.held)
        if self.events:
            table = OutboxEvent.__table__
            insert = _insert_rows(table, _EVENT_COLUMNS, len(self.events))
            parts.append((insert, _numbered(self.events), None))
        if self.deliveries:
            table = Delivery.__table__
            insert = _insert_rows(table, _DELIVERY_COLUMNS, len(self.deliveries))
            parts.append((insert, _numbered(self.deliveries), None))
        self.held, self.events, self.deliveries = [], [], []
        if parts:
            execute_together(self.connection, parts)


def _pending_deliveries(event: dict[str, Any], sinks: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "event_id": event["id"],
            "sink": sink,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": event["created_at"],
        }
        for sink in sinks
    ]


def _write_event(
    connection: sa.Connection, event: dict[str, Any], deliveries: list[dict[str, Any]]
) -> None:
    _insert_rows(OutboxEvent.__table__, _EVENT_COLUMNS, 1).execute(connection, _numbered([event]))
    if deliveries:
        insert = _insert_rows(Delivery.__table__, _DELIVERY_COLUMNS, len(deliveries))
        insert.execute(connection, _numbered(deliveries))


@contextmanager
def write_transaction(*, one_statement: bool = False) -> Iterator[WriteTransaction]:
    """Run the block in a write transaction on a Core connection, outside the ORM session.

    For the learner hot path, where the session's bookkeeping costs more than the statements.
    The block's end commits (an exception rolls back); then the after-commit hooks see the
    events it emitted, as after a session commit. On SQLite it is ``BEGIN IMMEDIATE``.
    ``one_statement`` holds the block's writes and sends them as one statement before the
    commit, on PostgreSQL (SQLite writes each at once, as without it).
    """
    engine = db.engine
    sqlite = engine.dialect.name == "sqlite"
    options = {IMMEDIATE: True} if sqlite else {}
    with engine.connect().execution_options(**options) as connection:
        transaction = WriteTransaction(connection, one_statement=one_statement and not sqlite)
        with connection.begin():
            yield transaction
            transaction.send_held()
    _run_hooks(transaction.event_ids)
    _run_callbacks(transaction.callbacks)


def connection_for(transaction: WriteTransaction | None) -> sa.Connection:
    """The connection to write on: ``transaction``'s, else the ORM session's."""
    return transaction.connection if transaction else db.session.connection()


def write_in(
    transaction: WriteTransaction | None, statement: DriverStatement, params: dict[str, Any]
) -> None:
    """Run a write in ``transaction`` (perhaps held for its end), else in the ORM session's."""
    if transaction:
        transaction.write(statement, params)
    else:
        statement.execute(db.session.connection(), params)


_ROUTERS = "mentorflow.sink_routers"
#: Returns the further sinks (beyond ``SINKS``) an org's event of a type goes to, reading on
#: the connection given: e.g. the org's webhook endpoints.
SinkRouter = Callable[[sa.Connection, int, str], list[str]]


def register_sink_router(app: Flask, router: SinkRouter) -> None:
    """Let ``router`` add sinks to each event ``app`` emits (see :func:`sinks_for_event`)."""
    routers = app.extensions.setdefault(_ROUTERS, [])
    if router not in routers:
        routers.append(router)


def sinks_for_event(connection: sa.Connection, org_id: int, event_type: str) -> list[str]:
    """Return the sinks an event gets a delivery for: every configured sink (``SINKS``), then
    those the registered routers add (the org's webhook endpoints subscribed to the type)."""
    sinks = list(current_app.config["SINKS"])
    for router in current_app.extensions.get(_ROUTERS, ()):
        sinks.extend(router(connection, org_id, event_type))
    return sinks


def emit_event(
    org_id: int,
    event_type: EventType,
    payload: dict[str, Any],
    *,
    session_id: str | None = None,
    transaction: WriteTransaction | None = None,
) -> uuid.UUID:
    """Add an outbox event and a pending delivery per sink (:func:`sinks_for_event`) to this
    transaction (``transaction``, else the ORM session's).

    A preview session's event (``payload["preview"]``, a staff member trying a draft) is
    dropped: no row, no delivery, nothing in the feed.
    """
    event = {
        "id": uuid.uuid4(),
        "org_id": org_id,
        "session_id": session_id,
        "type": str(event_type),
        "payload": payload,
        "created_at": utcnow(),
    }
    if payload.get("preview"):
        return event["id"]
    sinks = sinks_for_event(connection_for(transaction), org_id, str(event_type))
    if transaction:
        transaction.add_event(event, sinks)
    else:
        # Pre-built inserts on the driver's cursor: the ORM's unit of work would cost more
        # than the statements themselves.
        _write_event(db.session.connection(), event, _pending_deliveries(event, sinks))
        _pending_events(db.session()).append(event["id"])
    return event["id"]


_HOOKS = "mentorflow.after_commit_hooks"
#: Called with the ids of the events a transaction committed; must never raise.
AfterCommitHook = Callable[[list[uuid.UUID]], None]


def register_after_commit(app: Flask, hook: AfterCommitHook) -> None:
    """Run ``hook`` after each of ``app``'s transactions that emitted events commits."""
    hooks = app.extensions.setdefault(_HOOKS, [])
    if hook not in hooks:
        hooks.append(hook)


def _pending_events(session: Session) -> list[uuid.UUID]:
    return session.info.setdefault("mentorflow_outbox", [])


def call_after_commit(callback: Callable[[], None], transaction: WriteTransaction | None) -> None:
    """Call ``callback`` once ``transaction`` (else the ORM session's) commits; never on
    rollback."""
    if transaction:
        transaction.callbacks.append(callback)
    else:
        db.session().info.setdefault(_CALLBACKS, []).append(callback)


_CALLBACKS = "mentorflow_after_commit"


@event.listens_for(Session, "after_commit")
def _run_after_commit_hooks(session: Session) -> None:
    _run_hooks(session.info.pop("mentorflow_outbox", None))
    _run_callbacks(session.info.pop(_CALLBACKS, None))


def _run_callbacks(callbacks: list[Callable[[], None]] | None) -> None:
    for callback in callbacks or ():
        try:
            callback()
        except Exception:
            log.exception("after-commit callback %r failed", callback)


def _run_hooks(event_ids: list[uuid.UUID] | None) -> None:
    if not event_ids or not has_app_context():
        return
    for hook in current_app.extensions.get(_HOOKS, ()):
        try:
            hook(event_ids)
        except Exception:
            # The events are committed; the periodic sweep delivers them even if waking
            # the workers failed (broker down). A learner's step never fails for this.
            log.exception("after-commit hook %r failed for events %s", hook, event_ids)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending_events(session: Session, previous_transaction: Any) -> None:
    session.info.pop("mentorflow_outbox", None)
    session.info.pop(_CALLBACKS, None)
