"""Periodic work and the operator's view of deliveries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from mentorflow.cli.deliveries import deliveries_retry, deliveries_status
from mentorflow.flows import learner_sessions
from mentorflow.flows.models import LearnerSession
from mentorflow.platform import idempotency
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
WEEK = 7 * 24 * 3600


def idle(session_id: str, seconds: int) -> None:
    begin_write(db.session)
    db.session.execute(
        sa.update(LearnerSession)
        .where(LearnerSession.id == session_id)
        .values(last_activity_at=utcnow() - timedelta(seconds=seconds))
    )
    db.session.commit()


def test_idle_sessions_are_abandoned_after_the_orgs_ttl(ctx, create_org, publish_flow, learner):
    keys = create_org("ttl", abandon_after=3600)
    publish_flow(keys.org, SMALL_FLOW)
    stale, fresh = learner(keys), learner(keys)
    stale.start("onboarding")
    fresh.start("onboarding")
    idle(stale.session_id, 2 * 3600)
    idle(fresh.session_id, 30 * 60)

    begin_write(db.session)
    assert learner_sessions.abandon_inactive_sessions(WEEK) == 1
    db.session.commit()

    state = stale.get().json["session"]
    assert state["status"] == "abandoned" and state["version"] == 2
    assert fresh.get().json["session"]["status"] == "active"
    db.session.rollback()
    events = db.session.scalars(
        sa.select(OutboxEvent.type).where(OutboxEvent.session_id == stale.session_id)
    ).all()
    assert sorted(events) == ["session.abandoned", "session.started"]
    # A learner who comes back picks up where they were.
    resumed = stale.answer("phase-1-step-1")
    assert resumed.status_code == 200 and resumed.json["session"]["status"] == "active"


def test_platform_default_ttl_applies_without_an_org_setting(
    ctx, create_org, publish_flow, learner
):
    keys = create_org("default-ttl")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    idle(walker.session_id, WEEK - 60)
    begin_write(db.session)
    assert learner_sessions.abandon_inactive_sessions(WEEK) == 0
    db.session.commit()
    idle(walker.session_id, WEEK + 60)
    begin_write(db.session)
    assert learner_sessions.abandon_inactive_sessions(WEEK) == 1
    db.session.commit()


def test_idempotency_keys_are_pruned_after_24_hours(ctx, create_org, publish_flow, learner):
    keys = create_org("prune")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    walker.answer("phase-1-step-1", Idempotency_Key="old")
    walker.answer("phase-1-step-2", "new", Idempotency_Key="recent")
    begin_write(db.session)
    db.session.execute(
        sa.update(idempotency.IdempotencyKey)
        .where(idempotency.IdempotencyKey.key == "old")
        .values(created_at=utcnow() - timedelta(hours=25))
    )
    assert idempotency.prune_expired() == 1
    db.session.commit()
    remaining = db.session.scalars(sa.select(idempotency.IdempotencyKey.key)).all()
    assert remaining == ["recent"]


def test_deliveries_status_and_retry(ctx, create_org, publish_flow, learner):
    keys = create_org("ops")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    walker.answer("phase-1-step-1")
    begin_write(db.session)
    db.session.execute(
        sa.update(Delivery)
        .where(Delivery.sink == "memory")
        .values(status=DeliveryStatus.DEAD, last_error="400 Bad Request")
    )
    db.session.commit()
    runner = ctx.test_cli_runner()

    status = runner.invoke(deliveries_status)
    assert status.exit_code == 0, status.output
    lines = {line.split()[0]: line.split() for line in status.output.splitlines()[1:]}
    assert lines["memory"][1] == "0" and lines["memory"][-1] == "2"
    assert lines["posthog"][1] == "2" and lines["posthog"][-1] == "0"

    retried = runner.invoke(deliveries_retry, ["--dead"])
    assert retried.exit_code == 0, retried.output
    assert "4 deliveries are due now" in retried.output
    db.session.rollback()
    assert set(db.session.scalars(sa.select(Delivery.status)).all()) == {DeliveryStatus.PENDING}
