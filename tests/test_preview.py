"""Try the draft: a preview session on the draft, never counted, never sent, gone after a day."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from console_client import Console, add_staff
from mentorflow.flows import authoring
from mentorflow.flows.analytics import flow_funnel, sessions_per_flow
from mentorflow.flows.export import create_export
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession, StepEvent
from mentorflow.jobs import runner as jobs
from mentorflow.jobs.models import Job
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, OutboxEvent
from mentorflow.tenants.models import Org
from mentorflow.worker import tasks
from mentorflow.worker.celery_setup import beat_schedule
from support import Learner

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
WALK = [
    ("phase-1-step-1", None),
    ("phase-1-step-2", "new"),
    ("phase-2-step-1", 450),
    ("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"}),
]


def the_flow() -> Flow:
    db.session.rollback()
    return db.session.scalar(sa.select(Flow).where(Flow.slug == "onboarding"))


def change_draft(prompt: str) -> None:
    flow = the_flow()
    definition = {**flow.draft}
    definition["phases"] = [dict(phase) for phase in definition["phases"]]
    definition["phases"][1]["steps"] = [dict(s) for s in definition["phases"][1]["steps"]]
    definition["phases"][1]["steps"][0]["prompt"] = prompt
    begin_write(db.session)
    authoring.save_draft(db.session.get(Org, flow.org_id), definition)
    db.session.commit()


def try_the_draft(mentor: Console, studio) -> Learner:
    """Press "Try the draft"; return a learner holding the preview's id and token."""
    flow = the_flow()
    response = mentor.post(f"/admin/flows/{flow.id}/try", form_page=f"/admin/flows/{flow.id}")
    assert response.status_code == 302
    page = mentor.get(response.headers["Location"])
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Preview of the draft." in html
    walker = Learner(mentor.client, studio.slug, "")
    walker.session_id = re.search(r'data-preview-session="([0-9a-f]{32})"', html).group(1)
    walker.token = re.search(r'data-preview-token="(st_[^"]+)"', html).group(1)
    return walker


def counts() -> tuple[int, int, int]:
    db.session.rollback()
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)),
        db.session.scalar(sa.select(sa.func.count()).select_from(Delivery)),
        db.session.scalar(sa.select(sa.func.count()).select_from(LearnerSession)),
    )


def test_a_preview_walks_the_draft_through_the_learner_api_and_emits_nothing(
    mentor, studio, learner
):
    real = learner(studio)
    assert real.start("onboarding").status_code == 201
    change_draft("Your day rate, in the draft?")
    outbox_before, deliveries_before, _ = counts()
    flow = the_flow()
    funnel_before = flow_funnel(studio.org.id, flow, None, None, None)

    walker = try_the_draft(mentor, studio)
    for step_id, answer in WALK:
        state = walker.get().json
        assert state["session"]["current_step_id"] == step_id
        if step_id == "phase-2-step-1":
            assert state["step"]["prompt"] == "Your day rate, in the draft?"  # the draft's
        response = walker.answer(step_id, answer)
        assert response.status_code == 200, response.json
    assert response.json["session"]["status"] == "completed"
    # A note written in the preview is kept for the preview, and sent nowhere either.
    note = mentor.client.post(
        f"/v1/orgs/{studio.slug}/sessions/{walker.session_id}/messages",
        json={"role": "user", "content": "Trying the draft's wording"},
        headers={"Authorization": f"Bearer {walker.token}"},
    )
    assert note.status_code == 201, note.json

    outbox_after, deliveries_after, _ = counts()
    assert (outbox_after, deliveries_after) == (outbox_before, deliveries_before)
    assert not db.session.scalar(
        sa.select(sa.func.count())
        .select_from(OutboxEvent)
        .where(OutboxEvent.session_id == walker.session_id)
    )
    preview = db.session.get(LearnerSession, walker.session_id)
    assert preview.preview and preview.flow_version.preview
    assert preview.flow_version.number < 0
    # Its history is kept for the engine (step events), but no count sees the session.
    assert db.session.scalar(
        sa.select(sa.func.count())
        .select_from(StepEvent)
        .where(StepEvent.session_id == walker.session_id)
    ) == len(WALK)
    flow = the_flow()
    funnel = flow_funnel(studio.org.id, flow, None, None, None)
    assert funnel.started == funnel_before.started == 1
    assert [s.reached for s in funnel.steps] == [s.reached for s in funnel_before.steps]
    assert sessions_per_flow(studio.org.id) == {flow.id: 1}
    # The feed (outbox events) has only the real learner's start (on PostgreSQL, once every
    # older transaction of the cluster has ended: other tests may hold one for a moment).
    db.session.rollback()
    for _ in range(50):
        feed = mentor.client.get(
            f"/v1/orgs/{studio.slug}/events", headers={"Authorization": f"Bearer {studio.sk}"}
        )
        if feed.json["events"]:
            break
        time.sleep(0.1)
    assert [event["session_id"] for event in feed.json["events"]] == [real.session_id]
    # The console's session list and the versions stay the learners'.
    assert walker.session_id not in mentor.get("/admin/sessions/").get_data(as_text=True)
    assert [v.number for v in authoring.flow_versions(flow)] == [1]


def test_exports_leave_previews_out(mentor, studio, learner):
    real = learner(studio)
    real.start("onboarding")
    try_the_draft(mentor, studio)
    begin_write(db.session)
    job = create_export(studio.org, "onboarding", by="tests")
    db.session.commit()
    job_id = job.id
    jobs.run_job(job_id)
    db.session.rollback()
    job = db.session.get(Job, job_id)
    assert job.result["rows"] == 1
    assert real.session_id in jobs.job_file(job).read_text()


def test_publishing_after_a_preview_numbers_versions_as_before(mentor, studio):
    change_draft("Changed for version 2")
    try_the_draft(mentor, studio)
    flow = the_flow()
    begin_write(db.session)
    version, created = authoring.publish_version(flow, by="tests")
    db.session.commit()
    assert created and version.number == 2 and not version.preview
    assert [v.number for v in authoring.flow_versions(the_flow())] == [2, 1]


def test_previews_are_deleted_after_a_day(mentor, studio):
    old = try_the_draft(mentor, studio)
    db.session.rollback()
    begin_write(db.session)
    db.session.execute(
        sa.update(LearnerSession)
        .where(LearnerSession.id == old.session_id)
        .values(created_at=utcnow() - timedelta(days=1, minutes=1))
    )
    db.session.execute(
        sa.update(FlowVersion)
        .where(FlowVersion.preview.is_(True))
        .values(published_at=utcnow() - timedelta(days=1, minutes=1))
    )
    db.session.commit()
    change_draft("A newer draft")
    fresh = try_the_draft(mentor, studio)

    assert tasks.delete_expired_previews.run() == 1
    db.session.rollback()
    assert db.session.get(LearnerSession, old.session_id) is None
    assert db.session.get(LearnerSession, fresh.session_id) is not None
    previews = db.session.scalars(
        sa.select(FlowVersion.number).where(FlowVersion.preview.is_(True))
    ).all()
    assert previews == [-2]  # the old snapshot went with its session
    assert old.get().status_code in (401, 404)
    assert "delete-expired-previews" in beat_schedule(15)


def test_a_preview_is_for_the_console_only(client, studio, create_org):
    flow = the_flow()
    other = create_org("other", name="Other")
    add_staff(other.org, "owner@other.example", "owner")
    console = Console(client)
    console.login("owner@other.example")
    assert console.post(f"/admin/flows/{flow.id}/try").status_code == 404
    assert client.post(f"/admin/flows/{flow.id}/try").status_code in (302, 400, 401)
