"""Racing submits: one wins, the rest see 409, nothing is written twice."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from mentorflow.flows.models import StepEvent
from mentorflow.platform.extensions import db

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
RACERS = 16


def race(app, url: str, token: str, bodies: list[dict], headers: list[dict]) -> list[int]:
    """POST each body from its own thread, all released at once; return the status codes."""
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def submit(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            url, json=bodies[index], headers={"Authorization": f"Bearer {token}", **headers[index]}
        )
        statuses[index] = response.status_code

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_sixteen_racing_submits_yield_one_200_and_fifteen_409(
    ctx, create_org, publish_flow, learner
):
    keys = create_org("racers")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    url = f"/v1/orgs/racers/sessions/{walker.session_id}/steps"
    statuses = race(ctx, url, walker.token, [{"step_id": "phase-1-step-1"}] * RACERS, [{}] * RACERS)
    assert sorted(statuses) == [200] + [409] * (RACERS - 1)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StepEvent)) == 1
    assert walker.get().json["session"]["version"] == 2


def test_racing_replays_of_one_idempotency_key_apply_once(ctx, create_org, publish_flow, learner):
    keys = create_org("replayers")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    url = f"/v1/orgs/replayers/sessions/{walker.session_id}/steps"
    statuses = race(
        ctx,
        url,
        walker.token,
        [{"step_id": "phase-1-step-1"}] * 8,
        [{"Idempotency-Key": "same-click"}] * 8,
    )
    assert statuses == [200] * 8
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StepEvent)) == 1
