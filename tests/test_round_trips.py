"""A step commit costs at most four round trips to PostgreSQL (BEGIN, one statement that
locks the session and reads the Idempotency-Key's record, one statement that writes
everything, COMMIT): counted from the driver's own protocol trace, not timed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from psycopg import pq
from sqlalchemy import event

from mentorflow.delivery import webhooks
from mentorflow.flows import session_locks
from mentorflow.flows.models import EventKind, StepEvent
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, OutboxEvent

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


class ProtocolTrace:
    """The frontend messages libpq sent on every pooled connection while the trace was on."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    @property
    def round_trips(self) -> int:
        """Simple queries and extended-protocol syncs: each waits for the server once.

        Not counted: psycopg preparing a statement (a named Parse and its Sync, with no
        Execute), which it does once per connection when a statement has run
        ``prepare_threshold`` times: a cost per connection, not per request.
        """
        count, executed = 0, False
        for line in self.lines:
            kind = line.split("\t")[2:3]
            if kind == ["Execute"]:
                executed = True
            elif kind == ["Query"]:
                count += 1
            elif kind == ["Sync"]:
                count += executed
                executed = False
        return count

    @property
    def statements(self) -> list[str]:
        """The SQL of each statement sent (a simple Query or a Parse), in order; a prepared
        statement executed again is ``EXECUTE name``."""
        sent = []
        for line in self.lines:
            _, _, kind, rest = [*line.split("\t", 3), ""][:4]
            if kind == "Query":
                sent.append(rest.strip().strip('"'))
            elif kind == "Parse":  # "name" "sql" ...
                sent.append(rest.strip()[1:].split('" "', 1)[1])
            elif kind == "Bind":  # "portal" "statement" ...
                name = rest.strip()[1:].split('" "', 1)[1].split('"', 1)[0]
                if name and not any(name in line for line in self.lines if "\tParse\t" in line):
                    sent.append(f"EXECUTE {name}")
        return sent


@contextmanager
def protocol_trace(engine) -> Iterator[ProtocolTrace]:
    trace = ProtocolTrace()
    handle, name = tempfile.mkstemp(prefix="mentorflow-trace-")
    traced = []

    def on_checkout(dbapi_connection, record, proxy) -> None:
        pgconn = dbapi_connection.pgconn
        pgconn.trace(handle)
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        traced.append(pgconn)

    def on_checkin(dbapi_connection, record) -> None:
        if dbapi_connection is not None:
            dbapi_connection.pgconn.untrace()

    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    try:
        yield trace
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
        for pgconn in traced:
            pgconn.untrace()
        os.close(handle)
        text = Path(name).read_text()
        os.unlink(name)
        # A message per line, but a statement's own line breaks are written as they are.
        records: list[str] = []
        for line in text.splitlines():
            if line[:2] in ("F\t", "B\t") or not records:
                records.append(line)
            else:
                records[-1] += " " + line
        trace.lines = [record for record in records if record.startswith("F\t")]


@pytest.fixture
def postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("round trips are counted on PostgreSQL (SQLite has no server)")


def test_a_step_commit_costs_four_round_trips(
    postgresql_only, ctx, create_org, publish_flow, learner
):
    keys = create_org("round-trips")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    walker.get()  # warm: the org, the version, the pool
    steps = [
        ("phase-1-step-1", None, {}),
        ("phase-1-step-2", "new", {"Idempotency_Key": "k-2"}),
        ("phase-2-step-1", 7, {"Idempotency_Key": "k-3"}),
        # The last step also emits session.completed: still the same four.
        ("phase-2-step-2", {"name": "Ada", "email": "ada@example.org"}, {}),
    ]
    for step_id, answer, headers in steps:
        with protocol_trace(db.engine) as trace:
            response = walker.answer(step_id, answer, **headers)
        assert response.status_code == 200, step_id
        assert trace.round_trips == 4, (step_id, trace.statements)
        begin, locking_read, writes, commit = trace.statements
        assert begin.startswith("BEGIN") and commit == "COMMIT"
        assert "FOR UPDATE OF learner_sessions" in locking_read
        if headers:
            assert "idempotency_keys" in locking_read
        for table in ("learner_sessions", "step_events", "outbox_events", "deliveries"):
            assert table in writes, table
        assert ("INSERT INTO idempotency_keys" in writes) == bool(headers)

    # What was written in those four round trips is all there.
    assert walker.get().json["session"]["status"] == "completed"
    replayed = walker.answer("phase-2-step-1", 7, Idempotency_Key="k-3")
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"
    events = walker.client.get(
        f"/v1/orgs/{keys.slug}/sessions/{walker.session_id}/events",
        headers={"Authorization": f"Bearer {keys.sk}"},
    ).json["events"]
    assert [e["type"] for e in events][-2:] == ["step.completed", "session.completed"]


def test_an_org_with_webhook_endpoints_still_commits_a_step_in_four_round_trips(
    postgresql_only, ctx, create_org, publish_flow, learner, monkeypatch
):
    monkeypatch.setitem(ctx.config, "ALLOW_PRIVATE_SINKS", True)
    keys = create_org("round-trips-webhooks")
    publish_flow(keys.org, SMALL_FLOW)
    begin_write(db.session)
    every, _ = webhooks.create_endpoint(keys.org.id, ctx.config, url="http://127.0.0.1:9/a")
    completions, _ = webhooks.create_endpoint(
        keys.org.id, ctx.config, url="http://127.0.0.1:9/b", event_types=["session.completed"]
    )
    off, _ = webhooks.create_endpoint(
        keys.org.id, ctx.config, url="http://127.0.0.1:9/c", enabled=False
    )
    db.session.commit()
    walker = learner(keys)
    walker.start("onboarding")
    walker.get()
    with protocol_trace(db.engine) as trace:
        response = walker.answer("phase-1-step-1", None, Idempotency_Key="k-1")
    assert response.status_code == 200
    assert trace.round_trips == 4, trace.statements
    # The endpoints were read with the lock, and each event got the deliveries it subscribes to.
    db.session.rollback()
    sinks = db.session.execute(
        sa.select(OutboxEvent.type, Delivery.sink)
        .join(Delivery, Delivery.event_id == OutboxEvent.id)
        .where(OutboxEvent.session_id == walker.session_id)
    ).all()
    step_sinks = {sink for kind, sink in sinks if kind == "step.completed"}
    assert every.sink in step_sinks
    assert completions.sink not in step_sinks and off.sink not in step_sinks


def test_a_replay_costs_three_round_trips(postgresql_only, ctx, create_org, publish_flow, learner):
    keys = create_org("round-trips-replay")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    assert walker.answer("phase-1-step-1", None, Idempotency_Key="k-1").status_code == 200
    with protocol_trace(db.engine) as trace:
        replayed = walker.answer("phase-1-step-1", None, Idempotency_Key="k-1")
    assert replayed.headers["Idempotent-Replayed"] == "true"
    # BEGIN, the locking read that finds the stored response, and the end of the transaction.
    assert trace.round_trips == 3, trace.statements


def test_a_key_committed_while_waiting_for_the_lock_is_replayed_not_applied_twice(
    postgresql_only, ctx, create_org, publish_flow, learner, monkeypatch
):
    """The locking read's snapshot can predate a same-key request that held the lock (and a
    back move that brought the session to the same step): the one write statement finds
    the key taken, rolls back, and the request replays the first response."""
    keys = create_org("key-race")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    first = walker.answer("phase-1-step-1", None, Idempotency_Key="click")
    assert walker.back("phase-1-step-1").status_code == 200
    real = session_locks.lock_session_and_stored
    reads = []

    def snapshot_before_the_first_commit(*args, **kwargs):
        session, stored = real(*args, **kwargs)
        reads.append(stored)
        return session, (None if len(reads) == 1 else stored)

    monkeypatch.setattr(session_locks, "lock_session_and_stored", snapshot_before_the_first_commit)
    again = walker.answer("phase-1-step-1", None, Idempotency_Key="click")
    assert len(reads) == 2  # rolled back once, then replayed
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    db.session.rollback()
    answered = sa.select(sa.func.count()).where(StepEvent.kind == EventKind.ANSWERED)
    assert db.session.scalar(answered) == 1
    assert walker.get().json["session"]["current_step_id"] == "phase-1-step-1"
