"""Publishing over live sessions: a dry run, then a job that moves the sessions that can move."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from console_client import Console, add_staff
from mentorflow.flows import authoring
from mentorflow.flows.document import load_document
from mentorflow.flows.migration import create_migration, dry_run
from mentorflow.flows.models import EventKind, Flow, LearnerSession, StepEvent
from mentorflow.jobs import runner as jobs
from mentorflow.jobs.models import Job, JobStatus
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent
from mentorflow.tenants.models import Org

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


def version_2() -> dict:
    """v1 with a lower day-rate ceiling, a new info step and the contact step renamed."""
    document = yaml.safe_load(SMALL_FLOW.read_text())
    basics, details = document["phases"]
    basics["steps"][1]["next"][0]["goto"] = "phase-2-step-3"
    basics["steps"].append({"id": "phase-1-step-3", "type": "info", "prompt": "Good to know"})
    details["steps"][0]["max"] = 5000
    details["steps"][1]["id"] = "phase-2-step-3"
    return load_document(yaml.safe_dump(document))


def walk(learner, studio, name: str, *answers: tuple[str, object]):
    walker = learner(studio)
    assert walker.start("onboarding", name=name).status_code == 201
    for step_id, answer in answers:
        response = walker.answer(step_id, answer)
        assert response.status_code == 200, response.json
    return walker


@pytest.fixture
def sessions(studio, learner):
    """Four active sessions on v1 and a completed one."""
    return {
        "ada": walk(learner, studio, "Ada", ("phase-1-step-1", None)),
        "bo": walk(learner, studio, "Bo", ("phase-1-step-1", None), ("phase-1-step-2", "new")),
        "cy": walk(learner, studio, "Cy", ("phase-1-step-1", None), ("phase-1-step-2", "pro")),
        "di": walk(
            learner,
            studio,
            "Di",
            ("phase-1-step-1", None),
            ("phase-1-step-2", "new"),
            ("phase-2-step-1", 9000),
        ),
        "done": walk(
            learner,
            studio,
            "Done",
            ("phase-1-step-1", None),
            ("phase-1-step-2", "pro"),
            ("phase-2-step-2", {"name": "Done", "email": "done@example.com"}),
        ),
    }


def the_flow() -> Flow:
    db.session.rollback()
    return db.session.scalar(sa.select(Flow).where(Flow.slug == "onboarding"))


def publish_v2(studio) -> None:
    begin_write(db.session)
    flow, _ = authoring.save_draft(db.session.get(Org, studio.org.id), version_2())
    authoring.publish_version(flow, by="tests")
    db.session.commit()


def run_migration(studio) -> Job:
    flow = the_flow()
    begin_write(db.session)
    job = create_migration(
        db.session.get(Org, studio.org.id), flow, flow.published_version, by="tests"
    )
    db.session.commit()
    job_id = job.id
    jobs.run_job(job_id)
    db.session.rollback()
    return db.session.get(Job, job_id)


def test_the_dry_run_says_who_moves_where_and_who_stays_pinned(studio, sessions):
    publish_v2(studio)
    flow = the_flow()
    plan = {move.learner: move for move in dry_run(flow, flow.published_version)}
    assert set(plan) == {"Ada", "Bo", "Cy", "Di"}  # active sessions only
    assert plan["Ada"].to_step_id == "phase-1-step-2"  # its step is still there
    assert plan["Bo"].to_step_id == "phase-2-step-1"
    # Cy's step is gone from v2: the nearest earlier step of its path.
    assert (plan["Cy"].from_step_id, plan["Cy"].to_step_id) == ("phase-2-step-2", "phase-1-step-2")
    assert not plan["Di"].can_move
    assert "day-rate" in plan["Di"].reason and "5000" in plan["Di"].reason
    # A dry run changes nothing.
    db.session.rollback()
    assert {s.flow_version.number for s in db.session.scalars(sa.select(LearnerSession))} == {1}


def test_the_job_moves_each_movable_session_with_an_event_and_a_history_entry(
    studio, sessions, learner
):
    publish_v2(studio)
    outbox_before = db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent))

    job = run_migration(studio)

    assert job.status == JobStatus.COMPLETED, job.error
    assert job.progress == 100
    assert sorted(move["learner"] for move in job.result["moved"]) == ["Ada", "Bo", "Cy"]
    assert [move["learner"] for move in job.result["pinned"]] == ["Di"]
    for name, step_id in (("ada", "phase-1-step-2"), ("bo", "phase-2-step-1")):
        state = sessions[name].get().json["session"]
        assert (state["flow_version"], state["current_step_id"]) == (2, step_id)
    cy = sessions["cy"].get().json["session"]
    assert (cy["flow_version"], cy["current_step_id"]) == (2, "phase-1-step-2")
    assert cy["answers"] == {"level": "pro"}  # answers are kept
    di = sessions["di"].get().json["session"]
    assert (di["flow_version"], di["current_step_id"]) == (1, "phase-2-step-2")
    assert sessions["done"].get().json["session"]["flow_version"] == 1

    events = db.session.scalars(
        sa.select(OutboxEvent).where(OutboxEvent.type == "session.migrated")
    ).all()
    assert len(events) == 3
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)) == (
        outbox_before + 3
    )
    cy_event = next(e for e in events if e.session_id == sessions["cy"].session_id)
    assert cy_event.payload["from_version"] == 1 and cy_event.payload["flow_version"] == 2
    assert cy_event.payload["from_step_id"] == "phase-2-step-2"
    history = db.session.scalars(
        sa.select(StepEvent)
        .where(StepEvent.session_id == sessions["cy"].session_id)
        .order_by(StepEvent.seq)
    ).all()
    assert history[-1].kind == EventKind.MIGRATED
    assert (history[-1].from_step_id, history[-1].to_step_id) == (
        "phase-2-step-2",
        "phase-1-step-2",
    )
    # The session's history shows the move once every transaction older than it has ended
    # (on PostgreSQL the whole cluster's: other tests may hold one open for a moment).
    db.session.rollback()
    for _ in range(50):
        feed = sessions["cy"].client.get(
            f"/v1/orgs/{studio.slug}/sessions/{sessions['cy'].session_id}/events",
            headers={"Authorization": f"Bearer {studio.sk}"},
        )
        types = [event["type"] for event in feed.json["events"]]
        if "session.migrated" in types:
            break
        time.sleep(0.1)
    assert types[-1] == "session.migrated"

    # Moved sessions walk the new version: its rules, its limits.
    bo = sessions["bo"]
    assert bo.answer("phase-2-step-1", 9000).status_code == 422
    assert bo.answer("phase-2-step-1", 4000).json["session"]["current_step_id"] == "phase-2-step-3"
    cy_walker = sessions["cy"]
    after = cy_walker.answer("phase-1-step-2", "pro").json["session"]
    assert after["current_step_id"] == "phase-2-step-3"

    # The job API reports it like any job.
    status = bo.client.get(
        f"/v1/orgs/{studio.slug}/jobs/{job.id}", headers={"Authorization": f"Bearer {studio.sk}"}
    )
    assert status.status_code == 200
    assert status.json["kind"] == "migrate_sessions" and status.json["progress"] == 100
    assert len(status.json["result"]["moved"]) == 3

    # Running it again moves nobody twice.
    again = run_migration(studio)
    assert again.result["moved"] == [] and len(again.result["pinned"]) == 1


def test_the_console_publishes_then_offers_the_dry_run_and_starts_the_move(
    studio, sessions, mentor
):
    flow = the_flow()
    begin_write(db.session)
    authoring.save_draft(db.session.get(Org, studio.org.id), version_2())
    db.session.commit()
    published = mentor.post(f"/admin/flows/{flow.id}/publish", {"notes": "v2"})
    assert published.headers["Location"].endswith(f"/admin/flows/{flow.id}/migrate")
    page = mentor.get(f"/admin/flows/{flow.id}/migrate").get_data(as_text=True)
    assert "4 active sessions" in page and "4 on v1" in page
    checked = mentor.get(f"/admin/flows/{flow.id}/migrate?check=1").get_data(as_text=True)
    assert re.search(r'id="movable-count">3 can move', checked)
    assert re.search(r'id="pinned-count">1 stay pinned', checked)
    assert "does not fit the new version" in checked
    db.session.rollback()
    assert {s.flow_version.number for s in db.session.scalars(sa.select(LearnerSession))} == {1}

    started = mentor.post(
        f"/admin/flows/{flow.id}/migrate", {"version": "2"}, form_page=f"/admin/flows/{flow.id}"
    )
    job_id = int(re.search(r"job=(\d+)", started.headers["Location"]).group(1))
    jobs.run_job(job_id)
    report = mentor.get(started.headers["Location"]).get_data(as_text=True)
    assert "3 moved</strong>, 1 stayed pinned" in report
    assert report.count('data-outcome="moves"') == 3
    assert report.count('data-outcome="pinned"') == 1

    stale = mentor.post(f"/admin/flows/{flow.id}/migrate", {"version": "1"})
    assert stale.status_code == 302 and "job=" not in stale.headers["Location"]


def test_viewers_and_other_orgs_cannot_move_sessions(client, studio, sessions, create_org):
    publish_v2(studio)
    flow = the_flow()
    add_staff(studio.org, "viewer@studio.example", "viewer")
    viewer = Console(client)
    viewer.login("viewer@studio.example")
    assert viewer.get(f"/admin/flows/{flow.id}/migrate").status_code == 403
    assert viewer.post(f"/admin/flows/{flow.id}/migrate", {"version": "2"}).status_code == 403
    db.session.rollback()
    assert not db.session.scalar(sa.select(sa.func.count()).select_from(Job))


def test_flow_push_migrate_reports_then_moves_with_a_progress_bar(
    ctx, studio, sessions, tmp_path, monkeypatch
):
    from mentorflow.cli.flows import flow as flow_command
    from mentorflow.worker import tasks

    document = tmp_path / "v2.yaml"
    document.write_text(yaml.safe_dump(version_2(), sort_keys=False))
    runner = ctx.test_cli_runner()
    args = ["push", studio.slug, str(document), "--publish"]

    dry = runner.invoke(flow_command, [*args, "--migrate", "dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "published version 2" in dry.stdout
    assert "4 active sessions on older versions: 3 can move to version 2, 1 stay pinned" in (
        dry.stdout
    )
    assert re.search(r"pinned  \w+  Di  v1 phase-2-step-2: the answer to 'day-rate'", dry.stdout)
    assert re.search(r"moves   \w+  Cy  v1 phase-2-step-2 -> phase-1-step-2", dry.stdout)
    assert "(dry run: nothing moved" in dry.stdout
    db.session.rollback()
    assert {s.flow_version.number for s in db.session.scalars(sa.select(LearnerSession))} == {1}

    # No worker in this test: the job runs where it is queued.
    monkeypatch.setattr(tasks, "enqueue_job", jobs.run_job)
    applied = runner.invoke(flow_command, [*args, "--migrate", "apply", "--timeout", "30"])
    assert applied.exit_code == 0, applied.output
    assert "version 2 already has this content" in applied.stdout
    assert "moved 3 sessions to version 2; 1 stayed pinned" in applied.stdout
    assert applied.stderr.startswith("job ")  # the progress bar (its label, off a terminal)
    db.session.rollback()
    numbers = sorted(s.flow_version.number for s in db.session.scalars(sa.select(LearnerSession)))
    assert numbers == [1, 1, 2, 2, 2]  # Di and the completed session stay on v1

    refused = runner.invoke(
        flow_command, ["push", studio.slug, str(document), "--migrate", "apply"]
    )
    assert refused.exit_code != 0 and "add --publish" in refused.output


def test_the_session_page_and_the_jobs_page_name_the_move(studio, sessions, mentor):
    publish_v2(studio)
    job = run_migration(studio)
    page = mentor.get(f"/admin/sessions/{sessions['cy'].session_id}").get_data(as_text=True)
    assert "moved to a newer version of the flow" in page
    listing = mentor.get(f"/admin/jobs/{job.id}").get_data(as_text=True)
    assert "Moving sessions of onboarding to v2" in listing
