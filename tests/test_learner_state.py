"""A learner's own state on every device, and claiming an anonymous session.

Run on SQLite and PostgreSQL (the ``backend`` fixture); the racing writers use real threads
against the real database.
"""

from __future__ import annotations

import contextvars
import html
import json
import queue
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from console_client import Console, add_staff
from mentorflow.delivery.sinks.base import OutboundEvent
from mentorflow.delivery.sinks.memory import memory_document
from mentorflow.delivery.sinks.posthog import posthog_capture
from mentorflow.flows.live import read_changes
from mentorflow.flows.models import Learner
from mentorflow.platform import push
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent
from mentorflow.platform.push import Change
from mentorflow.tenants.models import Role

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
RACERS = 16
MERGE_PATCH = "application/merge-patch+json"


def bearer(token: str, **headers: str) -> dict[str, str]:
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
def studio(create_org, publish_flow):
    keys = create_org("state-studio")
    publish_flow(keys.org, SMALL_FLOW)
    return keys


def mint(client, keys, ext: str = "user-4711") -> str:
    response = client.post(
        f"/v1/orgs/{keys.slug}/learners/{ext}/tokens", json={}, headers=bearer(keys.sk)
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json["token"]


def state_url(keys, ext: str = "user-4711") -> str:
    return f"/v1/orgs/{keys.slug}/learners/{ext}/state"


def put(client, keys, token, state, if_match=None, ext="user-4711"):
    headers = bearer(token) if if_match is None else bearer(token, If_Match=if_match)
    return client.put(state_url(keys, ext), json={"state": state}, headers=headers)


def patch(client, keys, token, body, if_match, ext="user-4711"):
    return client.patch(
        state_url(keys, ext),
        data=json.dumps(body),
        headers=bearer(token, If_Match=if_match, Content_Type=MERGE_PATCH),
    )


def state_events(org_id: int) -> list[dict]:
    db.session.rollback()
    return [
        event.payload
        for event in db.session.query(OutboxEvent)
        .filter_by(org_id=org_id, type="learner.state_changed")
        .order_by(OutboxEvent.feed_seq)
    ]


def test_a_new_learner_has_an_empty_state_at_version_zero(client, studio):
    phone = mint(client, studio)
    got = client.get(state_url(studio), headers=bearer(phone))
    assert got.status_code == 200
    assert got.json == {"state": {}, "version": 0}
    assert got.headers["ETag"] == '"0"'
    # A learner the org never mentioned: the same, for the secret key; no 404.
    unseen = client.get(state_url(studio, "never-seen"), headers=bearer(studio.sk))
    assert unseen.json == {"state": {}, "version": 0}
    assert (
        client.get(state_url(studio), headers=bearer(phone, If_None_Match='"0"')).status_code == 304
    )


def test_writes_need_if_match_and_a_stale_one_gets_the_current_state(client, studio):
    phone = mint(client, studio)
    laptop = mint(client, studio)
    missing = put(client, studio, phone, {"theme": "dark"})
    assert missing.status_code == 428
    assert client.get(state_url(studio), headers=bearer(phone)).json["version"] == 0

    first = put(client, studio, phone, {"theme": "dark", "persona": "artist"}, '"0"')
    assert first.status_code == 200
    assert first.json == {"state": {"theme": "dark", "persona": "artist"}, "version": 1}
    assert first.headers["ETag"] == '"1"'

    # The laptop still holds version 0: it is told the current state, to merge and retry.
    stale = put(client, studio, laptop, {"theme": "light"}, '"0"')
    assert stale.status_code == 412
    assert stale.headers["Content-Type"] == "application/problem+json"
    assert stale.json["state"] == {"theme": "dark", "persona": "artist"}
    assert stale.json["version"] == 1
    assert stale.json["type"] == "urn:mentorflow:problem:version-mismatch"
    merged = put(client, studio, laptop, {**stale.json["state"], "theme": "light"}, '"1"')
    assert merged.status_code == 200
    assert merged.json["version"] == 2

    got = client.get(state_url(studio), headers=bearer(phone, If_None_Match='"1"'))
    assert got.status_code == 200
    assert got.json == {"state": {"theme": "light", "persona": "artist"}, "version": 2}
    # Unchanged: no new version, no event.
    again = put(client, studio, phone, {"theme": "light", "persona": "artist"}, '"2"')
    assert again.json["version"] == 2
    events = state_events(studio.org.id)
    assert [event["version"] for event in events] == [1, 2]
    assert events[1]["changed_keys"] == ["theme"]
    assert events[1]["state"] == {"theme": "light", "persona": "artist"}


def test_merge_patch_sets_merges_and_removes_with_null(client, studio):
    phone = mint(client, studio)
    put(client, studio, phone, {"a": 1, "prefs": {"x": 1, "y": 2}, "gone": True}, '"0"')
    patched = patch(
        client, studio, phone, {"prefs": {"y": None, "z": 3}, "gone": None, "b": [1]}, '"1"'
    )
    assert patched.status_code == 200, patched.json
    assert patched.json == {"state": {"a": 1, "prefs": {"x": 1, "z": 3}, "b": [1]}, "version": 2}
    assert patch(client, studio, phone, {"a": 2}, '"1"').status_code == 412
    assert (
        client.patch(
            state_url(studio), data="{}", headers=bearer(phone, Content_Type=MERGE_PATCH)
        ).status_code
        == 428
    )
    # A patch is merge-patch+json; a plain JSON body is refused, not guessed at.
    plain = client.patch(state_url(studio), json={"a": 3}, headers=bearer(phone, If_Match='"2"'))
    assert plain.status_code == 415
    assert client.get(state_url(studio), headers=bearer(phone)).json["version"] == 2
    # "*" writes whatever the version; a bare number is read as the ETag; garbage is a 422.
    forced = patch(client, studio, phone, {"a": 9}, "*")
    assert forced.json == {"state": {"a": 9, "prefs": {"x": 1, "z": 3}, "b": [1]}, "version": 3}
    assert patch(client, studio, phone, {"a": 10}, "3").json["version"] == 4
    bad = patch(client, studio, phone, {"a": 11}, "latest")
    assert bad.status_code == 422 and "headers.If-Match" in bad.json["errors"]


def test_a_state_over_64_kb_is_refused_and_changes_nothing(client, studio):
    phone = mint(client, studio)
    assert put(client, studio, phone, {"blob": "x" * 60_000}, '"0"').status_code == 200
    too_big = put(client, studio, phone, {"blob": "x" * 66_000}, '"1"')
    assert too_big.status_code == 413
    grown = patch(client, studio, phone, {"more": "y" * 10_000}, '"1"')
    assert grown.status_code == 413
    assert not_object(client, studio, phone).status_code == 422
    got = client.get(state_url(studio), headers=bearer(phone)).json
    assert got["version"] == 1 and set(got["state"]) == {"blob"}


def not_object(client, studio, phone):
    return client.put(
        state_url(studio), json={"state": [1, 2]}, headers=bearer(phone, If_Match='"1"')
    )


def test_another_learner_and_another_org_cannot_see_the_state(client, studio, create_org):
    phone = mint(client, studio)
    put(client, studio, phone, {"secret": "mine"}, '"0"')
    someone = mint(client, studio, "user-9")
    assert client.get(state_url(studio), headers=bearer(someone)).status_code == 404
    assert put(client, studio, someone, {}, '"1"').status_code == 404
    other = create_org("other-studio")
    assert client.get(state_url(studio), headers=bearer(other.sk)).status_code == 404
    assert client.get(state_url(studio), headers=bearer(studio.pk)).status_code == 403


def test_sixteen_writers_with_the_same_if_match_one_wins(ctx, studio):
    token = mint(ctx.test_client(), studio)
    barrier = threading.Barrier(RACERS)
    statuses: list = [None] * RACERS

    def racer(index: int) -> None:
        client = ctx.test_client()
        barrier.wait()
        response = put(client, studio, token, {"writer": index}, '"0"')
        statuses[index] = (response.status_code, response.json)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [body for status, body in statuses if status == 200]
    assert len(winners) == 1, [status for status, _ in statuses]
    assert sorted(status for status, _ in statuses) == [200] + [412] * (RACERS - 1)
    for status, body in statuses:
        if status == 412:
            assert body["state"] == winners[0]["state"] and body["version"] == 1
    assert len(state_events(studio.org.id)) == 1


def read_stream(response, into: queue.Queue) -> None:
    event: dict = {}
    for chunk in response.response:
        for line in (chunk.decode() if isinstance(chunk, bytes) else chunk).split("\n"):
            if not line:
                if event:
                    into.put(event)
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value


def next_event(events: queue.Queue, kind: str, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            return None
        if event.get("event") == kind:
            return json.loads(event["data"])
    return None


def test_a_state_change_reaches_the_learners_other_device_within_a_second(ctx, studio, monkeypatch):
    monkeypatch.setitem(ctx.config, "STREAM_MAX_SECONDS", 3)
    client = ctx.test_client()
    phone, laptop = mint(client, studio), mint(client, studio)
    started = client.post(
        f"/v1/orgs/{studio.slug}/flows/onboarding/sessions", json={}, headers=bearer(laptop)
    )
    session_id = started.json["session"]["id"]
    # A plain client, in a context of its own: the suite's client reads every body to its end.
    reader = FlaskClient(ctx, ctx.response_class)
    stream = contextvars.Context().run(
        reader.get,
        f"/v1/orgs/{studio.slug}/learners/user-4711/stream",
        headers=bearer(laptop),
        buffered=False,
    )
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    events: queue.Queue = queue.Queue()
    reading = threading.Thread(target=read_stream, args=(stream, events), daemon=True)
    reading.start()
    try:
        assert next_event(events, "learner_state", 5) == {"state": {}, "version": 0}
        assert next_event(events, "state", 5)["session"]["id"] == session_id

        began = time.monotonic()
        assert put(client, studio, phone, {"theme": "dark"}, '"0"').status_code == 200
        pushed = next_event(events, "learner_state", 1.0)
        assert pushed == {"state": {"theme": "dark"}, "version": 1}
        assert time.monotonic() - began < 1.0

        # The phone answers the laptop's session: the laptop's stream shows it too.
        client.post(
            f"/v1/orgs/{studio.slug}/sessions/{session_id}/steps",
            json={"step_id": "phase-1-step-1"},
            headers=bearer(phone),
        )
        moved = next_event(events, "state", 1.0)
        assert moved["session"]["current_step_id"] == "phase-1-step-2"
    finally:
        reading.join(timeout=5)  # the stream ends after STREAM_MAX_SECONDS
        stream.close()


def start_anonymous(client, keys) -> tuple[str, str]:
    started = client.post(
        f"/v1/orgs/{keys.slug}/flows/onboarding/sessions", json={}, headers=bearer(keys.pk)
    )
    assert started.status_code == 201
    return started.json["session"]["id"], started.json["token"]


def claim(client, keys, session_id, learner_token, session_token):
    return client.post(
        f"/v1/orgs/{keys.slug}/sessions/{session_id}/claim",
        headers=bearer(learner_token, X_Session_Token=session_token),
    )


def test_a_learner_claims_their_anonymous_session_and_resumes_it(client, studio):
    session_id, st = start_anonymous(client, studio)
    client.post(
        f"/v1/orgs/{studio.slug}/sessions/{session_id}/steps",
        json={"step_id": "phase-1-step-1"},
        headers=bearer(st),
    )
    laptop = mint(client, studio)
    claimed = claim(client, studio, session_id, laptop, st)
    assert claimed.status_code == 200, claimed.json
    assert claimed.json["session"]["external_user_id"] == "user-4711"
    assert claimed.json["session"]["version"] == 3
    # Again, by the same learner from another device: 200, nothing new.
    again = claim(client, studio, session_id, mint(client, studio), st)
    assert again.status_code == 200
    assert again.json["session"]["version"] == 3
    db.session.rollback()
    claims = db.session.query(OutboxEvent).filter_by(session_id=session_id, type="session.claimed")
    assert claims.count() == 1
    assert claims.one().payload["previous_distinct_id"] == session_id

    tablet = mint(client, studio)
    resumed = client.post(
        f"/v1/orgs/{studio.slug}/flows/onboarding/sessions",
        json={"resume": True},
        headers=bearer(tablet),
    )
    assert resumed.status_code == 200
    assert resumed.json["session"]["id"] == session_id
    assert resumed.json["step"]["id"] == "phase-1-step-2"


def test_a_session_of_another_learner_or_org_cannot_be_claimed(client, studio, create_org):
    session_id, st = start_anonymous(client, studio)
    assert claim(client, studio, session_id, mint(client, studio), st).status_code == 200
    assert claim(client, studio, session_id, mint(client, studio, "user-9"), st).status_code == 409
    # Without the session's own token, or with another session's: as if it did not exist.
    other_id, other_st = start_anonymous(client, studio)
    assert claim(client, studio, session_id, mint(client, studio), other_st).status_code == 404
    missing = client.post(
        f"/v1/orgs/{studio.slug}/sessions/{other_id}/claim",
        headers=bearer(mint(client, studio)),
    )
    assert missing.status_code == 422
    # Another org's learner.
    other = create_org("other-studio")
    publisher = mint(client, other, "user-4711")
    assert claim(client, studio, other_id, publisher, other_st).status_code == 404
    assert claim(client, other, other_id, publisher, other_st).status_code == 404
    # Only a learner token claims.
    assert claim(client, studio, other_id, studio.sk, other_st).status_code == 403


def test_the_console_learner_page_shows_the_state_and_its_history(client, studio):
    phone = mint(client, studio)
    put(client, studio, phone, {"theme": "dark", "persona": "artist"}, '"0"')
    patch(client, studio, studio.sk, {"theme": None}, '"1"')
    add_staff(studio.org, "mentor@state.example", Role.MENTOR)
    console = Console(client)
    assert console.login("mentor@state.example").status_code == 302
    db.session.rollback()
    learner_id = db.session.scalar(
        sa.select(Learner.id).where(Learner.external_user_id == "user-4711")
    )
    page = html.unescape(console.get(f"/admin/learners/{learner_id}").get_data(as_text=True))
    assert '"persona": "artist"' in page and '"theme"' not in page.split("learner-state-history")[0]
    history = page.split('id="learner-state-history"')[1]
    assert 'data-version="2"' in history and 'data-version="1"' in history
    assert f"{studio.sk[:11]}…" in history  # who wrote version 2: the secret key
    assert "learner:user-4711" in history  # version 1: the learner's own token


def test_other_processes_hear_of_learner_changes_by_redis_or_the_poll(client, studio):
    """The cross-process carriers: a change message keeps its learner, and the embedded
    backend's poll reads a learner's state and sessions."""
    org_id = studio.org.id
    phone = mint(client, studio)
    started = client.post(
        f"/v1/orgs/{studio.slug}/flows/onboarding/sessions", json={}, headers=bearer(phone)
    )
    since = utcnow() - timedelta(seconds=5)
    put(client, studio, phone, {"a": 1}, '"0"')
    db.session.rollback()
    learner_id = db.session.scalar(sa.select(Learner.id))
    changes = read_changes(set(), set(), since, {learner_id})
    keys = {(change.session_id, change.version, change.learner_id) for change in changes}
    assert keys == {
        (f"learner:{learner_id}", 1, learner_id),
        (started.json["session"]["id"], 1, learner_id),
    }
    change = Change(org_id, 0, f"learner:{learner_id}", 3, learner_id)
    assert push._decode(push._encode(change)) == change
    older = Change(org_id, 2, "abc", 4)
    assert push._decode(push._encode(older)) == older
    assert push._decode('[1, 2, "abc", 4]') == older  # what a process not yet upgraded sends


def test_state_changes_are_in_the_feed_under_the_learner(client, studio):
    phone = mint(client, studio)
    put(client, studio, phone, {"theme": "dark"}, '"0"')
    mint(client, studio, "user-9")
    put(client, studio, studio.sk, {"theme": "light"}, '"0"', ext="user-9")
    feed = client.get(
        f"/v1/orgs/{studio.slug}/events",
        query_string={"learner": "user-4711", "types": "learner.state_changed"},
        headers=bearer(studio.sk),
    )
    assert feed.status_code == 200
    (event,) = feed.json["events"]
    assert event["type"] == "learner.state_changed"
    assert event["external_user_id"] == "user-4711" and event["session_id"] is None
    assert event["data"]["state"] == {"theme": "dark"} and event["data"]["version"] == 1
    assert event["data"]["changed_keys"] == ["theme"]


def test_a_state_change_reaches_the_sinks_without_its_content_in_analytics(client, studio):
    phone = mint(client, studio)
    put(client, studio, phone, {"persona": "artist"}, '"0"')
    db.session.rollback()
    stored = db.session.query(OutboxEvent).filter_by(type="learner.state_changed").one()
    assert {delivery.sink for delivery in stored.deliveries} == set(ctx_sinks(client))
    event = OutboundEvent(stored.id, studio.slug, stored.type, stored.payload, stored.created_at)
    captured = posthog_capture(event)
    assert captured["distinct_id"] == "user-4711"
    assert captured["event"] == "learner.state_changed"
    assert "artist" not in json.dumps(captured["properties"])  # the state stays out
    assert memory_document(event) is None  # memory holds answers, not app settings


def ctx_sinks(client) -> list[str]:
    return list(client.application.config["SINKS"])
