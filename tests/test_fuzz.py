"""Fuzz the learner API from its own OpenAPI document: no request may get a 5xx, and every
response fits the document (its status, media type, body and headers).

Schemathesis generates requests (valid and invalid bodies) for every operation the document
lists, with the path pinned to a real org, flow, session and job and the credential each
route takes, so the requests get past authentication and reach the views.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mentorflow.delivery import webhooks
from mentorflow.flows.export import create_export
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
#: Examples per operation: enough to hit each body field with odd values, within seconds.
MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class IsolatedWsgi:
    """The app as WSGI, each request in a fresh context (not the test's app context)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        return contextvars.Context().run(self.app.wsgi_app, environ, start_response)


@pytest.fixture
def api(ctx: Flask, create_org, publish_flow, learner) -> dict[str, Any]:
    """A real org with a published flow, a started session and an export job."""
    assert not ctx.config["RATE_LIMIT"], "the rate limit must be off for fuzzing"
    ctx.config["PROPAGATE_EXCEPTIONS"] = False  # a crash is a 500 to check, not a raise
    keys = create_org("fuzz")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    begin_write(db.session)
    job = create_export(keys.org, "onboarding", by="fuzz")
    endpoint, _ = webhooks.create_endpoint(keys.org.id, ctx.config, url="https://hooks.example.com")
    db.session.commit()
    yield {
        "keys": keys,
        "session_id": walker.session_id,
        "token": walker.token,
        "job": job.id,
        "webhook": endpoint.id,
    }
    ctx.config["PROPAGATE_EXCEPTIONS"] = None


@pytest.fixture
def api_schema(ctx: Flask, api: dict[str, Any]) -> Any:
    """The app's own OpenAPI document, loaded by schemathesis."""
    return schemathesis.openapi.from_wsgi("/v1/openapi.json", IsolatedWsgi(ctx))


def credential(path: str, api: dict[str, Any]) -> str:
    """Return the credential a route takes: the session's token, a secret or publishable key."""
    if "/sessions/{session_id}" in path:
        return api["token"]
    if "/jobs/" in path or "/learners/" in path or "/webhooks" in path:
        return api["keys"].sk
    return api["keys"].pk


def current_step(client: Any, api: dict[str, Any]) -> str | None:
    """Return the pinned session's current step id (None once completed)."""
    response = client.get(
        f"/v1/orgs/{api['keys'].slug}/sessions/{api['session_id']}",
        headers={"Authorization": f"Bearer {api['keys'].sk}"},
    )
    return response.json["session"]["current_step_id"]


def fuzz(operation: Any, mode: GenerationMode, client: Any, api: dict[str, Any]) -> None:
    """Send ``MAX_EXAMPLES`` generated requests to ``operation``; fail on any 5xx or any
    response the document does not describe."""
    pinned = {
        "org": api["keys"].slug,
        "flow": "onboarding",
        "session_id": api["session_id"],
        "job_id": api["job"],
        "webhook_id": api["webhook"],
    }
    path_parameters = {k: v for k, v in pinned.items() if f"{{{k}}}" in operation.path}
    headers = {"Authorization": f"Bearer {credential(operation.path, api)}"}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(mode, path_parameters=path_parameters),
        on_current_step=st.booleans(),
    )
    def no_server_error(case: Any, on_current_step: bool) -> None:
        # A random step id is a 409 before the answer is looked at: aim half the answers
        # at the step the session is on, so they reach the flow engine.
        if on_current_step and isinstance(case.body, dict) and "step_id" in case.body:
            case.body["step_id"] = current_step(client, api) or "done"
        case.call_and_validate(headers=headers, checks=CHECKS)

    no_server_error()


# schemathesis' own pytest runner (schema.parametrize) does not run on pytest 9.2 (it sets
# node._nodeid, which pytest no longer has), so each operation's strategy runs under given.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_request_gets_a_server_error(ctx, api_schema, api, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {operation.label for operation in operations} >= {
        "GET /v1/orgs/{org}/flows/{flow}",
        "POST /v1/orgs/{org}/flows/{flow}/sessions",
        "GET /v1/orgs/{org}/sessions/{session_id}",
        "POST /v1/orgs/{org}/sessions/{session_id}/steps",
        "POST /v1/orgs/{org}/sessions/{session_id}/back",
        "GET /v1/orgs/{org}/sessions/{session_id}/context",
        "GET /v1/orgs/{org}/jobs/{job_id}",
        "GET /v1/orgs/{org}/jobs/{job_id}/download",
    }
    client = ctx.test_client()
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.body or operation.query):
            continue  # only the pinned path: nothing left to make invalid
        fuzz(operation, mode, client, api)
