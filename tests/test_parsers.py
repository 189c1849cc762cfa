"""Hostile input to the parsers: each answer is a 400, 404 or 422 (the console: a form error)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from console_client import Console, add_staff
from mentorflow.cli.jobs import export
from mentorflow.flows import authoring
from mentorflow.flows.document import DocumentError, load_document
from mentorflow.flows.models import Flow
from mentorflow.jobs.models import Job
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
DEEP_JSON = "[" * 100_000 + "]" * 100_000
LONG_NUMBER = "9" * 5000
PAST_64_BITS = 228845267391386627463131955200
PAST_INT4 = 2**31  # ids are INTEGER columns: PostgreSQL refuses to bind this one


@pytest.fixture
def ctx(ctx: Flask) -> Iterator[Flask]:
    """Answer an unhandled error with a 500, as in production, instead of raising it."""
    ctx.config["PROPAGATE_EXCEPTIONS"] = False
    yield ctx
    ctx.config["PROPAGATE_EXCEPTIONS"] = None


@pytest.fixture
def walker(ctx, create_org, publish_flow, learner):
    keys = create_org("hostile")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")  # now at the number step
    return walker


def post_json(walker, path: str, text: str):
    return walker.client.post(
        f"/v1/orgs/{walker.org}{path}",
        data=text,
        content_type="application/json",
        headers={"Authorization": f"Bearer {walker.token}"},
    )


def assert_problem(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    for word in words:
        assert word in response.json["detail"], response.json


@pytest.mark.parametrize(
    "body",
    [
        DEEP_JSON,
        "[" * 100_000,
        '{"step_id": "phase-2-step-1", "answer": ' + DEEP_JSON + "}",
        # A \u escape makes the edge's text check parse the body first.
        '{"step_id": "phase-2-step-1\\u0020", "answer": ' + DEEP_JSON + "}",
        '{"step_id": "phase-2-step-1", "answer": ' + "[" * 65 + "]" * 65 + "}",
    ],
    ids=["deep", "unclosed", "deep-answer", "deep-answer-escaped", "past-limit"],
)
def test_deeply_nested_json_is_a_400(walker, body):
    response = post_json(walker, f"/sessions/{walker.session_id}/steps", body)
    assert_problem(response, 400, "not valid JSON", "nest more than 64 levels")
    assert walker.get().json["session"]["version"] == 3


def test_nesting_within_the_limit_still_reaches_the_step(walker):
    body = '{"step_id": "phase-2-step-1", "answer": ' + "[" * 60 + "]" * 60 + "}"
    response = post_json(walker, f"/sessions/{walker.session_id}/steps", body)
    assert_problem(response, 422)
    assert response.json["errors"] == {"answer": ["must be a number"]}


def test_a_5000_digit_number_is_a_400(walker):
    response = post_json(
        walker,
        f"/sessions/{walker.session_id}/steps",
        '{"step_id": "phase-2-step-1", "answer": ' + LONG_NUMBER + "}",
    )
    assert_problem(response, 400, "a number has more than 100 digits")
    started = walker.client.post(
        f"/v1/orgs/{walker.org}/flows/onboarding/sessions",
        data='{"name": -' + LONG_NUMBER + "}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {walker.key}"},
    )
    assert_problem(started, 400, "more than 100 digits")
    assert walker.get().json["session"]["version"] == 3


def test_a_number_answer_still_works(walker):
    response = walker.answer("phase-2-step-1", 250)
    assert response.status_code == 200 and response.json["session"]["answers"]["day-rate"] == 250


@pytest.mark.parametrize("job_id", [PAST_64_BITS, PAST_INT4, 2**63 - 1])
def test_a_job_id_past_the_column_is_a_404(ctx, create_org, job_id):
    keys = create_org("jobs")
    for path in (f"/v1/orgs/jobs/jobs/{job_id}", f"/v1/orgs/jobs/jobs/{job_id}/download"):
        response = ctx.test_client().get(path, headers={"Authorization": f"Bearer {keys.sk}"})
        assert_problem(response, 404, f"No job '{job_id}'")


@pytest.fixture
def staff(ctx, create_org, publish_flow):
    keys = create_org("console-hostile")
    publish_flow(keys.org, SMALL_FLOW)
    console = Console(ctx.test_client())
    console.login(add_staff(keys.org, "owner@hostile.example", Role.OWNER))
    flow = authoring.find_flow(keys.org.id, "onboarding")
    db.session.rollback()
    return console, flow.id


@pytest.mark.parametrize(
    "url",
    [
        "/admin/sessions/?flow=99999999999999999999",
        "/admin/analytics/?flow=99999999999999999999",
        f"/admin/analytics/?flow={PAST_INT4}",
        "/admin/sessions/?flow={flow}&version=99999999999999999999",
        "/admin/analytics/?flow={flow}&version=99999999999999999999",
        "/admin/flows/99999999999999999999",
        f"/admin/flows/{PAST_INT4}/versions",
        "/admin/jobs/99999999999999999999",
        "/admin/flows/{flow}/export?version=99999999999999999999",
        "/admin/flows/{flow}/export?version=7",
    ],
)
def test_console_ids_past_the_column_are_404s(staff, url):
    console, flow_id = staff
    assert console.get(url.format(flow=flow_id)).status_code == 404


@pytest.mark.parametrize(
    "query",
    ["since=9999-12-31", "until=9999-12-31", "since=0001-01-01&until=9999-12-31"],
)
@pytest.mark.parametrize("page", ["sessions", "analytics"])
def test_console_dates_out_of_range_fall_back_with_a_warning(staff, page, query):
    console, _ = staff
    response = console.get(f"/admin/{page}/?{query}", follow_redirects=True)
    assert response.status_code == 200
    assert "Dates are YYYY-MM-DD from 1970 to 9998" in response.get_data(as_text=True)


@pytest.mark.parametrize("revision", ["abc", "", "9" * 5000])
def test_a_bad_draft_revision_is_a_form_error(staff, revision):
    console, flow_id = staff
    document = SMALL_FLOW.read_text().replace("Studio onboarding", "Changed")
    response = console.post(
        f"/admin/flows/{flow_id}", {"document": document, "draft_revision": revision}
    )
    assert response.status_code == 200
    assert "the page sent no revision number; reload it" in response.get_data(as_text=True)
    db.session.rollback()
    assert db.session.get(Flow, flow_id).title == "Studio onboarding"


HOSTILE_DOCUMENTS = {
    "deep-flow": "[" * 100_000,
    "deep-yaml-value": "slug: x\ntitle: " + "[" * 100_000,
    "deep-block-list": "slug: x\nphases:\n" + "- " * 20_000 + "x",
    "deep-json": '{"slug": "x", "phases": ' + DEEP_JSON + "}",
    "long-yaml-number": "slug: x\ntitle: " + LONG_NUMBER,
    "long-json-number": '{"slug": "x", "title": ' + LONG_NUMBER + "}",
    "impossible-date": "slug: x\ntitle: 2024-13-45",
}


@pytest.mark.parametrize("name", HOSTILE_DOCUMENTS)
def test_hostile_flow_documents_are_document_errors(name):
    with pytest.raises(DocumentError) as raised:
        load_document(HOSTILE_DOCUMENTS[name])
    assert "invalid" in str(raised.value.errors[0])


@pytest.mark.parametrize("name", ["deep-flow", "deep-block-list", "long-yaml-number"])
def test_hostile_flow_documents_are_console_form_errors(staff, name):
    console, flow_id = staff
    text = HOSTILE_DOCUMENTS[name]
    for response in (
        console.post("/admin/flows/new", {"document": text}, form_page="/admin/flows/new"),
        console.post(f"/admin/flows/{flow_id}", {"document": text, "draft_revision": "1"}),
        console.post(
            "/admin/flows/import",
            {"document": (io.BytesIO(text.encode()), "flow.yaml")},
            content_type="multipart/form-data",
        ),
    ):
        assert response.status_code == 200
        assert "The document is not valid" in response.get_data(as_text=True)


@pytest.mark.parametrize("timeout", ["1" + "0" * 400, "0", "86401"])
def test_the_cli_refuses_a_wait_past_a_day(ctx, create_org, publish_flow, timeout):
    keys = create_org("cli-wait")
    publish_flow(keys.org, SMALL_FLOW)
    result = ctx.test_cli_runner().invoke(export, ["cli-wait", "onboarding", "--timeout", timeout])
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output and "1<=x<=86400" in result.output
    db.session.rollback()
    assert db.session.scalars(sa.select(Job)).all() == []
