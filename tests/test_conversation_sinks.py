"""Messages and answers reaching the sinks: memory documents per message, and analytics that
carry no learner text unless the org opts in (``analytics_answers``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from console_client import Console, add_staff
from mentorflow.delivery.sinks import OutboundEvent, build_sink, close_clients
from mentorflow.delivery.sinks.memory import memory_document
from mentorflow.delivery.sinks.posthog import posthog_capture
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants.analytics import analytics_answers, set_analytics_answers
from mentorflow.worker import tasks

MENTORFLOW = shutil.which("mentorflow") or str(Path(sys.executable).parent / "mentorflow")
SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
SESSION_ID = "5f1c0c7e9a2b4d6f8e0a1b2c3d4e5f60"
AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_clients():
    yield
    close_clients()


def message_event(**payload: Any) -> OutboundEvent:
    base = {
        "org": "acme",
        "session_id": SESSION_ID,
        "flow": "onboarding",
        "flow_version": 1,
        "status": "active",
        "distinct_id": "user-1",
        "memory_container": f"mentorflow-acme-{SESSION_ID}",
        "occurred_at": AT.isoformat(),
        "message_id": "0c3b7e1a-5d2f-4f6a-9b8e-2a1c4d7e9f30",
        "seq": 3,
        "step_id": "phase-1-step-2",
        "role": "assistant",
        "content": "What would you charge for a full day?",
        "metadata": {"model": "m-2"},
        **payload,
    }
    return OutboundEvent(uuid.uuid4(), "acme", "message.created", base, AT)


def test_a_message_is_one_memory_document_with_a_stable_id():
    event = message_event()
    document = memory_document(event)
    assert document["namespace"] == f"mentorflow-acme-{SESSION_ID}"
    assert document["id"] == f"{SESSION_ID}-message-3"
    assert document["content"] == "Mentor: What would you charge for a full day?"
    assert document["metadata"]["role"] == "assistant"
    assert document["metadata"]["kind"] == "message"
    # A redelivery (another event id, same message) writes the same document.
    assert memory_document(message_event()) == document


def test_analytics_carry_no_message_content_by_default():
    properties = posthog_capture(message_event())["properties"]
    assert "content" not in properties and "metadata" not in properties
    assert properties["role"] == "assistant" and properties["step_id"] == "phase-1-step-2"
    assert properties["content_length"] == len("What would you charge for a full day?")
    opted_in = posthog_capture(message_event(), send_answers=True)["properties"]
    assert opted_in["content"] == "What would you charge for a full day?"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, False),
        ({"analytics_answers": True}, True),
        ({"analytics_answers": False, "integrations": {"posthog": {"send_answers": True}}}, False),
        ({"integrations": {"posthog": {"send_answers": True}}}, True),
    ],
)
def test_the_org_opt_in_decides(settings, expected):
    assert analytics_answers(settings) is expected


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_posthog_gets_no_answers_or_content_unless_the_org_opts_in(
    ctx, client, create_org, publish_flow, learner
):
    """Through the API, the outbox and the delivery task to the dry-run PostHog file."""
    keys = create_org("analytics")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    messages = f"/v1/orgs/{keys.slug}/sessions/{walker.session_id}/messages"
    headers = {"Authorization": f"Bearer {walker.token}"}
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "new")
    client.post(messages, json={"role": "user", "content": "secret plans"}, headers=headers)
    tasks.deliver_due_deliveries.run()
    path = Path(ctx.config["INSTANCE_PATH"]) / "outbox-posthog.jsonl"
    sent = [line["request"] for line in read_lines(path) if line["org"] == keys.slug]
    answered = [r for r in sent if r["event"] == "step.completed"]
    [message] = [r for r in sent if r["event"] == "message.created"]
    assert len(answered) == 2
    assert all("answer" not in r["properties"] and "key" not in r["properties"] for r in answered)
    assert {r["properties"]["step_type"] for r in answered} == {"info", "single_choice"}
    assert "content" not in message["properties"] and "secret plans" not in json.dumps(sent)

    begin_write(db.session)
    set_analytics_answers(keys.org, True)
    db.session.commit()
    walker.answer("phase-2-step-1", 450)
    client.post(messages, json={"role": "user", "content": "now shared"}, headers=headers)
    tasks.deliver_due_deliveries.run()
    sent = [line["request"] for line in read_lines(path) if line["org"] == keys.slug]
    assert [r["properties"]["answer"] for r in sent if "answer" in r["properties"]] == [450]
    assert [r["properties"].get("content") for r in sent if r["event"] == "message.created"] == [
        None,
        "now shared",
    ]


def test_the_opt_in_reaches_a_built_posthog_sink(tmp_path):
    config = {"SECRET_KEY": "x", "INSTANCE_PATH": str(tmp_path), "SINK_TIMEOUT": 2}
    for settings, shown in (({}, False), ({"analytics_answers": True}, True)):
        sink = build_sink("posthog", settings, config)
        sink.deliver(message_event())
        sink.close()
        [line] = read_lines(tmp_path / "outbox-posthog.jsonl")[-1:]
        assert ("content" in line["request"]["properties"]) is shown


def test_the_cli_turns_analytics_answers_on_and_off(tmp_path):
    env = {**os.environ, "MENTORFLOW_INSTANCE_PATH": str(tmp_path / "instance")}
    env.pop("MENTORFLOW_DATABASE_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [MENTORFLOW, *args], capture_output=True, text=True, env=env, timeout=120
        )

    assert run("db", "upgrade").returncode == 0
    assert run("org", "create", "acme", "--name", "Acme").returncode == 0
    shown = run("org", "set", "acme")
    assert "analytics answers off" in shown.stdout
    on = run("org", "set", "acme", "--analytics-answers", "on")
    assert on.returncode == 0 and "analytics answers on" in on.stdout
    off = run("org", "set", "acme", "--analytics-answers", "off")
    assert "analytics answers off" in off.stdout
    bad = run("org", "set", "acme", "--analytics-answers", "maybe")
    assert bad.returncode != 0 and "'on'" in bad.stderr
    assert "--analytics-answers" in run("org", "set", "--help").stdout


def test_the_console_settings_page_turns_analytics_answers_on_and_off(ctx, create_org):
    keys = create_org(name="Studio A")
    email = add_staff(keys.org, "admin@studio.example", "admin")
    add_staff(keys.org, "viewer@studio.example", "viewer")
    console = Console(ctx.test_client())
    assert console.login(email).status_code == 302
    page = console.get("/admin/settings/general").get_data(as_text=True)
    assert 'id="analytics-answers-state">off<' in page
    saved = console.post("/admin/settings/general/analytics", {"analytics_answers": "y"})
    assert saved.status_code == 302
    db.session.rollback()
    db.session.refresh(keys.org)
    assert keys.org.settings["analytics_answers"] is True
    page = console.get("/admin/settings/general").get_data(as_text=True)
    assert 'id="analytics-answers-state">on<' in page
    console.post("/admin/settings/general/analytics", {})
    db.session.rollback()
    db.session.refresh(keys.org)
    assert keys.org.settings["analytics_answers"] is False
    viewer = Console(ctx.test_client())
    viewer.login("viewer@studio.example")
    refused = viewer.post("/admin/settings/general/analytics", {"analytics_answers": "y"})
    assert refused.status_code == 403
