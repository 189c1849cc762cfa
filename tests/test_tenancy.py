"""Another org's objects are 404 on every tenant route, whatever credential is used."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import current_app

from mentorflow.delivery import webhooks
from mentorflow.jobs.models import Job
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


@pytest.fixture
def two_orgs(create_org, publish_flow, learner):
    """Org A with a flow, a session and a job; org B with its own keys and session."""
    a = create_org("org-a")
    b = create_org("org-b")
    publish_flow(a.org, SMALL_FLOW)
    publish_flow(b.org, SMALL_FLOW)
    # A webhook endpoint of org A: its session's events get deliveries to it.
    begin_write(db.session)
    endpoint, _ = webhooks.create_endpoint(
        a.org.id, current_app.config, url="https://hooks.example.com/a"
    )
    webhook_id = endpoint.id
    db.session.commit()
    walker_a = learner(a)
    walker_a.start("onboarding")
    walker_b = learner(b)
    walker_b.start("onboarding")
    # A learner of org A with a session of theirs, and a learner token of org B's.
    walker_a.client.post(
        "/v1/orgs/org-a/flows/onboarding/sessions",
        json={"external_user_id": "user-a"},
        headers={"Authorization": f"Bearer {a.sk}"},
    )
    walker_b.learner_token = walker_b.client.post(
        "/v1/orgs/org-b/learners/user-a/tokens",
        json={},
        headers={"Authorization": f"Bearer {b.sk}"},
    ).json["token"]
    begin_write(db.session)
    job = Job(org_id=a.org.id, kind="export")
    db.session.add(job)
    db.session.commit()
    values = {
        "org": "org-a",
        "flow": "onboarding",
        "session_id": walker_a.session_id,
        "job_id": job.id,
        "ext": "user-a",
        "webhook_id": webhook_id,
        "event_id": str(
            db.session.scalar(
                sa.select(OutboxEvent.id).where(OutboxEvent.session_id == walker_a.session_id)
            )
        ),
    }
    return a, b, walker_b, values


def tenant_routes(app):
    """Every learner route with an org in its path, with the methods it answers."""
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/v1/orgs/<org>"):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method


def test_every_tenant_route_is_covered(app):
    routes = {(rule.rule, method) for rule, method in tenant_routes(app)}
    assert len(routes) >= 7, routes


@pytest.mark.parametrize("credential", ["secret", "publishable", "session", "learner"])
def test_other_orgs_credentials_get_404_on_every_route(ctx, client, two_orgs, credential):
    _, b, walker_b, values = two_orgs
    token = {
        "secret": b.sk,
        "publishable": b.pk,
        "session": walker_b.token,
        "learner": walker_b.learner_token,
    }[credential]
    for rule, method in tenant_routes(ctx):
        url = rule.build(values, append_unknown=False)[1]
        response = client.open(
            url,
            method=method,
            json={"step_id": "phase-1-step-1"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 404, (method, url, response.get_data(as_text=True))
        assert response.mimetype == "application/problem+json"
        # The body must not confirm that org A or its objects exist.
        assert values["session_id"] not in response.get_data(as_text=True)
