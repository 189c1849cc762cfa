"""Erasure: a learner or a session erased everywhere it was kept, and downstream.

The erase job runs in-process (``run_job``); the deliveries it leaves are delivered in-process
too (``deliver_due``) through the official clients to the local recorder, which stands in for
PostHog, Supermemory and a webhook receiver.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import current_app

from mentorflow.delivery import services as delivery
from mentorflow.delivery import webhooks
from mentorflow.delivery.integrations import set_integration
from mentorflow.delivery.sinks import close_clients
from mentorflow.flows import erasure
from mentorflow.flows.export import create_export
from mentorflow.jobs import runner
from mentorflow.jobs.models import Job, JobStatus
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent
from mentorflow.worker import tasks

STEPS = 14


def long_flow() -> dict[str, Any]:
    """A flow of 14 text questions (three sessions answer 14 + 14 + 12 = 40)."""
    return {
        "slug": "long",
        "title": "Long",
        "phases": [
            {
                "id": "phase-1",
                "title": "Questions",
                "steps": [
                    {
                        "id": f"phase-1-step-{n}",
                        "type": "text",
                        "key": f"q{n}",
                        "prompt": f"Question {n}?",
                    }
                    for n in range(1, STEPS + 1)
                ],
            }
        ],
    }


@pytest.fixture
def sinks_to_recorder(ctx, recorder, monkeypatch):
    """Point PostHog, Supermemory and webhooks at the recorder for this test."""
    for name, value in {
        "POSTHOG_API_KEY": "phc_test",
        "POSTHOG_HOST": recorder.url,
        "SUPERMEMORY_API_KEY": "sm_test",
        "SUPERMEMORY_BASE_URL": recorder.url,
        "ALLOW_PRIVATE_SINKS": True,
        "SINK_TIMEOUT": 5,
    }.items():
        monkeypatch.setitem(ctx.config, name, value)
    yield recorder
    close_clients()


def sk_headers(keys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.sk}"}


def start(client, keys, ext: str, marker: str, n: int) -> str:
    response = client.post(
        f"/v1/orgs/{keys.slug}/flows/long/sessions",
        json={
            "external_user_id": ext,
            "name": f"Name {marker} {n}",
            "email": f"{marker}-{n}@example.com",
            "phone": "+49 30 1234567",
        },
        headers=sk_headers(keys),
    )
    assert response.status_code == 201, response.json
    return response.json["session"]["id"]


def answer(client, keys, session_id: str, marker: str, count: int) -> None:
    for n in range(1, count + 1):
        response = client.post(
            f"/v1/orgs/{keys.slug}/sessions/{session_id}/steps",
            json={"step_id": f"phase-1-step-{n}", "answer": f"answer {marker} {session_id} {n}"},
            headers={**sk_headers(keys), "Idempotency-Key": f"{session_id}-{n}"},
        )
        assert response.status_code == 200, response.json


def deliver_everything() -> None:
    """Deliver every due delivery in-process, until none is due."""
    for _ in range(5):
        result = delivery.deliver_due(budget_seconds=10)
        db.session.rollback()
        if result.drained:
            return


def run(job_id: int) -> Job:
    runner.run_job(job_id)
    db.session.rollback()
    return db.session.get(Job, job_id)


def rows_mentioning(needle: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Return ``table: row`` for every row of every table whose text mentions ``needle``."""
    found = []
    for table in db.metadata.sorted_tables:
        if table.name in skip:
            continue
        for row in db.session.execute(sa.select(table)).all():
            text = json.dumps([str(value) for value in row], default=str)
            if needle in text:
                found.append(f"{table.name}: {text[:200]}")
    return found


def files_mentioning(folder: Path, needle: str) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


def test_erasing_a_learner_leaves_nothing_of_theirs_anywhere(
    ctx, client, create_org, publish_flow, sinks_to_recorder
):
    recorder = sinks_to_recorder
    marker = uuid.uuid4().hex
    org_a = create_org()
    org_b = create_org()
    publish_flow(org_a.org, long_flow())
    publish_flow(org_b.org, long_flow())
    begin_write(db.session)
    endpoint, _ = webhooks.create_endpoint(
        org_a.org.id, current_app.config, url=recorder.url + "/hooks/erasure"
    )
    set_integration(
        org_a.org, "posthog", current_app.config, personal_api_key="phx_test", project_id="123"
    )
    db.session.commit()

    sessions = [start(client, org_a, "user-42", marker, n) for n in range(3)]
    for session_id, count in zip(sessions, (14, 14, 12), strict=True):
        answer(client, org_a, session_id, marker, count)
    # 12 messages (4 per session) and the learner's own state, all personal.
    for session_id in sessions:
        for n in range(4):
            posted = client.post(
                f"/v1/orgs/{org_a.slug}/sessions/{session_id}/messages",
                json={"role": "user" if n % 2 else "assistant", "content": f"{marker} note {n}"},
                headers=sk_headers(org_a),
            )
            assert posted.status_code == 201, posted.json
    state = client.put(
        f"/v1/orgs/{org_a.slug}/learners/user-42/state",
        json={"state": {"persona": f"{marker} persona"}},
        headers={**sk_headers(org_a), "If-Match": '"0"'},
    )
    assert state.status_code == 200, state.json
    # Another org's learner with the same external id, and a stranger in org A.
    other_marker = uuid.uuid4().hex
    other = start(client, org_b, "user-42", other_marker, 0)
    answer(client, org_b, other, other_marker, 3)
    stranger = start(client, org_a, "user-7", other_marker, 1)
    answer(client, org_a, stranger, other_marker, 2)

    begin_write(db.session)
    export = create_export(org_a.org, "long", by="tests")
    db.session.commit()
    assert run(export.id).status == JobStatus.COMPLETED
    deliver_everything()
    assert len(recorder.webhook_requests("/hooks/erasure", accepted_only=True)) > 40
    instance = Path(current_app.config["INSTANCE_PATH"])
    assert files_mentioning(instance, marker)  # the export and the dry runs, before

    response = client.delete(f"/v1/orgs/{org_a.slug}/learners/user-42", headers=sk_headers(org_a))
    assert response.status_code == 202
    job = run(response.json["job"]["id"])
    assert job.status == JobStatus.COMPLETED, job.error
    receipt = job.result
    assert sorted(receipt["session_ids"]) == sorted(sessions)
    removed = receipt["removed"]["database"]
    assert removed["sessions"] == 3
    assert removed["step events"] == 40
    assert removed["idempotent responses"] == 40
    assert removed["learners"] == 1
    assert removed["messages"] == 12
    assert removed["learner states"] == 1 and removed["learner state history"] == 1
    assert removed["deliveries"] > 0 and removed["webhook attempts"] > 0
    assert sorted(receipt["removed"]["files"]["export_files"]) == [
        f"job-{export.id}.csv",
        f"job-{export.id}.jsonl",
    ]
    assert {entry["sink"] for entry in receipt["downstream"]} == {
        "posthog",
        "memory",
        endpoint.sink,
    }

    # Nothing of theirs in any table but the erasure's own record (ids only) ...
    for session_id in sessions:
        leftovers = rows_mentioning(session_id)
        assert all(row.startswith(("jobs:", "outbox_events:")) for row in leftovers), leftovers
    assert rows_mentioning(marker) == []
    assert rows_mentioning(f"{marker}-0@example.com") == []
    # ... nor in any file: the export is gone, the dry-run lines too.
    assert files_mentioning(instance, marker) == []
    # Erased: a 404 like a session that never existed; gone from the feed.
    for session_id in sessions:
        assert (
            client.get(
                f"/v1/orgs/{org_a.slug}/sessions/{session_id}", headers=sk_headers(org_a)
            ).status_code
            == 404
        )
    assert (
        client.get(f"/v1/orgs/{org_a.slug}/learners/user-42", headers=sk_headers(org_a)).status_code
        == 404
    )
    feed = client.get(f"/v1/orgs/{org_a.slug}/events?limit=500", headers=sk_headers(org_a)).json
    assert not {event["session_id"] for event in feed["events"]} & set(sessions)
    # The erasure's own event (ids only) is in the outbox; the feed shows it once every older
    # transaction of the server has ended (another database's open one holds it back).
    db.session.rollback()
    erased_types = db.session.scalars(
        sa.select(OutboxEvent.type).where(
            OutboxEvent.org_id == org_a.org.id, OutboxEvent.type.like("%erased")
        )
    ).all()
    assert erased_types == ["learner.erased"]

    # Downstream: memory containers deleted, PostHog persons deleted, the webhook told.
    deliver_everything()
    assert sorted(recorder.namespace_deletions()) == sorted(
        f"mentorflow-{org_a.slug}-{session_id}" for session_id in sessions
    )
    (deletion,) = recorder.person_deletions()
    assert deletion.path == "/api/projects/123/persons/bulk_delete/"
    assert deletion.headers["authorization"] == "Bearer phx_test"
    assert set(deletion.body["distinct_ids"]) == {"user-42", *sessions}
    erased = [
        r.body
        for r in recorder.webhook_requests("/hooks/erasure", accepted_only=True)
        if r.body["type"] == "learner.erased"
    ]
    assert len(erased) == 1
    assert erased[0]["data"]["external_user_id"] == "user-42"
    assert sorted(erased[0]["data"]["session_ids"]) == sorted(sessions)
    assert marker not in json.dumps(erased[0])

    # A replay of every failed delivery can't bring any of it back: nothing of it is left.
    begin_write(db.session)
    assert delivery.retry_deliveries(dead=True) >= 0
    db.session.commit()
    # An export made now holds only the stranger; the other org's learner is untouched.
    begin_write(db.session)
    again = create_export(org_a.org, "long", by="tests")
    db.session.commit()
    run(again.id)
    csv_text = runner.job_file(db.session.get(Job, again.id)).read_text()
    assert stranger in csv_text and marker not in csv_text
    kept = client.get(f"/v1/orgs/{org_b.slug}/sessions/{other}", headers=sk_headers(org_b))
    assert kept.status_code == 200
    assert kept.json["session"]["answers"]["q3"] == f"answer {other_marker} {other} 3"
    assert (
        client.get(f"/v1/orgs/{org_b.slug}/learners/user-42", headers=sk_headers(org_b)).status_code
        == 200
    )


def test_a_session_erasure_without_person_deletion_says_not_configured(
    ctx, client, create_org, publish_flow, sinks_to_recorder
):
    keys = create_org()
    publish_flow(keys.org, long_flow())
    session_id = start(client, keys, "user-9", "x", 1)
    answer(client, keys, session_id, "x", 2)
    deliver_everything()

    response = client.delete(
        f"/v1/orgs/{keys.slug}/sessions/{session_id}", headers=sk_headers(keys)
    )
    assert response.status_code == 202
    job = run(response.json["job"]["id"])
    assert job.result["removed"]["database"]["step events"] == 2
    deliver_everything()
    event_id = uuid.UUID(job.result["events"][0])
    posthog = db.session.get(Delivery, (event_id, "posthog"))
    assert posthog.status == DeliveryStatus.DEAD
    assert posthog.last_error.startswith("Not configured:")
    assert db.session.get(Delivery, (event_id, "memory")).status == DeliveryStatus.DELIVERED
    assert sinks_to_recorder.person_deletions() == []
    assert (
        client.get(
            f"/v1/orgs/{keys.slug}/sessions/{session_id}", headers=sk_headers(keys)
        ).status_code
        == 404
    )
    # Erasing it again: it is gone, a 404.
    again = client.delete(f"/v1/orgs/{keys.slug}/sessions/{session_id}", headers=sk_headers(keys))
    assert again.status_code == 404


def test_erasure_is_for_the_secret_key_of_the_org_only(ctx, client, create_org, publish_flow):
    keys = create_org()
    other = create_org()
    publish_flow(keys.org, long_flow())
    session_id = start(client, keys, "user-1", "y", 0)
    assert (
        client.delete(
            f"/v1/orgs/{keys.slug}/learners/user-1", headers={"Authorization": f"Bearer {keys.pk}"}
        ).status_code
        == 403
    )
    assert (
        client.delete(
            f"/v1/orgs/{keys.slug}/sessions/{session_id}", headers=sk_headers(other)
        ).status_code
        == 404
    )
    assert (
        client.delete(f"/v1/orgs/{keys.slug}/learners/nobody", headers=sk_headers(keys)).status_code
        == 404
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_retention_erases_closed_sessions_past_the_orgs_days(
    ctx, client, create_org, publish_flow, monkeypatch
):
    keys = create_org()
    publish_flow(keys.org, long_flow())
    old = start(client, keys, "user-old", "r", 0)
    recent = start(client, keys, "user-new", "r", 1)
    active = start(client, keys, "user-active", "r", 2)
    begin_write(db.session)
    erasure.set_retention_days(keys.org, 30)
    with pytest.raises(erasure.ErasureError):
        erasure.set_retention_days(keys.org, 100000)
    from_table = erasure.LearnerSession
    long_ago = erasure.utcnow() - erasure.timedelta(days=40)
    db.session.execute(
        sa.update(from_table)
        .where(from_table.id.in_([old, recent]))
        .values(status="completed", completed_at=erasure.utcnow())
    )
    db.session.execute(
        sa.update(from_table)
        .where(from_table.id.in_([old, active]))
        .values(last_activity_at=long_ago, completed_at=None)
    )
    db.session.execute(
        sa.update(from_table).where(from_table.id == old).values(completed_at=long_ago)
    )
    db.session.commit()

    assert erasure.orgs_with_retention() == [(keys.org.id, 30)]
    # The beat's task: one erase job per org with sessions past its days, run at once.
    assert tasks.erase_expired_sessions.run() == 1
    db.session.rollback()
    (job,) = db.session.scalars(sa.select(Job).where(Job.org_id == keys.org.id)).all()
    assert job.status == JobStatus.COMPLETED and job.created_by == "retention"
    assert job.result["scope"] == "retention"
    assert job.result["session_ids"] == [old]
    assert db.session.get(erasure.LearnerSession, old) is None
    assert db.session.get(erasure.LearnerSession, recent) is not None
    assert db.session.get(erasure.LearnerSession, active) is not None
    events = db.session.scalars(
        sa.select(OutboxEvent.type).where(OutboxEvent.org_id == keys.org.id)
    ).all()
    assert "session.erased" in events
    # Nothing left past the retention: no new job.
    assert tasks.erase_expired_sessions.run() == 0
