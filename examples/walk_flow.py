"""Walk a published flow with a Python client generated from the API's OpenAPI document.

Generate the client once (openapi-python-client is a dev dependency), then walk:

    openapi-python-client generate --url http://127.0.0.1:5000/v1/openapi.json \\
        --config clients/python/config.yaml --output-path build/mentorflow-client
    PYTHONPATH=build/mentorflow-client python examples/walk_flow.py \\
        http://127.0.0.1:5000 demo rafael-tats pk_…

It starts a session with the publishable key, answers every step with the first answer the
step's type accepts (printing each prompt) and prints the completed session. Each answer is
sent with an Idempotency-Key and the If-Match of the version it answers, so a retry after a
lost response is safe; a 409 (another tab moved the session on) carries the session and step
to continue from. No type here is written by hand: all come from the generated package.
"""

from __future__ import annotations

import sys
import uuid

from mentorflow_client import AuthenticatedClient
from mentorflow_client.api.learner import get_published_flow, start_session, submit_step
from mentorflow_client.models import (
    ContactAnswer,
    SessionConflict,
    SessionCreated,
    SessionState,
    StartSession,
    StepSubmission,
)

#: What the walk answers to each step type that takes an answer.
TEXT = "Still figuring that out."
CONTACT = {"name": "Ada", "email": "ada@example.com", "phone": "+1 555 010 0199"}


def example_answer(step):
    """Return an answer that fits ``step`` (a member of the generated ``Step`` union)."""
    kind = step.type_  # `type` is a Python builtin, so the generator names the field type_
    if kind in ("info", "video"):
        return None
    if kind == "single_choice":
        return step.options[0].value
    if kind == "multi_choice":
        return [option.value for option in step.options[: max(1, step.min_selected)]]
    if kind in ("text", "long_text"):
        return TEXT
    if kind in ("number", "scale"):
        # `min` is a builtin too: min_. Unset or null when the flow sets no lower bound.
        return step.min_ if isinstance(step.min_, int | float) else 1
    if kind == "boolean":
        return True
    if kind == "email":
        return CONTACT["email"]
    if kind == "phone":
        return CONTACT["phone"]
    return ContactAnswer(**{field: CONTACT[field] for field in step.fields})


def start(base_url: str, org: str, flow: str, key: str) -> SessionCreated:
    """Start a session on the flow's published version; return it with its token."""
    with AuthenticatedClient(base_url=base_url, token=key) as publishable:
        published = get_published_flow.sync(org=org, flow=flow, client=publishable)
        print(f"{published.title} (version {published.version})")
        created = start_session.sync_detailed(
            org=org,
            flow=flow,
            client=publishable,
            body=StartSession(name="Ada"),
            idempotency_key=str(uuid.uuid4()),
        )
    if not isinstance(created.parsed, SessionCreated):
        raise SystemExit(f"could not start a session: {created.status_code} {created.parsed}")
    return created.parsed


def answer(client: AuthenticatedClient, org: str, state: SessionState) -> SessionState:
    """Answer the current step of ``state``; return where the session stands next."""
    step = state.step
    response = submit_step.sync_detailed(
        org=org,
        session_id=state.session.id,
        client=client,
        body=StepSubmission(step_id=step.id, answer=example_answer(step)),
        idempotency_key=str(uuid.uuid4()),
        if_match=f'"{state.session.version}"',
    )
    if isinstance(response.parsed, SessionState):
        return response.parsed
    if isinstance(response.parsed, SessionConflict):
        # Another tab moved the session on: continue from where it really is.
        return SessionState(session=response.parsed.session, step=response.parsed.step)
    raise SystemExit(f"step {step.id}: {response.status_code} {response.parsed}")


def walk(base_url: str, org: str, flow: str, key: str) -> SessionState:
    """Walk ``flow`` from a new session to its end; return the completed state."""
    created = start(base_url, org, flow, key)
    state = SessionState(session=created.session, step=created.step)
    with AuthenticatedClient(base_url=base_url, token=created.token) as learner:
        while state.step is not None:
            print(f"  {state.step.id}: {state.step.prompt or state.step.type_}")
            state = answer(learner, org, state)
    progress = state.session.progress
    print(f"{state.session.status}: {progress.completed} of {progress.total} steps")
    return state


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit("usage: walk_flow.py BASE_URL ORG FLOW PUBLISHABLE_KEY")
    walk(*sys.argv[1:])
