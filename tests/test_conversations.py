"""Conversations: a session's messages, and the contexts an AI mentor reads (both backends)."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from mentorflow.flows import conversations
from mentorflow.flows.conversation_models import Message
from mentorflow.flows.feed import EVENT_TYPES
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }


@pytest.fixture
def walk(create_org, publish_flow, learner):
    keys = create_org("studio")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys, keys.sk)  # a secret key starts the session as the learner's
    assert walker.start("onboarding", external_user_id="user-4711").status_code == 201
    return keys, walker


def messages_url(walker) -> str:
    return f"/v1/orgs/{walker.org}/sessions/{walker.session_id}/messages"


def post(client, walker, body, token=None, **headers):
    return client.post(
        messages_url(walker), json=body, headers=bearer(token or walker.token, **headers)
    )


def stored_messages() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(Message))


def test_a_message_is_stored_on_the_current_step_and_listed_oldest_first(client, walk):
    keys, walker = walk
    first = post(client, walker, {"role": "user", "content": "I'm new here."})
    assert first.status_code == 201
    message = first.json["message"]
    assert message["seq"] == 1 and message["step_id"] == "phase-1-step-1"
    assert message["role"] == "user" and message["metadata"] == {}
    walker.answer("phase-1-step-1")
    second = post(
        client,
        walker,
        {"role": "assistant", "content": "Welcome!", "metadata": {"model": "m-2"}},
        keys.sk,
    )
    assert second.json["message"]["step_id"] == "phase-1-step-2"
    third = post(
        client, walker, {"role": "tool", "content": "lookup done", "step_id": "phase-1-step-1"}
    )
    assert (
        third.json["message"]["seq"] == 3 and third.json["message"]["step_id"] == "phase-1-step-1"
    )
    listed = client.get(messages_url(walker), headers=bearer(walker.token))
    assert listed.status_code == 200
    assert [m["content"] for m in listed.json["items"]] == [
        "I'm new here.",
        "Welcome!",
        "lookup done",
    ]
    assert listed.json["items"][1]["metadata"] == {"model": "m-2"}
    assert listed.json["next_cursor"] is None


def test_messages_page_with_a_cursor(client, walk):
    _, walker = walk
    for index in range(5):
        post(client, walker, {"role": "user", "content": f"m{index}"})
    seen, after = [], None
    while True:
        query = {"limit": 2} | ({"after": after} if after else {})
        page = client.get(messages_url(walker), query_string=query, headers=bearer(walker.token))
        assert page.status_code == 200
        seen += [m["content"] for m in page.json["items"]]
        after = page.json["next_cursor"]
        if after is None:
            break
    assert seen == ["m0", "m1", "m2", "m3", "m4"]
    newer = client.get(
        messages_url(walker), query_string={"after": 4}, headers=bearer(walker.token)
    )
    assert [m["seq"] for m in newer.json["items"]] == [5]
    bad = client.get(messages_url(walker), query_string={"limit": 0}, headers=bearer(walker.token))
    assert bad.status_code == 422 and "query.limit" in bad.json["errors"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": "x" * 32_001}, "content"),
        ({"role": "user"}, "content"),
        ({"role": "mentor", "content": "hi"}, "role"),
        ({"content": "hi"}, "role"),
        ({"role": "user", "content": "hi", "metadata": {"blob": "x" * 4100}}, "metadata"),
        ({"role": "user", "content": "hi", "metadata": ["not", "an", "object"]}, "metadata"),
        ({"role": "user", "content": "a\u0000b"}, "content"),
        ({"role": "user", "content": "a\ud800b"}, "content"),
        ({"role": "user", "content": "hi", "metadata": {"k": "\u0000"}}, "metadata.k"),
        ({"role": "user", "content": "hi", "step_id": "phase-9-step-9"}, "step_id"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(client, walk, body, field):
    _, walker = walk
    response = post(client, walker, body)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]
    assert stored_messages() == 0


def test_the_longest_content_and_metadata_are_accepted(client, walk):
    _, walker = walk
    body = {"role": "system", "content": "x" * 32_000, "metadata": {"blob": "y" * 4000}}
    assert post(client, walker, body).status_code == 201


def test_an_idempotency_key_replays_the_first_message(client, walk):
    _, walker = walk
    body = {"role": "user", "content": "Once, please."}
    first = post(client, walker, body, Idempotency_Key="k-1")
    again = post(client, walker, body, Idempotency_Key="k-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    other = post(client, walker, {**body, "content": "Another"}, Idempotency_Key="k-1")
    assert other.status_code == 422
    assert other.json["type"] == "urn:mentorflow:problem:idempotency-key-reused"
    assert stored_messages() == 1


def test_sixteen_racing_posts_of_one_key_make_one_message(ctx, walk):
    _, walker = walk
    url, racers = messages_url(walker), 16
    barrier = threading.Barrier(racers)
    responses: list = [None] * racers

    def send(index: int) -> None:
        client = ctx.test_client()
        barrier.wait()
        responses[index] = client.post(
            url,
            json={"role": "user", "content": "double click"},
            headers=bearer(walker.token, Idempotency_Key="same-click"),
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status_code for r in responses] == [201] * racers
    assert len({r.json["message"]["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == racers - 1
    assert stored_messages() == 1


def test_racing_posts_without_a_key_are_numbered_without_gaps(ctx, walk):
    _, walker = walk
    url, racers = messages_url(walker), 8
    barrier = threading.Barrier(racers)
    statuses: list[int] = [0] * racers

    def send(index: int) -> None:
        client = ctx.test_client()
        barrier.wait()
        statuses[index] = client.post(
            url, json={"role": "user", "content": f"m{index}"}, headers=bearer(walker.token)
        ).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [201] * racers
    db.session.rollback()
    assert sorted(db.session.scalars(sa.select(Message.seq))) == list(range(1, racers + 1))


def test_a_completed_session_still_takes_messages_with_no_step(client, walk):
    _, walker = walk
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "pro")
    done = walker.answer("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"})
    assert done.json["session"]["status"] == "completed"
    response = post(client, walker, {"role": "assistant", "content": "Well done."})
    assert response.status_code == 201 and response.json["message"]["step_id"] is None


def test_an_erased_session_refuses_messages_with_a_409(client, walk):
    _, walker = walk
    erased = {walker.session_id}

    def check(session):
        return session.id in erased

    conversations.register_erased_check(check)
    try:
        response = post(client, walker, {"role": "user", "content": "hello?"})
    finally:
        conversations._ERASED_CHECKS.remove(check)
    assert response.status_code == 409
    assert response.json["type"] == "urn:mentorflow:problem:session-erased"
    assert stored_messages() == 0


def test_each_message_is_a_message_created_event(client, walk):
    _, walker = walk
    message = post(client, walker, {"role": "user", "content": "hello"}).json["message"]
    db.session.rollback()
    event = db.session.scalars(
        sa.select(OutboxEvent).where(OutboxEvent.type == "message.created")
    ).one()
    assert event.session_id == walker.session_id
    assert event.payload["message_id"] == message["id"] and event.payload["seq"] == 1
    assert event.payload["content"] == "hello" and event.payload["role"] == "user"
    # A type of the change feed's (which on a shared PostgreSQL cluster shows an event only
    # once every older write transaction anywhere has ended: not asserted here).
    assert "message.created" in EVENT_TYPES


def test_another_org_or_session_sees_no_messages(client, walk, create_org, learner):
    keys, walker = walk
    other = create_org("elsewhere")
    stranger = learner(keys)
    stranger.start("onboarding")
    body = {"role": "user", "content": "hi"}
    assert post(client, walker, body, other.sk).status_code in (401, 404)
    assert post(client, walker, body, stranger.token).status_code == 404
    assert client.get(messages_url(walker), headers=bearer(stranger.token)).status_code == 404
    assert (
        client.post(
            f"/v1/orgs/elsewhere/sessions/{walker.session_id}/messages",
            json=body,
            headers=bearer(other.sk),
        ).status_code
        == 404
    )
    assert post(client, walker, body, keys.pk).status_code == 403
    assert stored_messages() == 0


def test_the_session_context_carries_the_latest_messages(client, walk):
    _, walker = walk
    for index in range(4):
        post(client, walker, {"role": "user", "content": f"m{index}"})
    context = walker.context()
    assert context.status_code == 200
    assert [m["content"] for m in context.json["messages"]] == ["m0", "m1", "m2", "m3"]
    assert context.json["messages_truncated"] is False
    url = f"/v1/orgs/{walker.org}/sessions/{walker.session_id}/context"
    two = client.get(url, query_string={"messages": 2}, headers=bearer(walker.token))
    assert [m["content"] for m in two.json["messages"]] == ["m2", "m3"]
    assert two.json["messages_truncated"] is True
    none = client.get(url, query_string={"messages": 0}, headers=bearer(walker.token))
    assert none.json["messages"] == [] and none.json["messages_truncated"] is True
    bad = client.get(url, query_string={"messages": 201}, headers=bearer(walker.token))
    assert bad.status_code == 422 and "query.messages" in bad.json["errors"]


def mint(client, keys, ext="user-4711") -> str:
    response = client.post(
        f"/v1/orgs/{keys.slug}/learners/{ext}/tokens", json={}, headers=bearer(keys.sk)
    )
    return response.json["token"]


def test_the_learner_context_spans_sessions_newest_first(client, walk, learner, publish_flow):
    keys, walker = walk
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    post(client, walker, {"role": "user", "content": "first flow"})
    second = learner(keys, keys.sk)
    second.start("onboarding", external_user_id="user-4711")
    post(client, second, {"role": "assistant", "content": "x" * 2500})
    anonymous = learner(keys)
    anonymous.start("onboarding")
    post(client, anonymous, {"role": "user", "content": "not theirs"})
    token = mint(client, keys)
    url = f"/v1/orgs/{keys.slug}/learners/user-4711/context"
    context = client.get(url, headers=bearer(token))
    assert context.status_code == 200
    body = context.json
    assert body["external_user_id"] == "user-4711"
    assert [s["session_id"] for s in body["sessions"]] == [second.session_id, walker.session_id]
    first_session = body["sessions"][1]
    assert first_session["answers"] == {"level": "new"} and first_session["flow"] == "onboarding"
    assert first_session["progress"]["completed"] == 2
    assert [m["session_id"] for m in body["messages"]] == [second.session_id, walker.session_id]
    cut = body["messages"][0]
    assert len(cut["content"]) == 2000 and cut["content_truncated"] is True
    assert body["truncated"] == {"sessions": False, "messages": False, "content": True}
    one = client.get(url, query_string={"messages": 1}, headers=bearer(keys.sk))
    assert len(one.json["messages"]) == 1 and one.json["truncated"]["messages"] is True
    other_token = mint(client, keys, "user-9")
    assert client.get(url, headers=bearer(other_token)).status_code == 404
    assert client.get(url, headers=bearer(walker.token)).status_code == 403
    unknown = client.get(f"/v1/orgs/{keys.slug}/learners/nobody/context", headers=bearer(keys.sk))
    assert unknown.status_code == 404


def test_a_cursor_past_any_message_number_is_a_422(client, walk):
    _, walker = walk
    response = client.get(
        messages_url(walker), query_string={"after": 2**31}, headers=bearer(walker.token)
    )
    assert response.status_code == 422 and "query.after" in response.json["errors"]


def test_a_learner_token_talks_in_its_own_sessions_and_a_learners_message_is_activity(client, walk):
    keys, walker = walk
    token = mint(client, keys)
    before = walker.get().json["session"]
    response = post(client, walker, {"role": "user", "content": "from my phone"}, token)
    assert response.status_code == 201
    listed = client.get(messages_url(walker), headers=bearer(token))
    assert [m["content"] for m in listed.json["items"]] == ["from my phone"]
    db.session.rollback()
    session = db.session.get(LearnerSession, walker.session_id)
    assert session.last_activity_at >= datetime.fromisoformat(before["updated_at"])
    assert session.version == before["version"]  # a message is not a new state
