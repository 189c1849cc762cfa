"""The change feed and session history (issue 14): every committed event exactly once, in
cursor order, even when transactions commit out of order; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from mentorflow.flows.feed import Cursor
from mentorflow.flows.feed_api import EventPageSchema
from mentorflow.flows.learner_sessions import commit_step, go_back, lock_session
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent, write_transaction
from mentorflow.tenants.models import Org

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
WRITERS = 6
HOLDERS = 3  # writers 0..2 hold some transactions open; 3..5 never do
ROUNDS = 12
WAIT = 20  # seconds a holder waits for the others before giving up (liveness, not timing)


@pytest.fixture
def studio(create_org, publish_flow):
    keys = create_org("studio")
    publish_flow(keys.org, SMALL_FLOW)
    return keys


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.json


def read_all(client, url: str, token: str, **params) -> list[dict]:
    """Follow next_cursor until has_more is false; return every event read."""
    events, after = [], None
    while True:
        query = {**params, **({"after": after} if after else {})}
        page = client.get(url, query_string=query, headers=auth(token))
        assert page.status_code == 200, page.get_data(as_text=True)
        events += page.json["events"]
        after = page.json["next_cursor"]
        if not page.json["has_more"]:
            return events


def committed_event_ids(org_id: int) -> list[str]:
    """Every committed event of the org, in the feed's key order."""
    db.session.rollback()
    rows = db.session.execute(
        sa.select(OutboxEvent.id)
        .where(OutboxEvent.org_id == org_id)
        .order_by(OutboxEvent.txid, OutboxEvent.feed_seq)
    )
    return [str(event_id) for (event_id,) in rows]


class Traffic:
    """Writers committing steps and back moves (some holding their transaction open) while a
    reader polls the feed; what the reader saw and how often writers were overtaken."""

    def __init__(self, app, org_id: int, session_ids: list[str], waits_for_others: bool):
        self.app, self.org_id, self.session_ids = app, org_id, session_ids
        # SQLite serialises writers: while one holds its transaction no other can commit.
        self.waits_for_others = waits_for_others
        self.lock = threading.Condition()
        self.commits = 0
        self.polls = 0
        self.overtaken = 0
        self.holders = 0  # holders finished
        self.errors: list[BaseException] = []

    def _wait(self, predicate) -> bool:
        with self.lock:
            return self.lock.wait_for(predicate, timeout=WAIT)

    def write(self, writer: int) -> None:
        try:
            with self.app.app_context():
                org = db.session.get(Org, self.org_id)
                round_ = 0
                # The others keep committing while a holder is open, so it can be overtaken.
                while round_ < ROUNDS or (writer >= HOLDERS and self.holders < HOLDERS):
                    self._move(org, self.session_ids[writer], hold=writer < HOLDERS and round_ % 2)
                    round_ += 1
                db.session.remove()
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.errors.append(exc)
        finally:
            if writer < HOLDERS:
                with self.lock:
                    self.holders += 1

    def _move(self, org: Org, session_id: str, hold: bool) -> None:
        with write_transaction() as transaction:
            session = lock_session(org.id, session_id, transaction.connection)
            if session.current_step_id == "phase-1-step-1":
                commit_step(org, session, "phase-1-step-1", None, transaction)
            else:
                go_back(org, session, "phase-1-step-1", transaction)
            if hold:
                # Our event has its number; let others commit later numbers and the reader
                # poll past them before we commit.
                with self.lock:
                    commits, polls = self.commits, self.polls
                others = not self.waits_for_others or self._wait(
                    lambda: self.commits >= commits + 3
                )
                with self.lock:
                    polls = self.polls
                if self._wait(lambda: self.polls >= polls + 2) and others:
                    self.overtaken += self.waits_for_others
        with self.lock:
            self.commits += 1
            self.lock.notify_all()

    def polled(self) -> None:
        with self.lock:
            self.polls += 1
            self.lock.notify_all()


@pytest.mark.parametrize("limit", [3, 500])
def test_a_polling_reader_sees_every_committed_event_once_in_order(
    ctx, backend, studio, learner, client, limit
):
    session_ids = []
    for writer in range(WRITERS):
        walker = learner(studio)
        assert walker.start("onboarding", external_user_id=f"learner-{writer}").status_code == 201
        session_ids.append(walker.session_id)
    traffic = Traffic(ctx, studio.org.id, session_ids, waits_for_others=backend == "postgresql")
    threads = [threading.Thread(target=traffic.write, args=(i,)) for i in range(WRITERS)]
    starter = threading.Thread(
        target=lambda: [learner(studio).start("onboarding") for _ in range(5)]
    )
    for thread in [*threads, starter]:
        thread.start()

    seen: list[dict] = []
    after = None
    while True:
        done = not any(thread.is_alive() for thread in [*threads, starter])
        query = {"limit": limit, **({"after": after} if after else {})}
        page = client.get("/v1/orgs/studio/events", query_string=query, headers=auth(studio.sk))
        assert page.status_code == 200, page.get_data(as_text=True)
        traffic.polled()
        seen += page.json["events"]
        after = page.json["next_cursor"]
        if done and not page.json["has_more"]:
            break
    for thread in [*threads, starter]:
        thread.join()

    assert not traffic.errors, traffic.errors
    ids = [event["id"] for event in seen]
    assert len(ids) == len(set(ids)), "an event was read twice"
    expected = committed_event_ids(studio.org.id)
    # 6 starts by the writers' walkers and 5 by the starter, then one event per move.
    assert len(expected) >= WRITERS + 5 + WRITERS * ROUNDS
    missed = set(expected) - set(ids)
    assert not missed, f"{len(missed)} committed events were never read"
    assert ids == expected  # every committed event, exactly once, in the feed's order
    cursors = [Cursor.decode(event["cursor"]) for event in seen]
    assert cursors == sorted(set(cursors))
    if backend == "postgresql":
        # The hard case happened: a held transaction's event, numbered before events that
        # committed and were polled past while it was open, still reached the reader.
        assert traffic.overtaken >= HOLDERS


def test_session_history_shows_every_answer_back_moves_and_completion(studio, learner, client):
    walker = learner(studio)
    walker.start("onboarding", external_user_id="ada")
    assert walker.answer("phase-1-step-1").status_code == 200
    assert walker.answer("phase-1-step-2", "new").status_code == 200
    assert walker.back("phase-1-step-2").status_code == 200
    assert walker.answer("phase-1-step-2", "pro").status_code == 200  # pro skips the day rate
    done = walker.answer("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"})
    assert done.status_code == 200
    url = f"/v1/orgs/studio/sessions/{walker.session_id}/events"
    events = read_all(client, url, walker.token, limit=2)
    assert [(e["type"], e["step_id"]) for e in events] == [
        ("session.started", None),
        ("step.completed", "phase-1-step-1"),
        ("step.completed", "phase-1-step-2"),
        ("step.reopened", "phase-1-step-2"),
        ("step.completed", "phase-1-step-2"),
        ("step.completed", "phase-2-step-2"),
        ("session.completed", None),
    ]
    answers = [e["data"]["answer"] for e in events if e["type"] == "step.completed"]
    assert answers[1:3] == ["new", "pro"]  # the answer given before the back move is kept
    assert events[3]["data"]["from_step_id"] == "phase-2-step-1"
    assert {e["session_id"] for e in events} == {walker.session_id}
    assert {e["external_user_id"] for e in events} == {"ada"}
    assert {(e["flow"], e["flow_version"]) for e in events} == {("onboarding", 1)}
    # The secret key reads the same history; the org feed holds it too.
    assert read_all(client, url, studio.sk) == events
    assert read_all(client, "/v1/orgs/studio/events", studio.sk) == events


def test_the_page_is_what_the_schema_would_dump(studio, learner, client):
    walker = learner(studio)
    walker.start("onboarding", external_user_id="ada")
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    body = client.get("/v1/orgs/studio/events", headers=auth(studio.sk)).json
    objects = {
        **body,
        "events": [
            {**event, "occurred_at": datetime.fromisoformat(event["occurred_at"])}
            for event in body["events"]
        ],
    }
    assert EventPageSchema().dump(objects) == body


def test_filters_by_type_flow_and_learner(studio, create_org, publish_flow, learner, client):
    publish_flow(studio.org)  # the demo flow, a second flow of the org
    ada, bob, demo = learner(studio), learner(studio), learner(studio)
    ada.start("onboarding", external_user_id="ada")
    bob.start("onboarding", external_user_id="bob")
    flows = {row[0] for row in db.session.execute(sa.text("SELECT slug FROM flows")).all()} - {
        "onboarding"
    }
    (other_flow,) = flows
    demo.start(other_flow, external_user_id="ada")
    ada.answer("phase-1-step-1")
    bob.answer("phase-1-step-1")
    url = "/v1/orgs/studio/events"
    everything = read_all(client, url, studio.sk)
    assert len(everything) == 5

    steps = read_all(client, url, studio.sk, types="step.completed")
    assert {e["session_id"] for e in steps} == {ada.session_id, bob.session_id}
    assert all(e["type"] == "step.completed" for e in steps)
    both = read_all(client, url, studio.sk, types="step.completed,session.started")
    assert both == everything

    of_ada = read_all(client, url, studio.sk, learner="ada")
    assert {e["session_id"] for e in of_ada} == {ada.session_id, demo.session_id}
    of_flow = read_all(client, url, studio.sk, flow=other_flow)
    assert [e["session_id"] for e in of_flow] == [demo.session_id]
    assert read_all(client, url, studio.sk, flow="onboarding", learner="bob", limit=1) == [
        e for e in everything if e["session_id"] == bob.session_id
    ]
    assert read_all(client, url, studio.sk, learner="nobody") == []
    # A cursor from the unfiltered feed works with a filter: the pages continue after it.
    first = everything[0]["cursor"]
    assert read_all(client, url, studio.sk, after=first, learner="bob") == [
        e for e in everything[1:] if e["session_id"] == bob.session_id
    ]


def test_an_empty_page_keeps_the_cursor(studio, learner, client):
    walker = learner(studio)
    walker.start("onboarding")
    page = client.get("/v1/orgs/studio/events", headers=auth(studio.sk)).json
    assert len(page["events"]) == 1 and page["has_more"] is False
    again = client.get(
        "/v1/orgs/studio/events",
        query_string={"after": page["next_cursor"]},
        headers=auth(studio.sk),
    ).json
    assert again == {"events": [], "next_cursor": page["next_cursor"], "has_more": False}
    walker.answer("phase-1-step-1")
    later = client.get(
        "/v1/orgs/studio/events",
        query_string={"after": page["next_cursor"]},
        headers=auth(studio.sk),
    ).json
    assert [e["type"] for e in later["events"]] == ["step.completed"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"after": "not-a-cursor"}, "query.after"),
        ({"after": "MS4yLjM"}, "query.after"),  # "1.2.3": base64, but not two numbers
        ({"types": "step.completed,step.deleted"}, "query.types"),
    ],
)
def test_bad_query_is_a_422_naming_the_field(studio, learner, client, query, field):
    walker = learner(studio)
    walker.start("onboarding")
    for url, token in [
        ("/v1/orgs/studio/events", studio.sk),
        (f"/v1/orgs/studio/sessions/{walker.session_id}/events", walker.token),
    ]:
        if field == "query.types" and "sessions" in url:
            continue  # a session's history takes no filters
        body = assert_problem(client.get(url, query_string=query, headers=auth(token)), 422)
        assert set(body["errors"]) == {field}


def test_limit_bounds_are_accepted(studio, learner, client):
    walker = learner(studio)
    walker.start("onboarding")
    for limit in (1, 500):
        page = client.get(
            "/v1/orgs/studio/events", query_string={"limit": limit}, headers=auth(studio.sk)
        )
        assert page.status_code == 200 and len(page.json["events"]) == 1


def test_other_orgs_and_other_sessions_get_nothing(
    studio, create_org, publish_flow, learner, client
):
    walker = learner(studio)
    walker.start("onboarding")
    walker.answer("phase-1-step-1")
    rival = create_org("rival")
    publish_flow(rival.org, SMALL_FLOW)
    stranger = learner(rival)
    stranger.start("onboarding")
    history = f"/v1/orgs/studio/sessions/{walker.session_id}/events"
    # Another org's key: the org's feed and its session's history are 404.
    assert_problem(client.get("/v1/orgs/studio/events", headers=auth(rival.sk)), 404)
    assert_problem(client.get(history, headers=auth(rival.sk)), 404)
    # Through its own org's URL, the session is not there.
    other_url = f"/v1/orgs/rival/sessions/{walker.session_id}/events"
    assert_problem(client.get(other_url, headers=auth(rival.sk)), 404)
    assert_problem(client.get(other_url, headers=auth(walker.token)), 404)
    # The rival's feed holds only its own events.
    rival_events = read_all(client, "/v1/orgs/rival/events", rival.sk)
    assert {e["session_id"] for e in rival_events} == {stranger.session_id}
    # Another session's token of the same org: 404, as reading that session is.
    other = learner(studio)
    other.start("onboarding")
    assert_problem(client.get(history, headers=auth(other.token)), 404)
    # The org feed is for the secret key only.
    assert_problem(client.get("/v1/orgs/studio/events", headers=auth(studio.pk)), 403)
    assert_problem(client.get("/v1/orgs/studio/events", headers=auth(walker.token)), 403)
    assert_problem(client.get(history, headers=auth(studio.pk)), 403)
    assert_problem(
        client.get("/v1/orgs/studio/sessions/" + "0" * 32 + "/events", headers=auth(studio.sk)), 404
    )
