"""Retry-safe calls: idempotent starts and back moves, If-Match on back, 415, RateLimit
headers, request ids, problem+json everywhere under /v1, no legacy_key for learners."""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from mentorflow.flows.document import load_document
from mentorflow.flows.models import EventKind, LearnerSession, StepEvent
from mentorflow.platform import idempotency
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent
from mentorflow.platform.ratelimit import DatabaseStorage, RateLimit, RateLimitCounter
from mentorflow.platform.requestid import LOG_FORMAT, RequestIdFormatter
from mentorflow.tenants import services
from mentorflow.tenants.models import KeyKind
from support import make_app

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
START = "/v1/orgs/retry-studio/flows/onboarding/sessions"


@pytest.fixture
def studio(create_org, publish_flow):
    keys = create_org("retry-studio", allowed_origins=["https://studio.example"])
    publish_flow(keys.org, SMALL_FLOW)
    return keys


@pytest.fixture
def walker(studio, learner):
    walker = learner(studio)
    assert walker.start("onboarding").status_code == 201
    return walker


def count(model, *where) -> int:
    db.session.rollback()  # a fresh snapshot: requests commit on their own connections
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == status and body["title"] and body["type"]
    return body


def start(client, key: str, body: dict, **headers: str):
    headers = {name.replace("_", "-"): value for name, value in headers.items()}
    return client.post(START, json=body, headers={"Authorization": f"Bearer {key}", **headers})


def back(walker, step_id: str, **headers: str):
    headers = {name.replace("_", "-"): value for name, value in headers.items()}
    return walker.client.post(
        f"/v1/orgs/{walker.org}/sessions/{walker.session_id}/back",
        json={"step_id": step_id},
        headers={"Authorization": f"Bearer {walker.token}", **headers},
    )


# Session start


def test_retried_start_replays_the_same_session_and_token(client, studio):
    first = start(client, studio.pk, {"name": "Ada"}, Idempotency_Key="start-1")
    retry = start(client, studio.pk, {"name": "Ada"}, Idempotency_Key="start-1")
    assert first.status_code == retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert retry.get_data() == first.get_data()
    assert retry.json["token"] == first.json["token"]
    assert retry.headers["Location"] == first.headers["Location"]
    assert retry.headers["ETag"] == first.headers["ETag"]
    # No orphan session, no second session.started for the sinks.
    assert count(LearnerSession) == 1
    assert count(OutboxEvent, OutboxEvent.type == "session.started") == 1
    # The replayed token works.
    session_id = first.json["session"]["id"]
    read = client.get(
        f"/v1/orgs/retry-studio/sessions/{session_id}",
        headers={"Authorization": f"Bearer {retry.json['token']}"},
    )
    assert read.status_code == 200


def test_start_key_with_another_body_is_422_naming_the_key(client, studio):
    assert start(client, studio.pk, {"name": "Ada"}, Idempotency_Key="start-1").status_code == 201
    body = assert_problem(
        start(client, studio.pk, {"name": "Grace"}, Idempotency_Key="start-1"), 422
    )
    assert body["type"] == "urn:mentorflow:problem:idempotency-key-reused"
    assert "headers.Idempotency-Key" in body["errors"]
    assert count(LearnerSession) == 1


def test_start_keys_are_per_api_key(client, studio):
    by_pk = start(client, studio.pk, {}, Idempotency_Key="same")
    by_sk = start(client, studio.sk, {}, Idempotency_Key="same")
    assert by_pk.status_code == by_sk.status_code == 201
    assert "Idempotent-Replayed" not in by_sk.headers
    assert by_sk.json["session"]["id"] != by_pk.json["session"]["id"]


def test_start_without_key_starts_a_session_each_time(client, studio):
    assert start(client, studio.pk, {}).status_code == 201
    assert start(client, studio.pk, {}).status_code == 201
    assert count(LearnerSession) == 2


def test_start_racing_its_retry_keeps_one_session(client, studio, monkeypatch):
    """The retry arrives while the first start is still running: neither saw the other's key
    when it looked, and the one that commits second gives way and replays the first."""
    first = start(client, studio.pk, {"name": "Ada"}, Idempotency_Key="race")
    real_find = idempotency.find_start
    misses = []

    def find_before_the_first_commit(*args, **kwargs):
        if not misses:
            misses.append(True)
            return None
        return real_find(*args, **kwargs)

    monkeypatch.setattr(idempotency, "find_start", find_before_the_first_commit)
    retry = start(client, studio.pk, {"name": "Ada"}, Idempotency_Key="race")
    assert misses == [True]
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json["token"] == first.json["token"]
    assert count(LearnerSession) == 1
    assert count(OutboxEvent, OutboxEvent.type == "session.started") == 1


def test_racing_retries_of_one_start_make_one_session(ctx, studio):
    """Eight copies of one start released at once (a client retrying on a slow network)."""
    racers = 8
    barrier = threading.Barrier(racers)
    responses: list = [None] * racers

    def submit(index: int) -> None:
        client = ctx.test_client()
        barrier.wait()
        responses[index] = start(client, studio.pk, {"name": "Ada"}, Idempotency_Key="racing")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status_code for r in responses] == [201] * racers
    assert len({r.json["token"] for r in responses}) == 1
    assert sum("Idempotent-Replayed" in r.headers for r in responses) == racers - 1
    assert count(LearnerSession) == 1
    assert count(OutboxEvent, OutboxEvent.type == "session.started") == 1


def test_stored_start_response_keeps_no_readable_token(client, studio):
    token = start(client, studio.pk, {}, Idempotency_Key="start-1").json["token"]
    db.session.rollback()
    stored = db.session.scalars(sa.select(idempotency.SessionStartKey.response_body)).all()
    assert len(stored) == 1
    assert token not in stored[0] and "st_" not in stored[0]


def test_start_key_longer_than_255_is_422(client, studio):
    body = assert_problem(start(client, studio.pk, {}, Idempotency_Key="k" * 256), 422)
    assert "headers.Idempotency-Key" in body["errors"]
    assert count(LearnerSession) == 0


# Back


def test_retried_back_replays_instead_of_moving_again(walker):
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    first = back(walker, "phase-1-step-1", Idempotency_Key="back-1")
    assert first.status_code == 200
    assert first.json["step"]["id"] == "phase-1-step-1"
    # The learner moves on, then the retry of the back arrives.
    assert walker.answer("phase-1-step-1").status_code == 200
    retry = back(walker, "phase-1-step-1", Idempotency_Key="back-1")
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_data() == first.get_data()
    assert retry.headers["ETag"] == first.headers["ETag"]
    # The session stayed where the learner went, and went back only once.
    assert walker.get().json["session"]["current_step_id"] == "phase-1-step-2"
    assert count(StepEvent, StepEvent.kind == EventKind.BACK) == 1


def test_back_key_with_another_body_is_422(walker):
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    assert back(walker, "phase-1-step-1", Idempotency_Key="back-1").status_code == 200
    body = assert_problem(back(walker, "phase-1-step-2", Idempotency_Key="back-1"), 422)
    assert "headers.Idempotency-Key" in body["errors"]
    assert walker.get().json["session"]["current_step_id"] == "phase-1-step-1"


def test_back_with_stale_if_match_is_412_and_changes_nothing(walker):
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")  # version 3
    body = assert_problem(back(walker, "phase-1-step-1", If_Match='"2"'), 412)
    assert body["type"] == "urn:mentorflow:problem:version-mismatch"
    state = walker.get().json["session"]
    assert (state["current_step_id"], state["version"]) == ("phase-2-step-1", 3)
    assert count(StepEvent, StepEvent.kind == EventKind.BACK) == 0
    moved = back(walker, "phase-1-step-1", If_Match='"3"')
    assert moved.status_code == 200
    assert moved.json["session"]["current_step_id"] == "phase-1-step-1"


def test_back_to_a_step_not_completed_is_409_even_with_stale_if_match(walker):
    body = assert_problem(back(walker, "phase-2-step-1", If_Match='"7"'), 409)
    assert body["session"]["current_step_id"] == "phase-1-step-1"


# Content-Type


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_415(walker, content_type):
    headers = {"Authorization": f"Bearer {walker.token}"}
    if content_type:
        headers["Content-Type"] = content_type
    response = walker.client.post(
        f"/v1/orgs/{walker.org}/sessions/{walker.session_id}/steps",
        data=json.dumps({"step_id": "phase-1-step-1"}),
        headers=headers,
    )
    body = assert_problem(response, 415)
    assert "application/json" in body["detail"]
    assert walker.get().json["session"]["version"] == 1


def test_start_body_without_content_type_is_415_and_starts_nothing(client, studio):
    response = client.post(
        START, data='{"name": "Ada"}', headers={"Authorization": f"Bearer {studio.pk}"}
    )
    assert_problem(response, 415)
    assert count(LearnerSession) == 0


def test_a_bodiless_start_needs_no_content_type(client, studio):
    response = client.post(START, headers={"Authorization": f"Bearer {studio.pk}"})
    assert response.status_code == 201


def test_json_with_a_charset_is_json(walker):
    response = walker.client.post(
        f"/v1/orgs/{walker.org}/sessions/{walker.session_id}/steps",
        data=json.dumps({"step_id": "phase-1-step-1"}),
        headers={
            "Authorization": f"Bearer {walker.token}",
            "Content-Type": "application/json; charset=utf-8",
        },
    )
    assert response.status_code == 200


# Request ids


def test_request_id_is_generated_and_echoed(walker):
    first, second = walker.get(), walker.get()
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


def test_a_sane_request_id_is_kept_and_logged(walker, caplog):
    caplog.set_level(logging.DEBUG, logger="mentorflow")
    response = walker.get(X_Request_Id="client-req:42")
    assert response.headers["X-Request-Id"] == "client-req:42"
    records = [r for r in caplog.records if getattr(r, "request_id", None) == "client-req:42"]
    assert any(walker.session_id in r.getMessage() for r in records)
    # Records outside a request say so.
    logging.getLogger("mentorflow.tests").warning("outside")
    assert caplog.records[-1].request_id == "-"


def test_log_lines_of_a_request_name_its_id():
    formatter = RequestIdFormatter(LOG_FORMAT)
    inside = logging.makeLogRecord({"name": "mentorflow.x", "msg": "hi", "request_id": "abc"})
    outside = logging.makeLogRecord({"name": "mentorflow.x", "msg": "hi", "request_id": "-"})
    bare = logging.makeLogRecord({"name": "mentorflow.x", "msg": "hi"})
    assert formatter.format(inside).endswith(" mentorflow.x [abc]: hi")
    assert formatter.format(outside).endswith(" mentorflow.x: hi")
    assert formatter.format(bare).endswith(" mentorflow.x: hi")


@pytest.mark.parametrize("sent", ["x" * 129, "two words", "<script>", ""])
def test_an_odd_request_id_is_replaced(walker, sent):
    response = walker.get(X_Request_Id=sent)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


def test_problem_responses_carry_the_request_id_too(client, studio):
    response = client.get("/v1/orgs/retry-studio/flows/nope", headers={"X-Request-Id": "abc-1"})
    assert_problem(response, 401)
    assert response.headers["X-Request-Id"] == "abc-1"


# CORS


def test_browsers_may_read_the_api_headers(client, studio):
    origin = {"Origin": "https://studio.example"}
    unauthorized = client.get("/v1/orgs/retry-studio/flows/onboarding", headers=origin)
    assert unauthorized.status_code == 401
    exposed = {
        name.strip().lower()
        for name in unauthorized.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {
        "www-authenticate",
        "x-request-id",
        "etag",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "idempotent-replayed",
        "location",
    } <= exposed
    preflight = client.options(
        START,
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        },
    )
    assert "X-Request-Id" in preflight.headers["Access-Control-Allow-Headers"]


# Problem+json for every path under /v1


@pytest.mark.parametrize(
    "path", ["/v1", "/v1/", "/v1/nothing", "/v1/orgs/retry-studio/nothing/here"]
)
def test_unknown_api_paths_are_problem_404(client, studio, path):
    assert_problem(client.get(path), 404)


def test_wrong_method_is_problem_405_with_allow(walker):
    response = walker.client.get(
        f"/v1/orgs/{walker.org}/sessions/{walker.session_id}/steps",
        headers={"Authorization": f"Bearer {walker.token}"},
    )
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_console_404_stays_html(client):
    response = client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


# legacy_key


LEGACY_FLOW = SMALL_FLOW.read_text().replace(
    "        key: level\n", "        key: level\n        legacy_key: studio.level\n"
)


def test_learners_never_see_legacy_keys(client, create_org, publish_flow, learner):
    assert "legacy_key" in LEGACY_FLOW
    keys = create_org("legacy-studio")
    publish_flow(keys.org, load_document(LEGACY_FLOW))
    for key in (keys.pk, keys.sk):
        flow = client.get(
            "/v1/orgs/legacy-studio/flows/onboarding", headers={"Authorization": f"Bearer {key}"}
        )
        assert flow.status_code == 200
        assert "legacy_key" not in flow.get_data(as_text=True)
        steps = flow.json["definition"]["phases"][0]["steps"]
        assert steps[1]["key"] == "level"
    walker = learner(keys)
    walker.start("onboarding")
    on_step = walker.answer("phase-1-step-1")
    assert on_step.json["step"]["key"] == "level"
    assert "legacy_key" not in on_step.get_data(as_text=True)


# RateLimit headers


@pytest.fixture
def limited(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'limited.db'}", tmp_path, RATE_LIMIT="3 per minute")
    with app.app_context():
        org = services.create_org("busy", "Busy")
        _, key = services.create_api_key(org, KeyKind.SECRET)
        db.session.commit()
    yield app.test_client(), {"Authorization": f"Bearer {key}"}
    with app.app_context():
        db.engine.dispose()


def parse_ratelimit(value: str) -> dict[str, object]:
    name, *params = value.split(";")
    return {"name": name, **{k: int(v) for k, v in (p.split("=") for p in params)}}


def test_api_responses_say_where_the_client_stands(limited):
    client, headers = limited
    responses = [client.get("/v1/orgs/busy/flows/none", headers=headers) for _ in range(4)]
    assert [r.status_code for r in responses] == [404, 404, 404, 429]
    for response in responses:
        assert parse_ratelimit(response.headers["RateLimit-Policy"]) == {
            "name": '"api"',
            "q": 3,
            "w": 60,
        }
    quotas = [parse_ratelimit(r.headers["RateLimit"]) for r in responses]
    assert [q["r"] for q in quotas] == [2, 1, 0, 0]
    assert all(q["name"] == '"api"' and 0 < q["t"] <= 60 for q in quotas)
    assert quotas[-1]["t"] == int(responses[-1].headers["Retry-After"])
    # The console and the health check are not under the API's limit.
    assert "RateLimit" not in client.get("/healthz").headers


def test_ratelimit_reset_comes_from_the_shared_counter(tmp_path):
    """Another process opened the window: its end is read from the storage, not guessed."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'counters.db'}")
    RateLimitCounter.__table__.create(engine)
    storage = DatabaseStorage(engine)
    one, other = (RateLimit("3 per minute", storage, "api") for _ in range(2))
    opened = one.count("10.0.0.1")
    with engine.begin() as connection:  # the window opened 40 s ago
        connection.execute(
            sa.update(RateLimitCounter).values(expires_at=RateLimitCounter.expires_at - 40)
        )
    seen = other.count("10.0.0.1")
    assert (opened.remaining, seen.remaining) == (2, 1)
    assert opened.reset == 60 and 19 <= seen.reset <= 20
    engine.dispose()
