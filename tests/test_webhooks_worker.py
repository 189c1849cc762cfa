"""Webhooks delivered by a real Celery worker on real Redis to a local receiver (the recorder),
verified as an outside receiver would: with the Standard Webhooks reference library."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import KeyKind, Org
from test_worker import Stack, settled, shared_redis  # noqa: F401  (a fixture)


@pytest.fixture
def hook_stack(backend, recorder, tmp_path, shared_redis):  # noqa: F811
    # Enough attempts to outlast the receiver's outage (backoff capped at a second).
    stack = Stack(
        backend,
        recorder,
        tmp_path,
        shared_redis,
        DELIVERY_MAX_ATTEMPTS=40,
        DELIVERY_BACKOFF_MAX_SECONDS=1,
        SINKS="",
    )
    yield stack
    stack.close()


def secret_key(stack: Stack, slug: str) -> str:
    with stack.app.app_context():
        org = db.session.scalar(sa.select(Org).where(Org.slug == slug))
        _, secret = tenant_services.create_api_key(org, KeyKind.SECRET)
        db.session.commit()
        db.session.remove()
    return secret


def add_endpoint(stack: Stack, slug: str, sk: str, url: str) -> dict:
    response = stack.app.test_client().post(
        f"/v1/orgs/{slug}/webhooks", json={"url": url}, headers={"Authorization": f"Bearer {sk}"}
    )
    assert response.status_code == 201, response.json
    return response.json


def event_ids(stack: Stack, slug: str) -> set[str]:
    with stack.app.app_context():
        ids = db.session.scalars(
            sa.select(OutboxEvent.id)
            .join(Org, Org.id == OutboxEvent.org_id)
            .where(Org.slug == slug)
        ).all()
        db.session.remove()
    return {str(event_id) for event_id in ids}


def accepted_ids(recorder, path: str) -> Counter:
    return Counter(
        r.headers["webhook-id"] for r in recorder.webhook_requests(path, accepted_only=True)
    )


def dead_count(stack: Stack, sink: str) -> int:
    with stack.app.app_context():
        count = db.session.scalar(
            sa.select(sa.func.count()).where(
                Delivery.sink == sink, Delivery.status == DeliveryStatus.DEAD
            )
        )
        db.session.remove()
    return count or 0


def test_two_orgs_endpoints_get_every_event_once_through_an_outage_and_a_rotation(
    hook_stack, recorder
):
    stack = hook_stack
    pk_two = stack.add_org("second")
    sk_one, sk_two = secret_key(stack, "workers"), secret_key(stack, "second")
    one = add_endpoint(stack, "workers", sk_one, recorder.url + "/hooks/one")
    two = add_endpoint(stack, "second", sk_two, recorder.url + "/hooks/two")

    # The second org's receiver is down while its events are made, then comes back.
    recorder.fail("/hooks/two", 503)
    stack.processes.worker()
    assert set(stack.walk(20)) == {200, 201}
    assert set(stack.walk(20, org="second", pk=pk_two)) == {200, 201}
    recorder.wait_for(lambda r: len(r.webhook_requests("/hooks/two")) >= 20, timeout=60)
    recorder.heal()

    ids_one, ids_two = event_ids(stack, "workers"), event_ids(stack, "second")
    # Six events per session: started, four steps, completed.
    assert len(ids_one) == len(ids_two) == 120
    recorder.wait_for(
        lambda r: (
            set(accepted_ids(r, "/hooks/one")) == ids_one
            and set(accepted_ids(r, "/hooks/two")) == ids_two
        ),
        timeout=120,
    )
    counts = settled(stack)
    assert counts == {"delivered": 240}, counts
    # Exactly once per endpoint: every event accepted once; the failures were retries of
    # the same ids, each signed afresh.
    for path, ids in (("/hooks/one", ids_one), ("/hooks/two", ids_two)):
        assert accepted_ids(recorder, path) == Counter(dict.fromkeys(ids, 1))
    failed = [r for r in recorder.webhook_requests("/hooks/two") if not r.accepted]
    assert failed and {r.headers["webhook-id"] for r in failed} <= ids_two
    for path, secret in (("/hooks/one", one["secret"]), ("/hooks/two", two["secret"])):
        for request in recorder.webhook_requests(path):
            body = Webhook(secret).verify(request.raw_body, request.headers)
            assert set(body) == {"type", "timestamp", "data"}
    # Another org's secret verifies nothing of this one.
    request = recorder.webhook_requests("/hooks/one")[0]
    with pytest.raises(Exception):  # noqa: B017 - WebhookVerificationError
        Webhook(two["secret"]).verify(request.raw_body, request.headers)

    # Rotation: during the overlap both the old and the new secret verify each request.
    client = stack.app.test_client()
    rotated = client.post(
        f"/v1/orgs/workers/webhooks/{one['id']}/rotate-secret",
        headers={"Authorization": f"Bearer {sk_one}"},
    ).json["secret"]
    before = len(recorder.webhook_requests("/hooks/one"))
    assert set(stack.walk(1)) == {200, 201}
    recorder.wait_for(lambda r: len(r.webhook_requests("/hooks/one")) >= before + 6, timeout=60)
    for request in recorder.webhook_requests("/hooks/one")[before:]:
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        for secret in (one["secret"], rotated):
            Webhook(secret).verify(request.raw_body, request.headers)


def test_failed_deliveries_are_replayed_with_their_ids(hook_stack, recorder):
    stack = hook_stack
    sk = secret_key(stack, "workers")
    endpoint = add_endpoint(stack, "workers", sk, recorder.url + "/hooks/replay")
    # A redirect is never followed: those deliveries are dead at once.
    recorder.fail("/hooks/replay", 302, headers={"Location": "http://169.254.169.254/"})
    stack.processes.worker()
    since = (utcnow() - timedelta(seconds=5)).isoformat()
    assert set(stack.walk(2)) == {200, 201}
    sink = f"webhook:{endpoint['id']}"
    deadline = time.monotonic() + 60
    while dead_count(stack, sink) < 12 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert dead_count(stack, sink) == 12
    assert len(recorder.webhook_requests("/hooks/replay")) == 12  # no redirect followed

    recorder.heal()
    client = stack.app.test_client()
    replayed = client.post(
        f"/v1/orgs/workers/webhooks/{endpoint['id']}/replay",
        json={"since": since},
        headers={"Authorization": f"Bearer {sk}"},
    )
    assert replayed.status_code == 202 and replayed.json == {"replayed": 12}
    ids = event_ids(stack, "workers")
    recorder.wait_for(lambda r: set(accepted_ids(r, "/hooks/replay")) == ids, timeout=60)
    assert settled(stack) == {"delivered": 12}
    for request in recorder.webhook_requests("/hooks/replay", accepted_only=True):
        Webhook(endpoint["secret"]).verify(request.raw_body, request.headers)
