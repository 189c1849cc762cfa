"""Webhook endpoints: the API, signing as Standard Webhooks has it, the outbound guard, the
log, replays and the automatic disabling of an endpoint that keeps failing."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import current_app
from standardwebhooks import Webhook, WebhookVerificationError

from mentorflow.delivery import services as delivery
from mentorflow.delivery import webhooks
from mentorflow.delivery.sinks import DeliveryFailed, OutboundEvent, close_clients
from mentorflow.delivery.sinks.webhook import WebhookSink, signed_headers, webhook_body
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbound import OutboundPolicy
from mentorflow.platform.outbox import Delivery, DeliveryStatus

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
GUARDED = OutboundPolicy(timeout=3, allow_private=False)
DEVELOPMENT = OutboundPolicy(timeout=3, allow_private=True)


def sk(keys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.sk}"}


def event(event_type: str = "session.completed") -> OutboundEvent:
    return OutboundEvent(
        id=uuid.uuid4(),
        org="acme",
        type=event_type,
        payload={"session_id": "abc", "answers": {"name": "Zoë"}},
        created_at=utcnow(),
    )


@pytest.fixture(autouse=True)
def _fresh_clients():
    yield
    close_clients()


def test_an_endpoint_is_created_with_a_secret_shown_once(ctx, client, create_org):
    keys = create_org()
    created = client.post(
        f"/v1/orgs/{keys.slug}/webhooks",
        json={"url": "https://hooks.example.com/x", "event_types": ["session.completed"]},
        headers=sk(keys),
    )
    assert created.status_code == 201
    assert created.json["secret"].startswith("whsec_")
    assert created.json["event_types"] == ["session.completed"]
    webhook_id = created.json["id"]
    read = client.get(f"/v1/orgs/{keys.slug}/webhooks/{webhook_id}", headers=sk(keys))
    assert read.status_code == 200 and "secret" not in read.json
    listed = client.get(f"/v1/orgs/{keys.slug}/webhooks", headers=sk(keys)).json["items"]
    assert [item["id"] for item in listed] == [webhook_id]
    # Stored encrypted: the secret is in no column.
    db.session.rollback()
    row = db.session.execute(sa.select(webhooks.WebhookEndpoint.__table__)).one()
    assert created.json["secret"] not in str(tuple(row))

    patched = client.patch(
        f"/v1/orgs/{keys.slug}/webhooks/{webhook_id}",
        json={"enabled": False, "description": "paused"},
        headers=sk(keys),
    )
    assert patched.json["enabled"] is False and patched.json["description"] == "paused"
    rotated = client.post(
        f"/v1/orgs/{keys.slug}/webhooks/{webhook_id}/rotate-secret", headers=sk(keys)
    )
    assert rotated.status_code == 200
    assert rotated.json["secret"].startswith("whsec_")
    assert rotated.json["secret"] != created.json["secret"]
    deleted = client.delete(f"/v1/orgs/{keys.slug}/webhooks/{webhook_id}", headers=sk(keys))
    assert deleted.status_code == 204
    assert (
        client.get(f"/v1/orgs/{keys.slug}/webhooks/{webhook_id}", headers=sk(keys)).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("url", "field_message"),
    [
        ("http://hooks.example.com/x", "https"),
        ("https://127.0.0.1/x", "not a public one"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://[::1]/x", "not a public one"),
        ("https://0x7f000001/x", "not a public one"),
        ("ftp://hooks.example.com/x", "https"),
    ],
)
def test_an_endpoint_must_be_https_on_a_public_address(ctx, client, create_org, url, field_message):
    keys = create_org()
    response = client.post(f"/v1/orgs/{keys.slug}/webhooks", json={"url": url}, headers=sk(keys))
    assert response.status_code == 422
    assert field_message in " ".join(response.json["errors"]["url"])
    assert client.get(f"/v1/orgs/{keys.slug}/webhooks", headers=sk(keys)).json["items"] == []


def test_unknown_event_types_and_unstorable_text_are_422(ctx, client, create_org):
    keys = create_org()
    response = client.post(
        f"/v1/orgs/{keys.slug}/webhooks",
        json={"url": "https://hooks.example.com/x", "event_types": ["session.exploded"]},
        headers=sk(keys),
    )
    assert response.status_code == 422 and "event_types.0" in response.json["errors"]
    response = client.post(
        f"/v1/orgs/{keys.slug}/webhooks",
        json={"url": "https://hooks.example.com/x", "description": "bad\x00"},
        headers=sk(keys),
    )
    assert response.status_code == 422 and "description" in response.json["errors"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "169.254.169.254", "[::1]", "0x7f000001", "10.0.0.1"]
)
def test_the_guard_refuses_private_addresses_at_connect_time(host):
    attempts = []
    sink = WebhookSink(
        1,
        f"https://{host}/hook",
        [webhooks.new_secret()],
        policy=GUARDED,
        on_attempt=attempts.append,
    )
    with pytest.raises(DeliveryFailed) as refused:
        sink.deliver(event())
    assert not refused.value.retryable
    assert "was not called" in refused.value.message
    assert attempts[0].succeeded is False and attempts[0].response_status is None


def test_a_redirect_is_never_followed_even_in_development(recorder):
    for target in ("http://127.0.0.1:1/", "http://169.254.169.254/", "http://[::1]/"):
        recorder.reset()
        recorder.fail("/hooks/r", 307, headers={"Location": target})
        attempts = []
        sink = WebhookSink(
            1,
            recorder.url + "/hooks/r",
            [webhooks.new_secret()],
            policy=DEVELOPMENT,
            on_attempt=attempts.append,
        )
        with pytest.raises(DeliveryFailed) as refused:
            sink.deliver(event())
        assert "redirect" in refused.value.message and not refused.value.retryable
        assert attempts[0].response_status == 307
        assert len(recorder.requests) == 1  # the redirect's target was never asked


def test_requests_are_signed_as_standard_webhooks_with_both_secrets_during_overlap(recorder):
    old, new = webhooks.new_secret(), webhooks.new_secret()
    attempts = []
    sink = WebhookSink(
        1, recorder.url + "/hooks/s", [new, old], policy=DEVELOPMENT, on_attempt=attempts.append
    )
    sent = event()
    sink.deliver(sent)
    time.sleep(1.1)
    sink.deliver(sent)
    first, second = recorder.webhook_requests("/hooks/s")
    for request in (first, second):
        assert request.headers["webhook-id"] == str(sent.id)
        for secret in (old, new):
            payload = Webhook(secret).verify(request.raw_body, request.headers)
            assert payload == {
                "type": "session.completed",
                "timestamp": payload["timestamp"],
                "data": sent.payload,
            }
        with pytest.raises(WebhookVerificationError):
            Webhook(webhooks.new_secret()).verify(request.raw_body, request.headers)
    # Each attempt is signed afresh; the id stays the event's.
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert [a.succeeded for a in attempts] == [True, True]
    assert all(a.response_status == 200 and a.duration_ms >= 0 for a in attempts)


def test_a_tampered_body_fails_verification():
    secret = webhooks.new_secret()
    body = webhook_body(event())
    headers = signed_headers([secret], "msg_1", body)
    Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"Zo", b"Jo"), headers)


def test_events_get_deliveries_for_the_endpoints_that_subscribe(
    ctx, client, create_org, publish_flow, learner
):
    keys = create_org()
    publish_flow(keys.org, SMALL_FLOW)
    begin_write(db.session)
    every, _ = webhooks.create_endpoint(keys.org.id, ctx.config, url="https://a.example.com/h")
    started_only, _ = webhooks.create_endpoint(
        keys.org.id, ctx.config, url="https://b.example.com/h", event_types=["session.started"]
    )
    off, _ = webhooks.create_endpoint(
        keys.org.id, ctx.config, url="https://c.example.com/h", enabled=False
    )
    db.session.commit()
    walker = learner(keys)
    walker.start("onboarding")
    walker.answer("phase-1-step-1")
    db.session.rollback()
    sinks = db.session.scalars(sa.select(Delivery.sink)).all()
    assert sinks.count(every.sink) == 2
    assert sinks.count(started_only.sink) == 1
    assert off.sink not in sinks
    assert sinks.count("posthog") == 2


def test_the_log_replays_and_automatic_disabling(
    ctx, client, create_org, publish_flow, learner, recorder, monkeypatch
):
    monkeypatch.setitem(ctx.config, "ALLOW_PRIVATE_SINKS", True)
    monkeypatch.setitem(ctx.config, "SINKS", [])
    monkeypatch.setitem(ctx.config, "WEBHOOK_DISABLE_AFTER", 1)
    keys = create_org()
    publish_flow(keys.org, SMALL_FLOW)
    created = client.post(
        f"/v1/orgs/{keys.slug}/webhooks",
        json={"url": recorder.url + "/hooks/log"},
        headers=sk(keys),
    ).json
    base = f"/v1/orgs/{keys.slug}/webhooks/{created['id']}"
    walker = learner(keys)
    walker.start("onboarding")
    db.session.rollback()
    delivery.deliver_due(budget_seconds=5)
    db.session.rollback()
    (attempt,) = client.get(f"{base}/attempts", headers=sk(keys)).json["items"]
    assert attempt["succeeded"] is True and attempt["response_status"] == 200
    assert "body" not in str(attempt.keys())
    (delivered,) = client.get(f"{base}/deliveries", headers=sk(keys)).json["items"]
    assert delivered["status"] == "delivered"

    replay = client.post(f"{base}/deliveries/{delivered['event_id']}/replay", headers=sk(keys))
    assert replay.status_code == 202 and replay.json == {"replayed": 1}
    delivery.deliver_due(budget_seconds=5)
    db.session.rollback()
    ids = [r.headers["webhook-id"] for r in recorder.webhook_requests("/hooks/log")]
    assert ids == [delivered["event_id"]] * 2
    unknown = client.post(f"{base}/deliveries/{uuid.uuid4()}/replay", headers=sk(keys))
    assert unknown.status_code == 404

    # Down: every attempt fails; past WEBHOOK_DISABLE_AFTER the endpoint is disabled.
    recorder.fail("/hooks/log", 503)
    walker.answer("phase-1-step-1")
    db.session.rollback()
    delivery.deliver_due(budget_seconds=2)
    db.session.rollback()
    time.sleep(1.1)
    begin_write(db.session)
    delivery.retry_deliveries(dead=False)
    db.session.commit()
    delivery.deliver_due(budget_seconds=2)
    db.session.rollback()
    endpoint = client.get(base, headers=sk(keys)).json
    assert endpoint["enabled"] is False
    assert "Disabled automatically" in endpoint["disabled_reason"]
    failed = client.get(f"{base}/attempts", headers=sk(keys)).json["items"][0]
    assert failed["succeeded"] is False and failed["response_status"] == 503

    # Back: enable it, replay everything that failed since the start.
    recorder.heal()
    client.patch(base, json={"enabled": True}, headers=sk(keys))
    since = (utcnow() - timedelta(hours=1)).isoformat()
    replayed = client.post(f"{base}/replay", json={"since": since}, headers=sk(keys))
    assert replayed.status_code == 202 and replayed.json["replayed"] >= 1
    delivery.deliver_due(budget_seconds=5)
    db.session.rollback()
    statuses = {
        d["status"] for d in client.get(f"{base}/deliveries", headers=sk(keys)).json["items"]
    }
    assert statuses == {"delivered"}
    assert (
        db.session.scalar(
            sa.select(sa.func.count()).where(Delivery.status != DeliveryStatus.DELIVERED)
        )
        == 0
    )
    assert current_app.config["WEBHOOK_DISABLE_AFTER"] == 1


def test_an_endpoints_events_share_a_call_each_request_within_its_own_deadline(
    ctx, client, create_org, publish_flow, learner, dripper, monkeypatch
):
    # A receiver that never finishes answering: each request is cut at its own deadline (not
    # one deadline for the batch), and the events whose request could not end well before
    # the claims' lease does are given back untried, not counted as failed attempts.
    monkeypatch.setitem(ctx.config, "ALLOW_PRIVATE_SINKS", True)
    monkeypatch.setitem(ctx.config, "SINKS", [])
    monkeypatch.setitem(ctx.config, "SINK_TIMEOUT", 1)
    monkeypatch.setitem(ctx.config, "DELIVERY_LEASE_SECONDS", 5)
    keys = create_org()
    publish_flow(keys.org, SMALL_FLOW)
    begin_write(db.session)
    endpoint, _ = webhooks.create_endpoint(keys.org.id, ctx.config, url=dripper.url + "/hook")
    db.session.commit()
    for _ in range(5):
        learner(keys).start("onboarding")
    db.session.rollback()
    started = time.monotonic()
    result = delivery.deliver_due(budget_seconds=0.1)
    elapsed = time.monotonic() - started
    db.session.rollback()
    assert dripper.requests == 3 and 2.9 < elapsed < 4.5
    assert (result.delivered, result.retried, result.dead) == (0, 3, 0)
    rows = db.session.execute(
        sa.select(Delivery.attempts, Delivery.last_error).where(Delivery.sink == endpoint.sink)
    ).all()
    tried = [row for row in rows if row.attempts == 1]
    assert len(tried) == 3 and all("within the deadline" in row.last_error for row in tried)
    assert [(row.attempts, row.last_error) for row in rows if row not in tried] == [(0, None)] * 2
    assert delivery.count_due() == 2  # the two given back are due at once
    logged = webhooks.list_attempts(endpoint)
    assert len(logged) == 3 and not any(attempt.succeeded for attempt in logged)
