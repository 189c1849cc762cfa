"""The OpenAPI document describes every /v1 operation completely, and real responses fit it.

Every test client made by ``support.make_app`` also checks each /v1 response it sees against
the document (``openapi_check``); the tests here pin the document itself, the check, and a
walk that produces each status the API answers with, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Response
from openapi_spec_validator import validate

from mentorflow.flows.document import OPERATORS, STEP_TYPES
from mentorflow.flows.export import create_export
from mentorflow.platform.db import begin_write
from mentorflow.platform.errors import PROBLEM_TYPES
from mentorflow.platform.extensions import db
from openapi_check import OpenApiDocument, ResponseMismatch, check_response

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
OPERATION_IDS = {
    ("get", "/v1/orgs/{org}/flows/{flow}"): "getPublishedFlow",
    ("post", "/v1/orgs/{org}/flows/{flow}/sessions"): "startSession",
    ("get", "/v1/orgs/{org}/sessions/{session_id}"): "getSession",
    ("post", "/v1/orgs/{org}/sessions/{session_id}/steps"): "submitStep",
    ("post", "/v1/orgs/{org}/sessions/{session_id}/back"): "goBack",
    ("get", "/v1/orgs/{org}/sessions/{session_id}/context"): "getSessionContext",
    ("get", "/v1/orgs/{org}/jobs/{job_id}"): "getJob",
    ("get", "/v1/orgs/{org}/jobs/{job_id}/download"): "downloadJobFile",
}
SCHEMES = {"publishableKey": "pk", "secretKey": "sk", "sessionToken": "st", "learnerToken": "lt"}
#: Problems any operation can answer with: no or a bad key, the wrong kind of key, another
#: org's or an unknown object, unstorable text in the query, the rate limit.
EVERY_OPERATION = {"401", "403", "404", "422", "429"}
#: And those of an operation that reads a body: bad JSON, too large, not JSON.
WITH_BODY = {"400", "413", "415"}


@pytest.fixture
def document(client) -> dict[str, Any]:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method, path, operation


def walk(node: Any, where: str = ""):
    """Yield (JSON pointer, node) for every mapping in ``node``."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            name = str(key).replace("~", "~0").replace("/", "~1")
            yield from walk(value, f"{where}/{name}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def test_the_document_is_a_valid_openapi_3_1_document(document):
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert document["info"]["description"]
    assert document["info"]["license"]["identifier"] == "MIT"
    assert document["servers"]


def test_every_reference_resolves_and_every_schema_is_used(document):
    checked = OpenApiDocument(document)
    refs = {node["$ref"] for _, node in walk(document) if isinstance(node.get("$ref"), str)}
    refs |= {
        target
        for _, node in walk(document)
        for target in node.get("discriminator", {}).get("mapping", {}).values()
    }
    for ref in refs:
        assert checked.resolve({"$ref": ref}), ref
    used = {ref.rsplit("/", 1)[-1] for ref in refs if ref.startswith("#/components/schemas/")}
    assert set(document["components"]["schemas"]) == used  # no PaginationMetadata and such
    assert "Error" not in document["components"]["schemas"]


def test_every_v1_route_is_an_operation_with_security_an_id_and_its_problems(app, document):
    routes = set()
    for rule in app.url_map.iter_rules():
        # The document itself (api-docs) and the page that renders it (apidocs) are not API.
        if not rule.rule.startswith("/v1/") or rule.endpoint.startswith(("api-docs", "apidocs.")):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {(method.lower(), path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(method, path) for method, path, _ in operations(document)}
    assert routes == documented
    assert set(OPERATION_IDS) <= routes
    schemes = document["components"]["securitySchemes"]
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    for method, path, operation in operations(document):
        label = f"{method.upper()} {path}"
        expected_id = OPERATION_IDS.get((method, path))
        if expected_id:
            assert operation["operationId"] == expected_id
        else:  # a later endpoint, named in the same style
            assert re.fullmatch(r"[a-z]+[A-Z][A-Za-z]+", operation["operationId"]), label
        assert operation["security"], label
        for requirement in operation["security"]:
            (name,) = requirement
            assert schemes[name]["scheme"] == "bearer"
            assert f"`{SCHEMES[name]}_…`" in schemes[name]["description"]
        statuses = set(operation["responses"])
        expected = EVERY_OPERATION | (WITH_BODY if "requestBody" in operation else set())
        assert expected <= statuses, f"{label} lacks {expected - statuses}"
        for status, response in operation["responses"].items():
            response = OpenApiDocument(document).resolve(response)
            if int(status) >= 400:
                assert set(response["content"]) == {"application/problem+json"}, label


def test_each_operation_documents_its_headers(document):
    ops = {(method, path): operation for method, path, operation in operations(document)}
    state_ops = [key for key in ops if key[1].startswith("/v1/orgs/{org}/sessions/")]

    def parameters(key):
        return {p["$ref"].rsplit("/", 1)[-1] for p in ops[key].get("parameters", [])}

    def headers(key, status):
        return set(ops[key]["responses"][status].get("headers", {}))

    start = ("post", "/v1/orgs/{org}/flows/{flow}/sessions")
    steps = ("post", "/v1/orgs/{org}/sessions/{session_id}/steps")
    back = ("post", "/v1/orgs/{org}/sessions/{session_id}/back")
    flow = ("get", "/v1/orgs/{org}/flows/{flow}")
    session = ("get", "/v1/orgs/{org}/sessions/{session_id}")
    assert parameters(start) == {"IdempotencyKey"}
    assert parameters(steps) == parameters(back) == {"IdempotencyKey", "IfMatch"}
    assert parameters(flow) == parameters(session) == {"IfNoneMatch"}
    assert {"ETag", "Location", "Idempotent-Replayed"} <= headers(start, "201")
    assert {"ETag", "Idempotent-Replayed"} <= headers(steps, "200") & headers(back, "200")
    assert "ETag" in headers(flow, "304") & headers(session, "304")
    for key in state_ops:
        if key[0] == "get" and not key[1].endswith(
            ("/context", "/events", "/messages")
        ):  # not a state
            assert "ETag" in headers(key, "200")
    for key, operation in ops.items():
        for status, response in operation["responses"].items():
            if "$ref" not in response:
                assert {"RateLimit", "RateLimit-Policy", "X-Request-Id"} <= headers(key, status)
    components = document["components"]["responses"]
    assert {"WWW-Authenticate", "RateLimit", "X-Request-Id"} <= set(
        components["UNAUTHORIZED"]["headers"]
    )
    assert "Retry-After" in components["TOO_MANY_REQUESTS"]["headers"]


def test_every_request_response_and_problem_has_an_example_that_fits(document):
    checked = OpenApiDocument(document)
    media_types = [
        (where, node)
        for where, node in walk(document)
        if re.search(r"/content/[^/]+$", where) and "schema" in node
    ]
    assert len(media_types) > 25
    for where, media in media_types:
        examples = [media["example"]] if "example" in media else []
        examples += [example["value"] for example in media.get("examples", {}).values()]
        assert examples, f"no example at {where}"
        if where.split("/content/")[1].endswith("json") and "jsonl" not in where:
            for example in examples:
                assert checked.errors(f"{where}/schema", example) == [], where
    for where, node in walk(document["components"]):
        if where.startswith(("/headers/", "/parameters/")) and "schema" in node:
            assert "example" in node, where


def test_problem_types_and_the_problem_body_are_documented(document):
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert problem["properties"]["status"]["type"] == "integer"
    for urn in PROBLEM_TYPES.values():
        assert urn in problem["properties"]["type"]["description"]
    conflict = document["components"]["schemas"]["SessionConflict"]
    assert {"type", "title", "status", "detail", "session", "step"} <= set(conflict["required"])


def test_fields_that_are_always_present_are_required(document):
    schemas = document["components"]["schemas"]
    for name in ("Session", "SessionState", "SessionCreated", "SessionContext", "Progress"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name
    for name in ("PublishedFlow", "Job", "Contact"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name
    assert "token" in schemas["SessionCreated"]["required"]
    job_urls = schemas["Job"]["properties"]["download_url"]
    assert job_urls["type"] == ["string", "null"]


def test_steps_are_a_union_by_type_with_their_constraints_and_answers(document):
    schemas = document["components"]["schemas"]
    for union, suffix in (("Step", "Step"), ("FlowStep", "FlowStep")):
        mapping = schemas[union]["discriminator"]["mapping"]
        assert schemas[union]["discriminator"]["propertyName"] == "type"
        assert set(mapping) == set(STEP_TYPES)
        assert len(schemas[union]["oneOf"]) == len(STEP_TYPES)
        for step_type, ref in mapping.items():
            member = schemas[ref.rsplit("/", 1)[-1]]
            assert member["properties"]["type"]["enum"] == [step_type]
            assert {"id", "type", "required"} <= set(member["required"])
            assert ("phase_id" in member["required"]) is (suffix == "Step")
            assert member["description"]
    assert {"options", "min_selected", "max_selected"} <= set(
        schemas["MultiChoiceStep"]["required"]
    )
    assert schemas["ScaleStep"]["properties"]["min"]["type"] == "integer"
    assert set(schemas["Condition"]["properties"]) == {"key", *OPERATORS}
    answers = schemas["Answer"]["anyOf"]
    titles = {answer.get("title") or answer["$ref"].rsplit("/", 1)[-1] for answer in answers}
    assert titles == {
        "ChoiceAnswer",
        "MultiChoiceAnswer",
        "TextAnswer",
        "NumberAnswer",
        "ScaleAnswer",
        "BooleanAnswer",
        "EmailAnswer",
        "PhoneAnswer",
        "ContactAnswer",
    }
    assert schemas["PublishedFlow"]["properties"]["definition"] == {
        "$ref": "#/components/schemas/FlowDefinition"
    }


def test_the_response_check_refuses_what_the_document_does_not_describe(document):
    checked = OpenApiDocument(document)
    steps = "/v1/orgs/demo/sessions/3f0e6c2d8b417f1c2a9e5b1d4c1e9a57/steps"

    def check(status, body, mimetype="application/json", path=steps, **headers):
        response = Response(body, status=status, mimetype=mimetype, headers=headers)
        check_response(checked, "POST", path, response)

    # flask-smorest's own error body, which the document used to describe
    old_error = '{"code": 409, "status": "Conflict", "message": "stale"}'
    with pytest.raises(ResponseMismatch, match="media type"):
        check(409, old_error)
    with pytest.raises(ResponseMismatch, match="'type' is a required property"):
        check(409, old_error, mimetype="application/problem+json")
    with pytest.raises(ResponseMismatch, match="status not documented"):
        check(418, '{"type": "about:blank"}', mimetype="application/problem+json")
    with pytest.raises(ResponseMismatch, match="WWW-Authenticate is missing"):
        problem = '{"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "x"}'
        check(401, problem, mimetype="application/problem+json")
    with pytest.raises(ResponseMismatch, match="session"):
        check(200, '{"session": {"id": "x"}, "step": null}', ETag='"1"')


def test_responses_of_every_status_fit_the_document(client, create_org, publish_flow, learner):
    """A walk through each status the API answers with; the client checks each response."""
    keys = create_org(f"spec-{uuid.uuid4().hex[:6]}")
    publish_flow(keys.org, SMALL_FLOW)
    base = f"/v1/orgs/{keys.slug}"
    seen: set[int] = set()

    def call(method, path, key, **kwargs):
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        response = client.open(base + path, method=method, headers=headers, **kwargs)
        seen.add(response.status_code)
        return response

    flow = call("GET", "/flows/onboarding", keys.pk)
    assert flow.status_code == 200
    assert (
        call(
            "GET", "/flows/onboarding", keys.pk, headers={"If-None-Match": flow.headers["ETag"]}
        ).status_code
        == 304
    )
    assert call("GET", "/flows/onboarding", "nope").status_code == 401
    assert call("GET", "/flows/missing", keys.pk).status_code == 404
    walker = learner(keys)
    started = walker.start("onboarding", name="Ada")
    seen.add(started.status_code)
    session = f"/sessions/{walker.session_id}"
    token = walker.token
    assert call("GET", session, keys.pk).status_code == 403
    assert call("GET", session, token, headers={"If-None-Match": '"1"'}).status_code == 304
    assert call("GET", session + "/context", token).status_code == 200
    steps = session + "/steps"
    assert call("POST", steps, token, data="{", content_type="application/json").status_code == 400
    big = "x" * (2 * 1024 * 1024)
    assert call("POST", steps, token, json={"step_id": big}).status_code == 413
    answer = {"step_id": "phase-1-step-1", "answer": None}
    assert call("POST", steps, token, json=answer, headers={"If-Match": '"7"'}).status_code == 412
    key = {"Idempotency-Key": uuid.uuid4().hex}
    assert call("POST", steps, token, json=answer, headers=key).status_code == 200
    replay = call("POST", steps, token, json=answer, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert call("POST", steps, token, json={**answer, "answer": 1}, headers=key).status_code == 422
    assert call("POST", steps, token, json=answer).status_code == 409
    choice = {"step_id": "phase-1-step-2", "answer": "junior"}
    assert call("POST", steps, token, json=choice).status_code == 422
    assert (
        call("POST", session + "/back", token, json={"step_id": "phase-2-step-2"}).status_code
        == 409
    )
    assert (
        call("POST", session + "/back", token, json={"step_id": "phase-1-step-1"}).status_code
        == 200
    )
    for step_id, value in [
        ("phase-1-step-1", None),
        ("phase-1-step-2", "pro"),
        ("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"}),
    ]:
        assert (
            call("POST", steps, token, json={"step_id": step_id, "answer": value}).status_code
            == 200
        )
    done = call("GET", session, token)
    assert done.json["step"] is None
    assert call("POST", steps, token, json=answer).status_code == 409  # session-closed
    begin_write(db.session)
    job = create_export(keys.org, "onboarding", by="tests")
    db.session.commit()
    assert call("GET", f"/jobs/{job.id}", keys.sk).status_code == 200
    assert call("GET", f"/jobs/{job.id}/download", keys.sk).status_code == 409
    assert call("GET", f"/jobs/{job.id}/download?format=xls", keys.sk).status_code == 422
    assert call("GET", f"/jobs/{job.id}", keys.pk).status_code == 403
    assert seen >= {200, 201, 304, 400, 401, 403, 404, 409, 412, 413, 422}


def test_each_operation_takes_exactly_the_credentials_its_security_names(
    client, document, create_org, publish_flow, learner
):
    keys = create_org(f"spec-{uuid.uuid4().hex[:6]}")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    begin_write(db.session)
    job = create_export(keys.org, "onboarding", by="tests")
    db.session.commit()
    pinned = {
        "org": keys.slug,
        "flow": "onboarding",
        "session_id": walker.session_id,
        "job_id": str(job.id),
        "ext": "user-4711",
        "webhook_id": "4711",
        "event_id": str(uuid.uuid4()),
    }
    minted = client.post(
        f"/v1/orgs/{keys.slug}/learners/user-4711/tokens",
        json={},
        headers={"Authorization": f"Bearer {keys.sk}"},
    )
    credentials = {
        "publishableKey": keys.pk,
        "secretKey": keys.sk,
        "sessionToken": walker.token,
        "learnerToken": minted.json["token"],
    }
    for method, path, operation in operations(document):
        url = re.sub(r"\{(\w+)\}", lambda m: pinned[m.group(1)], path)
        allowed = {name for requirement in operation["security"] for name in requirement}
        body, media_type = None, "application/json"
        if "requestBody" in operation:  # the document's own example: valid, so not a 422
            # application/json, or the one type the operation takes (merge-patch+json)
            content = operation["requestBody"]["content"]
            media_type = (
                "application/json" if "application/json" in content else next(iter(content))
            )
            media = content[media_type]
            body = media.get("example") or next(iter(media["examples"].values()))["value"]
        for scheme, credential in credentials.items():
            response = client.open(
                url,
                method=method.upper(),
                headers={"Authorization": f"Bearer {credential}"},
                data=None if body is None else json.dumps(body),
                content_type=media_type if body is not None else None,
            )
            label = f"{method.upper()} {path} with {scheme}"
            if scheme in allowed:
                assert response.status_code not in (401, 403), label
            else:
                assert response.status_code == 403, label
            # The calls that replace a credential: keep walking with the new one.
            if response.status_code == 201 and operation["operationId"] == "mintSessionToken":
                credentials["sessionToken"] = response.json["token"]
            if response.status_code == 204 and operation["operationId"] == "revokeLearnerTokens":
                credentials["learnerToken"] = client.post(
                    f"/v1/orgs/{keys.slug}/learners/user-4711/tokens",
                    json={},
                    headers={"Authorization": f"Bearer {keys.sk}"},
                ).json["token"]


def test_the_api_guide_covers_every_operation_step_type_and_problem(document):
    guide = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    for _, _, operation in operations(document):
        assert f"`{operation['operationId']}`" in guide
    for step_type in STEP_TYPES:
        assert f"| `{step_type}` |" in guide
    for urn in PROBLEM_TYPES.values():
        assert f"`{urn}`" in guide
