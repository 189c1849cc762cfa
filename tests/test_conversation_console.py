"""The conversation in the console's session page, and in the export's JSON-lines file."""

from __future__ import annotations

import html
import json
import re
import uuid
from pathlib import Path

from console_client import Console, add_staff
from mentorflow.flows.export import create_export
from mentorflow.jobs import runner as jobs
from mentorflow.jobs.models import Job
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


def talk(client, walker, content: str, **body) -> dict:
    response = client.post(
        f"/v1/orgs/{walker.org}/sessions/{walker.session_id}/messages",
        json={"role": "user", "content": content, **body},
        headers={"Authorization": f"Bearer {walker.token}"},
    )
    assert response.status_code == 201, response.json
    return response.json["message"]


def walk_and_talk(client, create_org, publish_flow, learner):
    keys = create_org()
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    talk(client, walker, "Is this the welcome?")
    walker.answer("phase-1-step-1")
    talk(client, walker, "I am <new> here", role="user")
    talk(client, walker, "Welcome aboard!", role="assistant")
    walker.answer("phase-1-step-2", "new")
    talk(client, walker, "A general note", step_id=None, role="system")
    return keys, walker


def test_the_session_page_shows_the_conversation_beside_each_step(
    ctx, client, create_org, publish_flow, learner
):
    keys, walker = walk_and_talk(client, create_org, publish_flow, learner)
    email = add_staff(keys.org, f"mentor-{uuid.uuid4().hex[:6]}@example.com", Role.MENTOR)
    console = Console(ctx.test_client())
    assert console.login(email).status_code == 302
    page = console.get(f"/admin/sessions/{walker.session_id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    first = text.split('id="conversation-phase-1-step-1"')[1].split("</td>")[0]
    second = text.split('id="conversation-phase-1-step-2"')[1].split("</td>")[0]
    assert "Is this the welcome?" in first and "Welcome aboard!" not in first
    assert "I am &lt;new&gt; here" in second and "Welcome aboard!" in second
    assert "<new>" not in text  # escaped, never markup
    # The note with no step went on the current step (phase-2-step-1).
    third = text.split('id="conversation-phase-2-step-1"')[1].split("</td>")[0]
    assert "A general note" in third
    rows = text.split('id="timeline"')[1].split("</table>")[0]
    timeline = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", rows).split()))
    order = [
        timeline.index(marker)
        for marker in (
            "Is this the welcome?",
            "answered phase-1-step-1",
            "I am <new> here",
            "Welcome aboard!",
            "answered phase-1-step-2",
            "A general note",
        )
    ]
    assert order == sorted(order)
    assert "4 messages in the conversation." in text


def test_the_export_writes_each_sessions_messages_beside_the_csv(
    ctx, client, create_org, publish_flow, learner
):
    keys, walker = walk_and_talk(client, create_org, publish_flow, learner)
    quiet = learner(keys)
    quiet.start("onboarding")
    begin_write(db.session)
    job = create_export(keys.org, "onboarding", by="tests")
    db.session.commit()
    job_id = job.id
    jobs.run_job(job_id)
    db.session.rollback()
    job = db.session.get(Job, job_id)
    assert job.result["messages"] == 4
    lines = [json.loads(line) for line in jobs.job_file(job, ".jsonl").read_text().splitlines()]
    by_session = {line["session_id"]: line["messages"] for line in lines}
    assert by_session[quiet.session_id] == []
    talk_lines = by_session[walker.session_id]
    assert [(m["seq"], m["role"], m["content"]) for m in talk_lines] == [
        (1, "user", "Is this the welcome?"),
        (2, "user", "I am <new> here"),
        (3, "assistant", "Welcome aboard!"),
        (4, "system", "A general note"),
    ]
    assert talk_lines[1]["step_id"] == "phase-1-step-2"
    assert jobs.job_file(job).read_text().count("\n") == 3  # the CSV: header and two sessions
