"""Periodic work and the operator's view of deliveries."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from console_client import Console, add_staff
from mentorflow.app import create_app
from mentorflow.cli.deliveries import deliveries_retry, deliveries_status
from mentorflow.cli.orgs import org_set
from mentorflow.flows import learner_sessions
from mentorflow.flows.models import LearnerSession
from mentorflow.platform import idempotency
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import Org, Role

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


def test_one_orgs_failing_sweep_does_not_stop_the_others(
    ctx, create_org, publish_flow, learner, caplog
):
    # A TTL no check would let through today, stored before the bound existed.
    broken = create_org("broken", abandon_after=3600)
    healthy = create_org("healthy", abandon_after=3600)
    begin_write(db.session)
    row = db.session.get(Org, broken.org.id)
    row.settings = {**row.settings, "abandon_after": 1_000_000 * 86400}
    db.session.commit()
    walkers = {}
    for keys in (broken, healthy):
        publish_flow(keys.org, SMALL_FLOW)
        walkers[keys.slug] = learner(keys)
        walkers[keys.slug].start("onboarding")
        idle(walkers[keys.slug].session_id, 2 * 3600)

    begin_write(db.session)
    with caplog.at_level(logging.ERROR, logger="mentorflow.flows.learner_sessions"):
        assert learner_sessions.abandon_inactive_sessions(WEEK) == 1
    db.session.commit()

    assert walkers["healthy"].get().json["session"]["status"] == "abandoned"
    assert walkers["broken"].get().json["session"]["status"] == "active"
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1 and "broken" in failures[0].getMessage()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("1000000d", "at most 365d"),
        ("366d", "at most 365d"),
        ("99999999999999999999999d", "must look like"),
        ("²d", "must look like"),
        ("30s", "at least 1m"),
    ],
)
def test_the_cli_refuses_durations_out_of_bounds(ctx, create_org, given, message):
    keys = create_org("bounded")
    result = ctx.test_cli_runner().invoke(org_set, ["bounded", "--abandon-after", given])
    assert result.exit_code != 0 and message in result.output, result.output
    db.session.rollback()
    assert "abandon_after" not in db.session.get(Org, keys.org.id).settings
    accepted = ctx.test_cli_runner().invoke(org_set, ["bounded", "--abandon-after", "365d"])
    assert accepted.exit_code == 0 and "31536000s" in accepted.output


def test_the_console_refuses_durations_out_of_bounds(ctx, create_org):
    keys = create_org("bounded-console")
    console = Console(ctx.test_client())
    console.login(add_staff(keys.org, "admin@bounded.example", Role.ADMIN))
    for given in ("1000000d", "99999999999999999999999999999d"):
        response = console.post("/admin/settings/general/abandonment", {"abandon_after": given})
        assert response.status_code == 422, given
        assert "The abandon-after" in response.get_data(as_text=True), given
    db.session.rollback()
    assert "abandon_after" not in db.session.get(Org, keys.org.id).settings


def test_the_service_refuses_an_unbounded_ttl_from_any_caller(ctx, create_org):
    keys = create_org("bounded-service")
    begin_write(db.session)
    with pytest.raises(tenant_services.TenantError, match="at most 365d"):
        tenant_services.update_org_settings(keys.org, abandon_after=1_000_000 * 86400)
    db.session.rollback()


@pytest.mark.parametrize("given", ["86400000000", "0", "a week"])
def test_the_operators_default_ttl_is_bounded_at_startup(tmp_path, given):
    # Checked where it is read, so a typo stops the install instead of failing every sweep.
    with pytest.raises(ValueError, match="MENTORFLOW_ABANDON_AFTER must be a number of seconds"):
        create_app({"INSTANCE_PATH": str(tmp_path), "ABANDON_AFTER": given})


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
