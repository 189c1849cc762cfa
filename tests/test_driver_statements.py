"""The hot path's statements run on the driver's cursor: what they write and read must be
exactly what the ORM writes and reads, on both backends."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import sqlalchemy as sa

from mentorflow.flows import learner_sessions
from mentorflow.flows.models import EventKind, LearnerSession, SessionStatus, StepEvent
from mentorflow.platform import idempotency
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
CONTACT = {"name": "Ada Lovelace", "email": "ada@example.org"}


def walk_to_the_end(walker) -> None:
    walker.start("onboarding")
    for step_id, answer in [
        ("phase-1-step-1", None),
        ("phase-1-step-2", "new"),
        ("phase-2-step-1", 7),
        ("phase-2-step-2", CONTACT),
    ]:
        assert walker.answer(step_id, answer).status_code == 200, step_id


def test_a_session_written_by_the_hot_path_reads_back_the_same_through_the_orm(
    ctx, create_org, publish_flow, learner
):
    keys = create_org("driver")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walk_to_the_end(walker)
    db.session.rollback()

    orm = db.session.get(LearnerSession, walker.session_id)
    record = learner_sessions.find_session(keys.org.id, walker.session_id)
    assert record is not None
    for field in (
        "id",
        "org_id",
        "flow_id",
        "flow_version_id",
        "current_step_id",
        "answers",
        "status",
        "name",
        "email",
        "phone",
        "version",
        "created_at",
        "updated_at",
        "completed_at",
    ):
        assert getattr(record, field) == getattr(orm, field), field
    assert record.status is SessionStatus.COMPLETED
    assert record.answers["contact"] == CONTACT and orm.name == "Ada Lovelace"
    assert record.completed_at.tzinfo is UTC and orm.completed_at.tzinfo is UTC
    assert orm.last_activity_at == orm.updated_at

    events = db.session.scalars(
        sa.select(StepEvent).where(StepEvent.session_id == orm.id).order_by(StepEvent.seq)
    ).all()
    assert [(e.seq, e.step_id, e.kind) for e in events] == [
        (1, "phase-1-step-1", EventKind.ANSWERED),
        (2, "phase-1-step-2", EventKind.ANSWERED),
        (3, "phase-2-step-1", EventKind.ANSWERED),
        (4, "phase-2-step-2", EventKind.ANSWERED),
    ]
    assert events[2].answer == 7 and events[3].answer == CONTACT
    assert events[3].created_at.tzinfo is UTC


def test_outbox_rows_of_the_hot_path_are_whole(ctx, create_org, publish_flow, learner):
    keys = create_org("driver-outbox")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walk_to_the_end(walker)
    db.session.rollback()

    outbox = db.session.scalars(
        sa.select(OutboxEvent).where(OutboxEvent.session_id == walker.session_id)
    ).all()
    # session.started, four step.completed, session.completed
    assert sorted(e.type for e in outbox).count("step.completed") == 4
    completed = next(e for e in outbox if e.type == "step.completed" and e.payload["seq"] == 4)
    assert completed.payload["answer"] == CONTACT
    assert completed.created_at.tzinfo is UTC
    deliveries = db.session.scalars(
        sa.select(Delivery).where(Delivery.event_id == completed.id)
    ).all()
    assert sorted(d.sink for d in deliveries) == sorted(ctx.config["SINKS"])
    assert {d.status for d in deliveries} == {DeliveryStatus.PENDING}
    assert all(d.attempts == 0 and d.next_attempt_at.tzinfo is UTC for d in deliveries)


def test_a_stored_idempotent_response_reads_back_as_stored(ctx, create_org, publish_flow, learner):
    keys = create_org("driver-keys")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    first = walker.answer("phase-1-step-1", None, Idempotency_Key="k-1")
    db.session.rollback()
    stored = idempotency.find_stored(keys.org.id, walker.session_id, "k-1")
    assert stored is not None
    assert stored.status_code == 200 and stored.response_body == first.get_data(as_text=True)
    assert idempotency.find_stored(keys.org.id, walker.session_id, "k-2") is None


def test_after_the_database_drops_its_connections_one_request_fails_then_all_work(
    ctx, backend, create_org, publish_flow, learner
):
    if backend != "postgresql":
        return  # SQLite has no server to restart
    keys = create_org("driver-restart")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    assert walker.answer("phase-1-step-1", None).status_code == 200
    db.session.rollback()
    db.session.remove()
    # A pool of several idle connections, as a busy process has.
    held = [db.engine.connect() for _ in range(4)]
    for connection in held:
        connection.execute(sa.text("SELECT 1"))
        connection.close()
    # What a server restart does to the pool: every connection it holds is gone.
    with db.engine.connect() as admin:
        admin.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    db.session.remove()
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(walker.get().status_code)
        except sa.exc.OperationalError:  # the test client re-raises what would be a 500
            outcomes.append("lost connection")
    assert outcomes[0] in (200, "lost connection")
    assert outcomes[1:] == [200] * 4
    after = walker.answer("phase-1-step-2", "new")
    assert after.status_code == 200 and after.json["session"]["version"] == 3
