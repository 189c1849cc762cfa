"""The demo installation: an org, a staff owner, keys and the tattoo-pricing flow."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext

from mentorflow.admin.player import DEMO_FILE, DEMO_ORG
from mentorflow.flows import authoring, learner_sessions
from mentorflow.flows.document import load_document, takes_answer
from mentorflow.flows.engine import CompiledFlow
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.files import open_private
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import ApiKey, KeyKind, Org, Role

DEMO_FLOW = Path(__file__).resolve().parent.parent / "flows" / "demo" / "demo-flow.yaml"
DEMO_EMAIL = "mentor@demo.example"


@dataclass
class Demo:
    org: str
    flow: str
    staff_email: str
    staff_password: str
    publishable_key: str
    secret_key: str


def seed_demo() -> Demo:
    """Create what is missing of the demo and return its credentials."""
    # Keys are stored hashed, so the demo keeps its plain secrets in the instance folder to be
    # able to print them again on the next run.
    secrets_file = Path(current_app.instance_path) / DEMO_FILE
    saved = json.loads(secrets_file.read_text()) if secrets_file.is_file() else {}
    begin_write(db.session)
    org = db.session.scalars(sa.select(Org).where(Org.slug == DEMO_ORG)).first()
    if org is None:
        org = tenant_services.create_org(DEMO_ORG, "Demo Tattoo Studio")
    keys = {kind: _live_key(org, kind, saved.get(kind.value)) for kind in KeyKind}
    password = saved.get("staff_password") or secrets.token_urlsafe(12)
    tenant_services.create_staff(DEMO_EMAIL, password, org, Role.OWNER)
    definition = load_document(DEMO_FLOW.read_bytes())
    flow, _ = authoring.save_draft(org, definition)
    version, _ = authoring.publish_version(flow, notes="demo", by=DEMO_EMAIL)
    _seed_sessions(org, flow, version)
    db.session.commit()
    saved = {"staff_password": password, **{kind.value: secret for kind, secret in keys.items()}}
    with open_private(secrets_file) as out:
        out.write(json.dumps(saved, indent=2))
    return Demo(
        org=org.slug,
        flow=flow.slug,
        staff_email=DEMO_EMAIL,
        staff_password=password,
        publishable_key=keys[KeyKind.PUBLISHABLE],
        secret_key=keys[KeyKind.SECRET],
    )


#: Demo learners: (name, answer overrides, how many steps they have answered; None = all).
DEMO_LEARNERS = [
    ("Ada", {}, None),
    ("Bea", {"booking-status": "booked-3-months"}, None),
    ("Cy", {"booking-status": "open-books"}, 7),
    ("Dee", {}, 3),
    ("Eli", {}, 0),
]


def _seed_sessions(org: Org, flow: Any, version: Any) -> None:
    """Walk a few demo learners to different depths, once, so the console has something."""
    if db.session.scalar(
        sa.select(sa.func.count())
        .select_from(LearnerSession)
        .where(LearnerSession.flow_id == flow.id)
    ):
        return
    for name, overrides, depth in DEMO_LEARNERS:
        started, _ = learner_sessions.start_session(
            org, flow, version, name=name, email=f"{name.lower()}@demo.example"
        )
        session = learner_sessions.session_record(started)
        engine = session.flow_version.engine
        answered = 0
        while session.current_step_id and (depth is None or answered < depth):
            step = engine.step(session.current_step_id)
            answer = overrides.get(step.get("key"), example_answer(step))
            if step["type"] == "contact":
                answer = {
                    field: {
                        "name": name,
                        "email": f"{name.lower()}@demo.example",
                        "phone": "+1 555 010 0199",
                    }[field]
                    for field in step["fields"]
                }
            learner_sessions.commit_step(org, session, session.current_step_id, answer)
            answered += 1


def _live_key(org: Org, kind: KeyKind, saved: str | None) -> str:
    if saved:
        live = db.session.scalars(
            sa.select(ApiKey.id).where(
                ApiKey.key_hash == hash_secret(saved),
                ApiKey.org_id == org.id,
                ApiKey.revoked_at.is_(None),
            )
        ).first()
        if live is not None:
            return saved
    return tenant_services.create_api_key(org, kind)[1]


EXAMPLE_TEXT = {
    "goal": "Booked two months out at a day rate that pays for the quiet weeks.",
    "blocker": "I'm scared that raising my prices will empty my books.",
}


def example_answer(step: dict[str, Any]) -> Any:
    """Return a plausible answer for a step, for the walk-through."""
    kind = step["type"]
    if not takes_answer(kind):
        return None
    if kind == "single_choice":
        return step["options"][min(1, len(step["options"]) - 1)]["value"]
    if kind == "multi_choice":
        return [option["value"] for option in step["options"][: max(1, step["min_selected"])]]
    if kind in ("text", "long_text"):
        return EXAMPLE_TEXT.get(step["key"], "Honestly, still figuring that out.")
    if kind in ("number", "scale"):
        low = step.get("min") if step.get("min") is not None else 0
        high = step.get("max") if step.get("max") is not None else low + 400
        return int(low + (high - low) // 2) if kind == "scale" else 400
    if kind == "boolean":
        return False
    if kind == "email":
        return "ada@example.com"
    if kind == "phone":
        return "+1 555 010 0199"
    contact = {"name": "Ada", "email": "ada@example.com", "phone": "+1 555 010 0199"}
    return {field: contact[field] for field in step["fields"]}


WALKTHROUGH_HEADER = r"""API={api}
PK={pk}
field() {{ python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }}
curl -s -H "Authorization: Bearer $PK" $API/flows/{flow} | field '"version", d["version"]'
NEW=$(curl -s -X POST -H "Authorization: Bearer $PK" -H "Content-Type: application/json" \
      -d '{{"name": "Ada"}}' $API/flows/{flow}/sessions)
SID=$(echo "$NEW" | field 'd["session"]["id"]'); ST=$(echo "$NEW" | field 'd["token"]')
step() {{  # step STEP_ID ANSWER_JSON: answer the current step; print progress and the next step
  curl -s -X POST -H "Authorization: Bearer $ST" -H "Content-Type: application/json" \
       -H "Idempotency-Key: $SID-$1" -d "{{\"step_id\": \"$1\", \"answer\": $2}}" \
       $API/sessions/$SID/steps | field 'd["session"]["progress"]["percent"], (d["step"] or {{}}).get("id")'
}}"""

WALKTHROUGH_FOOTER = r"""# a refresh shows the server's state; the context is what a chat or AI caller reads
curl -s -H "Authorization: Bearer $ST" $API/sessions/$SID | field 'd["session"]["status"], d["session"]["progress"]'
curl -s -H "Authorization: Bearer $ST" $API/sessions/$SID/context | field 'd["completed_phases"]'"""


def walkthrough(demo: Demo, base_url: str) -> str:
    """Return a shell script that walks the demo flow to completion with curl."""
    flow = CompiledFlow(load_document(DEMO_FLOW.read_bytes()))
    header = WALKTHROUGH_HEADER.format(
        api=f"{base_url}/v1/orgs/{demo.org}", pk=demo.publishable_key, flow=demo.flow
    )
    lines = [header]
    answers: dict[str, Any] = {}
    step_id = flow.first_step_id
    while step_id is not None:
        step = flow.step(step_id)
        answer = example_answer(step)
        if takes_answer(step["type"]):
            answers[step["key"]] = answer
        quoted = json.dumps(answer).replace("'", "'\\''")
        lines.append(f"step {step_id} '{quoted}'")
        step_id = flow.next_step_id(step_id, answers)
    lines.append(WALKTHROUGH_FOOTER)
    return "\n".join(lines) + "\n"


def print_walkthrough(demo: Demo, base_url: str) -> None:
    """Print the demo's credentials and a curl walk-through of the learner API."""
    click.echo(f"""
mentorflow demo is ready
  console         {base_url}/admin/   ({demo.staff_email} / {demo.staff_password})
  player          {base_url}/play/{demo.org}/{demo.flow}
  API docs        {base_url}/v1/openapi.json
  publishable key {demo.publishable_key}
  secret key      {demo.secret_key}

Walk the demo flow to completion with curl (paste into a shell):
""")
    click.echo(walkthrough(demo, base_url))


@click.command("demo")
@click.option("--base-url", default="http://127.0.0.1:5000", show_default=True)
@with_appcontext
def demo(base_url: str) -> None:
    """Seed the demo org, staff owner, keys and flow (idempotent) and print them."""
    print_walkthrough(seed_demo(), base_url)
