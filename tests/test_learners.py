"""Learners across devices: learner tokens, resume, a learner's sessions, a fresh session token.

Run on SQLite and PostgreSQL (the ``backend`` fixture); the racing starts use real threads
against the real database.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from console_client import Console, add_staff
from mentorflow.flows.models import LearnerSession, LearnerToken, SessionStatus
from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role
from support import DEMO_FLOW

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
RACERS = 16


def bearer(token: str, **headers: str) -> dict[str, str]:
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
def studio(create_org, publish_flow):
    keys = create_org("learner-studio")
    publish_flow(keys.org, SMALL_FLOW)
    publish_flow(keys.org, DEMO_FLOW)
    return keys


def mint(client, keys, ext: str = "user-4711", **body) -> str:
    response = client.post(
        f"/v1/orgs/{keys.slug}/learners/{ext}/tokens", json=body, headers=bearer(keys.sk)
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.json["token"].startswith("lt_")
    return response.json["token"]


def start(client, slug: str, token: str, flow: str = "onboarding", **body):
    return client.post(f"/v1/orgs/{slug}/flows/{flow}/sessions", json=body, headers=bearer(token))


def active_sessions(ext: str, flow_slug: str | None = None) -> int:
    db.session.rollback()  # a fresh snapshot: requests commit on their own connections
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(LearnerSession)
        .where(
            LearnerSession.external_user_id == ext,
            LearnerSession.status == SessionStatus.ACTIVE,
            LearnerSession.learner_id.is_not(None),
        )
    )


def test_a_learner_resumes_on_a_second_device_at_the_same_step(client, studio):
    laptop = mint(client, studio)
    started = start(client, studio.slug, laptop, resume=True)
    assert started.status_code == 201
    session_id = started.json["session"]["id"]
    assert started.json["session"]["external_user_id"] == "user-4711"
    steps = f"/v1/orgs/{studio.slug}/sessions/{session_id}/steps"
    assert (
        client.post(steps, json={"step_id": "phase-1-step-1"}, headers=bearer(laptop)).status_code
        == 200
    )
    assert (
        client.post(
            steps, json={"step_id": "phase-1-step-2", "answer": "new"}, headers=bearer(laptop)
        ).status_code
        == 200
    )

    # The laptop's storage is cleared; the org's backend signs the user in on a tablet.
    tablet = mint(client, studio)
    resumed = start(client, studio.slug, tablet, resume=True)
    assert resumed.status_code == 200
    assert resumed.json["session"]["id"] == session_id
    assert resumed.json["step"]["id"] == "phase-2-step-1"
    assert resumed.json["session"]["answers"] == {"level": "new"}
    assert "token" not in resumed.json
    # And the tablet carries on where the laptop stopped.
    moved = client.post(
        steps, json={"step_id": "phase-2-step-1", "answer": 900}, headers=bearer(tablet)
    )
    assert moved.status_code == 200
    assert moved.json["step"]["id"] == "phase-2-step-2"
    # Another flow is another session; without resume, a new one.
    assert start(client, studio.slug, tablet, flow="rafael-tats", resume=True).status_code == 201
    assert start(client, studio.slug, tablet).status_code == 201
    assert active_sessions("user-4711") == 3


@pytest.mark.parametrize("credential", ["learner", "secret"])
def test_sixteen_racing_resumes_leave_one_active_session(ctx, studio, credential):
    token = mint(ctx.test_client(), studio) if credential == "learner" else studio.sk
    body = {"resume": True}
    if credential == "secret":
        body["external_user_id"] = "user-4711"
    barrier = threading.Barrier(RACERS)
    responses: list = [None] * RACERS

    def racer(index: int) -> None:
        client = ctx.test_client()
        barrier.wait()
        responses[index] = start(client, studio.slug, token, **body)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * (RACERS - 1) + [201]
    assert len({response.json["session"]["id"] for response in responses}) == 1
    assert active_sessions("user-4711") == 1


def test_a_publishable_key_never_resumes_nor_plants_a_session_in_a_learner(client, studio):
    # Anyone can start with the public key and name someone else's user id...
    planted = start(client, studio.slug, studio.pk, external_user_id="user-4711")
    assert planted.status_code == 201
    assert start(client, studio.slug, studio.pk, resume=True).status_code == 403
    # ...but that session is no learner's: the learner's device never lands in it.
    token = mint(client, studio)
    own = start(client, studio.slug, token, resume=True)
    assert own.status_code == 201
    assert own.json["session"]["id"] != planted.json["session"]["id"]
    planted_url = f"/v1/orgs/{studio.slug}/sessions/{planted.json['session']['id']}"
    assert client.get(planted_url, headers=bearer(token)).status_code == 404
    listed = client.get(
        f"/v1/orgs/{studio.slug}/learners/user-4711/sessions", headers=bearer(token)
    )
    assert [item["id"] for item in listed.json["items"]] == [own.json["session"]["id"]]


def test_a_learner_token_reads_and_advances_only_its_learners_sessions(client, studio):
    ada, bob = mint(client, studio, "ada"), mint(client, studio, "bob")
    ada_session = start(client, studio.slug, ada).json["session"]["id"]
    url = f"/v1/orgs/{studio.slug}/sessions/{ada_session}"
    assert client.get(url, headers=bearer(ada)).status_code == 200
    assert client.get(url, headers=bearer(bob)).status_code == 404
    assert client.get(url + "/context", headers=bearer(bob)).status_code == 404
    step = {"step_id": "phase-1-step-1"}
    assert client.post(url + "/steps", json=step, headers=bearer(bob)).status_code == 404
    assert client.get(url, headers=bearer(ada)).json["session"]["version"] == 1
    assert (
        client.get(f"/v1/orgs/{studio.slug}/learners/ada", headers=bearer(bob)).status_code == 404
    )
    assert (
        client.get(f"/v1/orgs/{studio.slug}/learners/ada/sessions", headers=bearer(bob)).status_code
        == 404
    )
    # A learner token starts only as its own learner.
    other = start(client, studio.slug, bob, external_user_id="ada")
    assert other.status_code == 422
    assert "external_user_id" in other.json["errors"]
    # And it is no key: no minting, no jobs, no fresh session tokens.
    assert (
        client.post(f"/v1/orgs/{studio.slug}/learners/bob/tokens", json={}, headers=bearer(bob))
    ).status_code == 403
    assert client.post(url + "/tokens", headers=bearer(ada)).status_code == 403


def test_another_orgs_learner_and_session_are_404(client, create_org, publish_flow, studio):
    other = create_org("other-studio")
    publish_flow(other.org, SMALL_FLOW)
    token = mint(client, studio)
    session_id = start(client, studio.slug, token).json["session"]["id"]
    for path, method in [
        ("/learners/user-4711", "GET"),
        ("/learners/user-4711/sessions", "GET"),
        ("/learners/user-4711/tokens", "DELETE"),
        (f"/sessions/{session_id}/tokens", "POST"),
    ]:
        # The other org's secret key, in its own org: no such learner or session there.
        response = client.open(
            f"/v1/orgs/other-studio{path}", method=method, headers=bearer(other.sk)
        )
        assert response.status_code == 404, path
        # This learner's token in the other org's URLs: that org is not its own.
        response = client.open(f"/v1/orgs/other-studio{path}", method=method, headers=bearer(token))
        assert response.status_code == 404, path
    assert (
        client.get(
            f"/v1/orgs/other-studio/sessions/{session_id}", headers=bearer(token)
        ).status_code
        == 404
    )
    assert start(client, "other-studio", token).status_code == 404
    assert (
        client.get(
            "/v1/orgs/learner-studio/learners/user-4711", headers=bearer(other.sk)
        ).status_code
        == 404
    )


def test_revoked_and_expired_learner_tokens_are_401(client, studio):
    learner_url = f"/v1/orgs/{studio.slug}/learners/user-4711"
    first, second = mint(client, studio), mint(client, studio)
    assert client.get(learner_url, headers=bearer(first)).status_code == 200
    revoked = client.delete(learner_url + "/tokens", headers=bearer(studio.sk))
    assert revoked.status_code == 204
    for token in (first, second):
        response = client.get(learner_url, headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert start(client, studio.slug, token, resume=True).status_code == 401
    # A token minted after the revocation works.
    fresh = mint(client, studio, ttl_seconds=60)
    assert client.get(learner_url, headers=bearer(fresh)).status_code == 200
    begin_write(db.session)
    db.session.execute(
        sa.update(LearnerToken)
        .where(LearnerToken.token_hash == hash_secret(fresh))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    assert client.get(learner_url, headers=bearer(fresh)).status_code == 401
    # Tokens are stored only as digests.
    stored = db.session.scalars(sa.select(LearnerToken.token_hash)).all()
    assert fresh not in stored and hash_secret(fresh) in stored


def test_token_lifetime_is_bounded_and_defaulted(client, studio):
    url = f"/v1/orgs/{studio.slug}/learners/user-4711/tokens"
    before = utcnow()
    default = client.post(url, json={}, headers=bearer(studio.sk))
    assert default.status_code == 201
    expires = datetime.fromisoformat(default.json["expires_at"])
    assert before + timedelta(days=7) <= expires <= utcnow() + timedelta(days=7)
    too_long = client.post(url, json={"ttl_seconds": 31 * 86400}, headers=bearer(studio.sk))
    assert too_long.status_code == 422 and "ttl_seconds" in too_long.json["errors"]
    too_short = client.post(url, json={"ttl_seconds": 5}, headers=bearer(studio.sk))
    assert too_short.status_code == 422 and "ttl_seconds" in too_short.json["errors"]
    long_id = client.post(
        f"/v1/orgs/{studio.slug}/learners/{'x' * 201}/tokens", json={}, headers=bearer(studio.sk)
    )
    assert long_id.status_code == 422 and "ext" in long_id.json["errors"]
    nul = client.post(
        f"/v1/orgs/{studio.slug}/learners/a%00b/tokens", json={}, headers=bearer(studio.sk)
    )
    assert nul.status_code == 422 and "ext" in nul.json["errors"]
    assert (
        client.get(f"/v1/orgs/{studio.slug}/learners/a%00b", headers=bearer(studio.sk)).status_code
        == 404
    )


def test_the_learner_and_their_sessions_are_listed_with_filters_and_pages(client, studio):
    token = mint(client, studio)
    ids = [start(client, studio.slug, token).json["session"]["id"] for _ in range(5)]
    demo = start(client, studio.slug, token, flow="rafael-tats").json["session"]["id"]
    base = f"/v1/orgs/{studio.slug}/learners/user-4711"
    # Finish the first session, so that it is the most recently updated.
    steps = f"/v1/orgs/{studio.slug}/sessions/{ids[0]}/steps"
    for step_id, answer in [
        ("phase-1-step-1", None),
        ("phase-1-step-2", "pro"),
        ("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"}),
    ]:
        assert (
            client.post(
                steps, json={"step_id": step_id, "answer": answer}, headers=bearer(token)
            ).status_code
            == 200
        )

    learner = client.get(base, headers=bearer(studio.sk))
    assert learner.status_code == 200
    assert learner.json["external_user_id"] == "user-4711"
    assert learner.json["sessions"] == {"active": 5, "completed": 1, "abandoned": 0}
    assert learner.json["first_seen_at"] <= learner.json["last_active_at"]

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(base + "/sessions", query_string=query, headers=bearer(token))
        assert page.status_code == 200
        assert len(page.json["items"]) <= 2
        seen += [item["id"] for item in page.json["items"]]
        pages += 1
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted([*ids, demo]) and len(seen) == 6
    assert seen[-1] == ids[0]  # least recently updated first: the finished one last

    def listed(**query):
        response = client.get(base + "/sessions", query_string=query, headers=bearer(studio.sk))
        assert response.status_code == 200, response.get_data(as_text=True)
        return [item["id"] for item in response.json["items"]]

    assert listed(flow="rafael-tats") == [demo]
    assert listed(status="completed") == [ids[0]]
    assert sorted(listed(flow="onboarding", status="active")) == sorted(ids[1:])
    finished_at = client.get(
        f"/v1/orgs/{studio.slug}/sessions/{ids[0]}", headers=bearer(token)
    ).json["session"]["updated_at"]
    assert listed(updated_since=finished_at) == [ids[0]]
    assert listed(flow="no-such-flow") == []

    for bad in (
        {"limit": 101},
        {"limit": 0},
        {"cursor": "not-a-cursor"},
        {"status": "x"},
        {"updated_since": "yesterday"},
    ):
        response = client.get(base + "/sessions", query_string=bad, headers=bearer(token))
        assert response.status_code == 422, bad
        assert response.mimetype == "application/problem+json"
        (field,) = bad
        assert any(field in name for name in response.json["errors"]), response.json
    assert (
        client.get(f"/v1/orgs/{studio.slug}/learners/nobody", headers=bearer(studio.sk)).status_code
        == 404
    )


def test_a_fresh_session_token_works_and_the_old_one_stops(client, studio):
    started = start(client, studio.slug, studio.pk, name="Ada")
    old, session_id = started.json["token"], started.json["session"]["id"]
    url = f"/v1/orgs/{studio.slug}/sessions/{session_id}"
    fresh = client.post(url + "/tokens", headers=bearer(studio.sk))
    assert fresh.status_code == 201
    new = fresh.json["token"]
    assert new.startswith("st_") and new != old
    assert client.get(url, headers=bearer(new)).status_code == 200
    assert (
        client.post(
            url + "/steps", json={"step_id": "phase-1-step-1"}, headers=bearer(new)
        ).status_code
        == 200
    )
    assert client.get(url, headers=bearer(old)).status_code == 401
    assert client.post(url + "/tokens", headers=bearer(studio.pk)).status_code == 403
    missing = f"/v1/orgs/{studio.slug}/sessions/{'0' * 32}/tokens"
    assert client.post(missing, headers=bearer(studio.sk)).status_code == 404


def test_learner_token_starts_keep_idempotency_keys_of_their_own(client, studio):
    token = mint(client, studio)
    first = client.post(
        f"/v1/orgs/{studio.slug}/flows/onboarding/sessions",
        json={},
        headers=bearer(token, Idempotency_Key="tap-1"),
    )
    assert first.status_code == 201
    # A second device of the same learner retrying the same start gets the same session.
    other_device = mint(client, studio)
    retry = client.post(
        f"/v1/orgs/{studio.slug}/flows/onboarding/sessions",
        json={},
        headers=bearer(other_device, Idempotency_Key="tap-1"),
    )
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json["session"]["id"] == first.json["session"]["id"]
    # Another learner's same key is theirs alone.
    stranger = client.post(
        f"/v1/orgs/{studio.slug}/flows/onboarding/sessions",
        json={},
        headers=bearer(mint(client, studio, "bob"), Idempotency_Key="tap-1"),
    )
    assert stranger.status_code == 201 and "Idempotent-Replayed" not in stranger.headers
    assert stranger.json["session"]["id"] != first.json["session"]["id"]


def test_the_console_learner_page_shows_sessions_across_flows_and_a_timeline(
    ctx, client, studio, create_org
):
    token = mint(client, studio)
    intake = start(client, studio.slug, token).json["session"]["id"]
    steps = f"/v1/orgs/{studio.slug}/sessions/{intake}/steps"
    for step_id, answer in [("phase-1-step-1", None), ("phase-1-step-2", "new")]:
        assert (
            client.post(
                steps, json={"step_id": step_id, "answer": answer}, headers=bearer(token)
            ).status_code
            == 200
        )
    pricing = start(client, studio.slug, token, flow="rafael-tats").json["session"]["id"]
    anonymous = start(client, studio.slug, studio.pk, external_user_id="user-4711")
    mentor = Console(ctx.test_client())
    assert mentor.login(add_staff(studio.org, "mentor@example.com", Role.MENTOR)).status_code == 302

    # Every session page names its learner and links to them (or says it has none).
    session_page = mentor.get(f"/admin/sessions/{intake}").get_data(as_text=True)
    link = re.search(r'href="(/admin/learners/\d+)"', session_page)
    assert link is not None
    other = mentor.get(f"/admin/sessions/{anonymous.json['session']['id']}").get_data(as_text=True)
    assert re.search(r'href="/admin/learners/\d+"', other) is None
    assert "not tied to that user" in other

    page = mentor.get(link.group(1))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "user-4711" in html
    sessions_table = html[html.index('id="learner-sessions"') : html.index('id="learner-timeline"')]
    assert intake in sessions_table and pricing in sessions_table
    assert anonymous.json["session"]["id"] not in sessions_table
    timeline = html[html.index('id="learner-timeline"') :]
    assert timeline.count(f'data-session="{intake}"') == 2
    assert "Under a year" in timeline
    assert "user-4711" in mentor.get("/admin/learners/").get_data(as_text=True)

    # Another org's staff get a 404 for this learner.
    other_org = create_org("other-console")
    stranger = Console(ctx.test_client())
    stranger.login(add_staff(other_org.org, "stranger@example.com", Role.OWNER))
    assert stranger.get(link.group(1)).status_code == 404
