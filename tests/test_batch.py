"""Offline batches: a queue of answers in one request, each item taken as its own POST would."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from mentorflow.flows.models import LearnerSession, StepEvent
from mentorflow.platform import idempotency
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent

STEPS = 24
INVALID_AT = 11


def long_flow() -> dict[str, Any]:
    """A flow of 24 number steps (0 to 100), then a closing info step."""
    steps = [
        {
            "id": f"phase-1-step-{i}",
            "key": f"q{i}",
            "prompt": f"Question {i}?",
            "type": "number",
            "min": 0,
            "max": 100,
        }
        for i in range(1, STEPS + 1)
    ]
    return {
        "slug": "offline",
        "title": "Offline flow",
        "phases": [{"id": "phase-1", "title": "All", "steps": steps}],
    }


@pytest.fixture
def studio(create_org, publish_flow):
    keys = create_org()
    publish_flow(keys.org, long_flow())
    return keys


@pytest.fixture
def walker(studio, learner):
    walker = learner(studio)
    assert walker.start("offline").status_code == 201
    return walker


def item(step: int, answer: Any, key: str | None = None) -> dict[str, Any]:
    return {
        "step_id": f"phase-1-step-{step}",
        "answer": answer,
        "idempotency_key": key or f"offline-{step}",
    }


def send(walker, items: Any, token: str | None = None, session_id: str | None = None, org=None):
    return walker.client.post(
        f"/v1/orgs/{org or walker.org}/sessions/{session_id or walker.session_id}/steps/batch",
        json={"items": items},
        headers={"Authorization": f"Bearer {token or walker.token}"},
    )


def count(model, *where) -> int:
    db.session.rollback()  # a fresh snapshot: requests commit on their own connections
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def stored_session(session_id: str) -> LearnerSession:
    db.session.rollback()
    return db.session.get(LearnerSession, session_id)


def twenty_with_one_invalid() -> list[dict[str, Any]]:
    """20 offline answers to steps 1..20; the one to step INVALID_AT is out of range."""
    return [item(i, 500 if i == INVALID_AT else i) for i in range(1, 21)]


def test_a_batch_stops_at_the_invalid_item_and_writes_nothing_after_it(walker):
    response = send(walker, twenty_with_one_invalid())

    assert response.status_code == 200, response.get_data(as_text=True)
    results = response.json["results"]
    assert [r["index"] for r in results] == list(range(20))
    taken = INVALID_AT - 1
    assert [r["outcome"] for r in results] == (
        ["applied"] * taken + ["invalid"] + ["skipped"] * (20 - taken - 1)
    )
    assert [r["status"] for r in results] == [200] * taken + [422] + [424] * (20 - taken - 1)
    assert results[taken]["errors"] == {"answer": ["must be at most 100"]}
    # The body is the session where the batch left it: at the invalid item's step.
    assert response.json["session"]["current_step_id"] == f"phase-1-step-{INVALID_AT}"
    assert response.json["step"]["id"] == f"phase-1-step-{INVALID_AT}"
    assert response.headers["ETag"] == f'"{response.json["session"]["version"]}"'

    session = stored_session(walker.session_id)
    assert session.current_step_id == f"phase-1-step-{INVALID_AT}"
    assert session.answers == {f"q{i}": i for i in range(1, INVALID_AT)}
    events = db.session.scalars(
        sa.select(StepEvent.step_id)
        .where(StepEvent.session_id == walker.session_id)
        .order_by(StepEvent.seq)
    ).all()
    assert events == [f"phase-1-step-{i}" for i in range(1, INVALID_AT)]
    # Only the taken items' keys are kept: a later item can still be sent with its key.
    assert count(idempotency.IdempotencyKey) == taken


def test_retrying_the_batch_replays_what_was_taken(walker):
    first = send(walker, twenty_with_one_invalid())
    retry = send(walker, twenty_with_one_invalid())

    assert retry.status_code == 200
    expected = [
        {**r, "outcome": "replayed"} if r["outcome"] == "applied" else r
        for r in first.json["results"]
    ]
    assert retry.json["results"] == expected
    assert retry.json["session"] == first.json["session"]
    assert count(StepEvent, StepEvent.session_id == walker.session_id) == INVALID_AT - 1

    # With the invalid answer corrected, the same batch goes through to the end.
    fixed = [item(i, i) for i in range(1, 21)]
    done = send(walker, fixed)
    outcomes = [r["outcome"] for r in done.json["results"]]
    assert outcomes == ["replayed"] * (INVALID_AT - 1) + ["applied"] * (20 - INVALID_AT + 1)
    assert done.json["session"]["current_step_id"] == "phase-1-step-21"
    assert stored_session(walker.session_id).answers == {f"q{i}": i for i in range(1, 21)}


def test_an_item_sent_alone_first_is_replayed_in_the_batch(walker):
    alone = walker.answer("phase-1-step-1", 1, Idempotency_Key="offline-1")
    assert alone.status_code == 200

    response = send(walker, [item(1, 1), item(2, 2)])

    assert [r["outcome"] for r in response.json["results"]] == ["replayed", "applied"]
    # And a single POST retried after the batch took it gets the batch's stored response.
    again = walker.answer("phase-1-step-2", 2, Idempotency_Key="offline-2")
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["session"]["current_step_id"] == "phase-1-step-3"
    assert count(StepEvent, StepEvent.session_id == walker.session_id) == 2


def test_a_key_reused_with_another_answer_is_invalid(walker):
    send(walker, [item(1, 1)])

    response = send(walker, [item(1, 7), item(2, 2)])

    results = response.json["results"]
    assert [r["outcome"] for r in results] == ["invalid", "skipped"]
    assert results[0]["errors"] == {"idempotency_key": ["was used with another body"]}
    assert stored_session(walker.session_id).answers == {"q1": 1}


def test_a_wrong_step_stops_the_batch_with_a_conflict(walker):
    response = send(walker, [item(1, 1), item(3, 3), item(2, 2)])

    results = response.json["results"]
    assert [r["outcome"] for r in results] == ["applied", "conflict", "skipped"]
    assert [r["status"] for r in results] == [200, 409, 424]
    assert "phase-1-step-2" in results[1]["errors"]["step_id"][0]
    assert response.json["session"]["current_step_id"] == "phase-1-step-2"
    assert stored_session(walker.session_id).answers == {"q1": 1}


def test_a_completed_session_answers_conflict(walker):
    items = [item(i, i) for i in range(1, STEPS + 1)]
    done = send(walker, items)
    assert done.json["session"]["status"] == "completed" and done.json["step"] is None

    response = send(walker, [item(STEPS, 1, key="late")])

    assert response.json["results"] == [
        {
            "index": 0,
            "outcome": "conflict",
            "status": 409,
            "errors": {"step_id": ["This session is completed and takes no more answers."]},
        }
    ]


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([item(1, 1, key=f"k{i}") for i in range(101)], "items"),
        ([item(1, 1), {"step_id": "phase-1-step-2", "answer": 2}], "items.1.idempotency_key"),
        ([{"answer": 1, "idempotency_key": "k"}], "items.0.step_id"),
        ([{**item(1, 1), "idempotency_key": ""}], "items.0.idempotency_key"),
        ([{**item(1, 1), "idempotency_key": "k" * 256}], "items.0.idempotency_key"),
        ([item(1, 1), {**item(2, 2), "idempotency_key": "nul\u0000"}], "items[1].idempotency_key"),
        ([item(1, 1), item(2, "a\u0000b")], "items[1].answer"),
        ("not a list", "items"),
    ],
)
def test_a_badly_shaped_batch_is_a_422_naming_the_field_and_takes_nothing(walker, items, field):
    response = send(walker, items)

    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert field in response.json["errors"]
    assert count(StepEvent, StepEvent.session_id == walker.session_id) == 0
    assert count(idempotency.IdempotencyKey) == 0
    assert stored_session(walker.session_id).version == 1


def test_another_orgs_session_is_a_404(walker, create_org, learner, publish_flow, studio):
    other = create_org()
    publish_flow(other.org, long_flow())
    stranger = learner(other)
    assert stranger.start("offline").status_code == 201

    # The other org's secret key, in its own org's URL, on this org's session.
    response = send(walker, [item(1, 1)], token=other.sk, org=other.slug)
    assert response.status_code == 404
    # Another session's token, on this session.
    response = send(walker, [item(1, 1)], token=stranger.token)
    assert response.status_code == 404
    # A session id that is no session.
    response = send(walker, [item(1, 1)], token=studio.sk, session_id="0" * 32)
    assert response.status_code == 404
    assert count(StepEvent) == 0
    # The same batch with the session's own token is taken: the 404s were about the owner.
    assert send(walker, [item(1, 1)]).json["results"][0]["outcome"] == "applied"


def test_a_secret_key_may_send_a_batch(walker, studio):
    response = send(walker, [item(1, 1)], token=studio.sk)
    assert response.json["results"][0]["outcome"] == "applied"


def test_the_outbox_gets_one_step_event_per_taken_item(walker):
    send(walker, twenty_with_one_invalid())
    send(walker, twenty_with_one_invalid())  # the retry adds nothing

    db.session.rollback()
    payloads = db.session.scalars(
        sa.select(OutboxEvent.payload)
        .where(OutboxEvent.session_id == walker.session_id, OutboxEvent.type == "step.completed")
        .order_by(OutboxEvent.created_at)
    ).all()
    assert sorted(p["step_id"] for p in payloads) == sorted(
        f"phase-1-step-{i}" for i in range(1, INVALID_AT)
    )
    assert sorted(p["seq"] for p in payloads) == list(range(1, INVALID_AT))
    assert {p["answer"] for p in payloads} == set(range(1, INVALID_AT))


def test_a_key_twice_in_one_batch_is_taken_once(walker):
    response = send(walker, [item(1, 1), item(1, 1), item(2, 2, key="offline-1")])

    results = response.json["results"]
    assert [r["outcome"] for r in results] == ["applied", "replayed", "invalid"]
    assert results[2]["errors"] == {"idempotency_key": ["was used with another body"]}
    assert count(StepEvent, StepEvent.session_id == walker.session_id) == 1
