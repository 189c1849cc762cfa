"""The learner API against the contract in DESIGN.md, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from mentorflow.flows.document import load_document
from mentorflow.flows.models import StepEvent
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, OutboxEvent

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
SESSION_FIELDS = {
    "id",
    "org",
    "flow",
    "flow_version",
    "status",
    "current_step_id",
    "answers",
    "completed_step_ids",
    "progress",
    "name",
    "email",
    "phone",
    "external_user_id",
    "memory_container",
    "version",
    "created_at",
    "updated_at",
    "completed_at",
}


@pytest.fixture
def studio(create_org, publish_flow):
    keys = create_org("studio")
    publish_flow(keys.org, SMALL_FLOW)
    return keys


@pytest.fixture
def walker(studio, learner):
    walker = learner(studio)
    assert walker.start("onboarding").status_code == 201
    return walker


def count(model) -> int:
    db.session.rollback()  # a fresh snapshot: requests commit on their own connections
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == status
    assert body["title"] and body["type"]
    return body


def test_published_flow_is_readable_with_etag(client, studio):
    headers = {"Authorization": f"Bearer {studio.pk}"}
    response = client.get("/v1/orgs/studio/flows/onboarding", headers=headers)
    assert response.status_code == 200
    assert response.json["version"] == 1
    assert response.json["definition"]["phases"][0]["id"] == "phase-1"
    etag = response.headers["ETag"]
    again = client.get(
        "/v1/orgs/studio/flows/onboarding", headers={**headers, "If-None-Match": etag}
    )
    assert again.status_code == 304
    assert again.data == b""


def test_start_session_returns_session_step_and_token(studio, learner):
    walker = learner(studio)
    response = walker.start(
        "onboarding", name="Ada", email="ada@example.com", external_user_id="user_42"
    )
    assert response.status_code == 201
    body = response.json
    assert set(body) == {"session", "step", "token"}
    assert set(body["session"]) == SESSION_FIELDS
    session = body["session"]
    assert session["status"] == "active"
    assert session["current_step_id"] == "phase-1-step-1"
    assert session["flow"] == "onboarding" and session["org"] == "studio"
    assert session["flow_version"] == 1 and session["version"] == 1
    assert (session["name"], session["email"]) == ("Ada", "ada@example.com")
    assert session["progress"] == {"completed": 0, "total": 4, "percent": 0}
    assert body["step"]["id"] == "phase-1-step-1"
    assert body["step"]["phase_id"] == "phase-1"
    assert body["step"]["phase_title"] == "Basics"
    assert body["token"].startswith("st_")
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"].endswith(f"/sessions/{session['id']}")


def test_start_session_rejects_bad_contact_fields(client, studio):
    response = client.post(
        "/v1/orgs/studio/flows/onboarding/sessions",
        json={"email": "not-an-email", "colour": "red"},
        headers={"Authorization": f"Bearer {studio.pk}"},
    )
    body = assert_problem(response, 422)
    assert set(body["errors"]) == {"email", "colour"}
    assert count(OutboxEvent) == 0


def test_walk_to_completion(walker):
    assert walker.answer("phase-1-step-1", omit=True).status_code == 200
    assert walker.answer("phase-1-step-2", "new").json["step"]["id"] == "phase-2-step-1"
    assert walker.answer("phase-2-step-1", 350).json["session"]["progress"]["percent"] == 75
    done = walker.answer("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"})
    assert done.status_code == 200
    session = done.json["session"]
    assert done.json["step"] is None
    assert session["status"] == "completed" and session["completed_at"]
    assert session["current_step_id"] is None
    assert session["answers"] == {
        "level": "new",
        "day-rate": 350,
        "contact": {"name": "Ada", "email": "ada@example.com"},
    }
    assert session["completed_step_ids"] == [
        "phase-1-step-1",
        "phase-1-step-2",
        "phase-2-step-1",
        "phase-2-step-2",
    ]
    assert session["progress"] == {"completed": 4, "total": 4, "percent": 100}
    # The contact step fills the session's own contact fields.
    assert (session["name"], session["email"]) == ("Ada", "ada@example.com")
    assert count(StepEvent) == 4
    closed = walker.answer("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"})
    body = assert_problem(closed, 409)
    assert body["session"]["status"] == "completed" and body["step"] is None


def test_branch_skips_steps(walker):
    walker.answer("phase-1-step-1")
    response = walker.answer("phase-1-step-2", "pro")
    assert response.json["step"]["id"] == "phase-2-step-2"
    assert response.json["session"]["completed_step_ids"] == ["phase-1-step-1", "phase-1-step-2"]
    assert response.json["session"]["progress"] == {"completed": 2, "total": 3, "percent": 66}


def test_refresh_returns_the_same_state_and_304_on_etag(walker):
    posted = walker.answer("phase-1-step-1")
    refreshed = walker.get()
    assert refreshed.status_code == 200
    assert refreshed.json == posted.json
    assert refreshed.headers["ETag"] == '"2"'
    assert walker.get(If_None_Match='"2"').status_code == 304
    assert walker.get(If_None_Match='"1"').status_code == 200


def test_stale_step_is_409_with_current_state_and_changes_nothing(walker):
    walker.answer("phase-1-step-1")
    stale = walker.answer("phase-1-step-1")
    body = assert_problem(stale, 409)
    assert body["session"]["current_step_id"] == "phase-1-step-2"
    assert body["session"]["version"] == 2
    assert body["step"]["id"] == "phase-1-step-2"
    assert count(StepEvent) == 1
    assert walker.get().json["session"]["version"] == 2


@pytest.mark.parametrize(
    ("step_answers", "bad_answer", "field"),
    [
        ([], "hello", "answer"),  # info takes no answer
        ([None], "expert", "answer"),  # not an option
        ([None, "new"], -5, "answer"),  # below min
        ([None, "new"], "350", "answer"),  # not a number
        ([None, "new", 300], {"name": "Ada", "email": "nope"}, "answer.email"),
    ],
)
def test_invalid_answer_is_422_naming_the_field_and_changes_nothing(
    walker, step_answers, bad_answer, field
):
    steps = ["phase-1-step-1", "phase-1-step-2", "phase-2-step-1", "phase-2-step-2"]
    for step_id, answer in zip(steps, step_answers, strict=False):
        assert walker.answer(step_id, answer).status_code == 200
    before = walker.get().json
    events = count(StepEvent)
    body = assert_problem(walker.answer(steps[len(step_answers)], bad_answer), 422)
    assert field in body["errors"]
    assert walker.get().json == before
    assert count(StepEvent) == events


def test_missing_step_id_is_422(walker):
    response = walker.client.post(
        f"/v1/orgs/studio/sessions/{walker.session_id}/steps",
        json={"answer": 1},
        headers={"Authorization": f"Bearer {walker.token}"},
    )
    body = assert_problem(response, 422)
    assert "step_id" in body["errors"]


def test_idempotent_replay_applies_once(walker):
    first = walker.answer("phase-1-step-1", Idempotency_Key="k-1")
    replay = walker.answer("phase-1-step-1", Idempotency_Key="k-1")
    assert first.status_code == replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert replay.json == first.json
    assert count(StepEvent) == 1
    assert count(OutboxEvent) == 2  # session.started + one step.completed


def test_idempotency_key_reused_with_another_body_is_422(walker):
    walker.answer("phase-1-step-1", Idempotency_Key="k-1")
    walker.answer("phase-1-step-2", "new", Idempotency_Key="k-2")
    body = assert_problem(walker.answer("phase-2-step-1", 100, Idempotency_Key="k-2"), 422)
    assert "headers.Idempotency-Key" in body["errors"]
    assert walker.get().json["session"]["current_step_id"] == "phase-2-step-1"


def test_if_match_mismatch_is_412(walker):
    body = assert_problem(walker.answer("phase-1-step-1", If_Match='"7"'), 412)
    assert "version 1" in body["detail"]
    assert walker.answer("phase-1-step-1", If_Match='"1"').status_code == 200


def test_back_revisits_a_completed_step_and_keeps_answers(walker):
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    walker.answer("phase-2-step-1", 200)
    back = walker.back("phase-1-step-2")
    assert back.status_code == 200
    assert back.json["step"]["id"] == "phase-1-step-2"
    assert back.json["session"]["answers"] == {"level": "new", "day-rate": 200}
    assert back.json["session"]["completed_step_ids"] == ["phase-1-step-1"]
    # Answering differently now takes the other branch.
    assert walker.answer("phase-1-step-2", "pro").json["step"]["id"] == "phase-2-step-2"
    assert_problem(walker.back("phase-2-step-1"), 409)
    assert_problem(walker.back("nowhere"), 422)


def test_context_for_chat_callers(walker):
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    context = walker.context()
    assert context.status_code == 200
    assert context.json == {
        "answers": {"level": "new"},
        "completed_step_ids": ["phase-1-step-1", "phase-1-step-2"],
        "completed_phases": ["phase-1"],
        "current_phase": "phase-2",
        "progress": {"completed": 2, "total": 4, "percent": 50},
        "contact": {"name": None, "email": None, "phone": None},
        "messages": [],
        "messages_truncated": False,
    }


def test_sessions_stay_pinned_to_their_version(studio, walker, publish_flow, learner):
    definition = load_document(SMALL_FLOW.read_text())
    definition["phases"][0]["steps"][1]["prompt"] = "Years of tattooing?"
    definition["phases"][0]["steps"][1]["options"].append({"value": "mid", "label": "A few"})
    assert publish_flow(studio.org, definition) == 2
    walker.answer("phase-1-step-1")
    old = walker.get().json
    assert old["session"]["flow_version"] == 1
    assert old["step"]["prompt"] == "How long have you been tattooing?"
    assert walker.answer("phase-1-step-2", "mid").status_code == 422
    newcomer = learner(studio)
    newcomer.start("onboarding")
    newcomer.answer("phase-1-step-1")
    assert newcomer.get().json["step"]["prompt"] == "Years of tattooing?"
    assert newcomer.answer("phase-1-step-2", "mid").status_code == 200


def test_step_commit_writes_event_outbox_and_deliveries_together(walker):
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    db.session.rollback()
    events = db.session.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.created_at)).all()
    assert [e.type for e in events] == ["session.started", "step.completed", "step.completed"]
    assert events[2].payload["step_id"] == "phase-1-step-2"
    assert events[2].payload["answer"] == "new"
    sinks = db.session.execute(sa.select(Delivery.sink, Delivery.status)).all()
    assert sorted(sinks) == sorted([("memory", "pending"), ("posthog", "pending")] * 3)


def test_a_failing_after_commit_hook_never_fails_the_step(app, walker, monkeypatch):
    def broker_down(event_ids):
        raise ConnectionError("broker unreachable")

    monkeypatch.setitem(app.extensions, "mentorflow.after_commit_hooks", [broker_down])
    response = walker.answer("phase-1-step-1")
    assert response.status_code == 200
    assert count(StepEvent) == 1


def test_missing_and_bad_credentials_are_401(client, studio, walker):
    url = "/v1/orgs/studio/flows/onboarding"
    assert_problem(client.get(url), 401)
    assert client.get(url).headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(client.get(url, headers={"Authorization": "Bearer pk_nope"}), 401)
    assert_problem(client.get(url, headers={"Authorization": "Basic abc"}), 401)
    forged = client.get(
        f"/v1/orgs/studio/sessions/{walker.session_id}",
        headers={"Authorization": "Bearer st_forged"},
    )
    assert_problem(forged, 401)


def test_revoked_key_is_401_at_once(client, studio):
    from mentorflow.tenants.services import revoke_api_key

    url = "/v1/orgs/studio/flows/onboarding"
    headers = {"Authorization": f"Bearer {studio.pk}"}
    assert client.get(url, headers=headers).status_code == 200
    begin_write(db.session)
    revoke_api_key(studio.org, studio.pk[:11])
    db.session.commit()
    assert_problem(client.get(url, headers=headers), 401)


def test_key_kinds_are_enforced(client, studio, walker, learner):
    session_url = f"/v1/orgs/studio/sessions/{walker.session_id}"
    assert_problem(client.get(session_url, headers={"Authorization": f"Bearer {studio.pk}"}), 403)
    assert (
        client.get(session_url, headers={"Authorization": f"Bearer {studio.sk}"}).status_code == 200
    )
    other = learner(studio)
    other.start("onboarding")
    # One session's token does not open another session of the same org.
    assert_problem(client.get(session_url, headers={"Authorization": f"Bearer {other.token}"}), 404)
    assert_problem(
        client.get(
            "/v1/orgs/studio/flows/onboarding", headers={"Authorization": f"Bearer {walker.token}"}
        ),
        403,
    )


def test_unknown_objects_are_404(client, studio, walker):
    headers = {"Authorization": f"Bearer {studio.sk}"}
    assert_problem(client.get("/v1/orgs/nowhere/flows/onboarding", headers=headers), 404)
    assert_problem(client.get("/v1/orgs/studio/flows/nowhere", headers=headers), 404)
    assert_problem(client.get("/v1/orgs/studio/sessions/" + "0" * 32, headers=headers), 404)
    assert_problem(client.get("/v1/orgs/studio/sessions/not-an-id", headers=headers), 404)
    assert_problem(client.get("/v1/orgs/studio/jobs/12345", headers=headers), 404)


def test_openapi_document_is_served(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    paths = response.json["paths"]
    assert "/v1/orgs/{org}/sessions/{session_id}/steps" in paths
    assert "/v1/orgs/{org}/flows/{flow}/sessions" in paths


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_cors_allows_only_the_orgs_origins(client, create_org, publish_flow):
    keys = create_org("cors-studio", allowed_origins=["https://studio.example"])
    publish_flow(keys.org, SMALL_FLOW)
    url = "/v1/orgs/cors-studio/flows/onboarding"
    preflight = client.options(
        url,
        headers={
            "Origin": "https://studio.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://studio.example"
    assert "Idempotency-Key" in preflight.headers["Access-Control-Allow-Headers"]
    allowed = client.get(
        url, headers={"Origin": "https://studio.example", "Authorization": f"Bearer {keys.pk}"}
    )
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://studio.example"
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    denied = client.get(
        url, headers={"Origin": "https://evil.example", "Authorization": f"Bearer {keys.pk}"}
    )
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_stale_step_with_stale_if_match_is_409_with_state(walker):
    walker.answer("phase-1-step-1", If_Match='"1"')
    body = assert_problem(walker.answer("phase-1-step-1", If_Match='"1"'), 409)
    assert body["step"]["id"] == "phase-1-step-2"


@pytest.mark.parametrize(
    ("contact", "field"),
    [
        ({"name": "Ada\x00"}, "name"),
        ({"external_user_id": "user-\ud800"}, "external_user_id"),
        ({"email": "ada@example.com", "phone": "\udfff555 0100"}, "phone"),
    ],
)
def test_unstorable_text_when_starting_is_422_naming_the_field_and_creates_nothing(
    studio, learner, contact, field
):
    from mentorflow.flows.models import LearnerSession

    body = assert_problem(learner(studio).start("onboarding", **contact), 422)
    assert list(body["errors"]) == [field]
    assert count(LearnerSession) == 0


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"name": "Ada \ud83d", "email": "ada@example.com"}, "answer.name"),
        ({"name": "Ada", "email": "ada@example.com\x00"}, "answer.email"),
        ({"name": "Ada", "email": "ada@example.com", "note\x00": "x"}, "answer.<key>"),
    ],
)
def test_unstorable_text_in_an_answer_is_422_naming_the_field_and_changes_nothing(
    walker, answer, field
):
    for step_id, value in (("phase-1-step-1", None), ("phase-1-step-2", "new")):
        assert walker.answer(step_id, value).status_code == 200
    assert walker.answer("phase-2-step-1", 5).status_code == 200
    before = walker.get().json
    events = count(StepEvent)
    body = assert_problem(walker.answer("phase-2-step-2", answer), 422)
    assert field in body["errors"]
    assert walker.get().json == before
    assert count(StepEvent) == events
    # The same answer, storable, is taken.
    assert (
        walker.answer("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"}).status_code
        == 200
    )


def test_unstorable_text_in_the_query_is_422(walker):
    body = assert_problem(
        walker.client.get(
            f"/v1/orgs/{walker.org}/sessions/{walker.session_id}?view=a%00b",
            headers={"Authorization": f"Bearer {walker.token}"},
        ),
        422,
    )
    assert list(body["errors"]) == ["query.view"]


def test_a_storable_emoji_and_accents_pass_the_text_check():
    from mentorflow.platform.text import unstorable_strings

    assert unstorable_strings({"name": "Zoë 👋", "list": ["a", {"b": "ç"}]}) == {}
    assert unstorable_strings({"list": ["ok", {"b": "\ud800"}]}) == {
        "list[1].b": [
            "Must be valid Unicode text: an unpaired surrogate (U+D800 to U+DFFF) was sent."
        ]
    }


def test_a_body_over_the_api_limit_is_413_problem_and_creates_nothing(app, studio, learner):
    from mentorflow.flows.models import LearnerSession

    limit = app.config["API_MAX_BODY_BYTES"]
    response = learner(studio).start("onboarding", name="A", padding="x" * limit)
    body = assert_problem(response, 413)
    assert body["status"] == 413
    assert count(LearnerSession) == 0
    # Just under the limit is read as usual (and refused for its unknown field, not its size).
    small = learner(studio).start("onboarding", name="A", padding="x" * (limit // 2))
    assert small.status_code == 422
