"""The console's learner pages: sessions, their timelines and deliveries, funnels, exports."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from console_client import Console, add_staff
from mentorflow.admin.learners import PAGE_SIZE
from mentorflow.flows.analytics import median_step_seconds
from mentorflow.flows.document import load_document
from mentorflow.flows.export import create_export
from mentorflow.flows.models import Flow, LearnerSession, StepEvent
from mentorflow.jobs import runner as jobs
from mentorflow.jobs.models import Job, JobStatus
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus, OutboxEvent
from mentorflow.tenants.models import Role
from mentorflow.worker import tasks

MINI_FLOW = """
slug: mini
title: Mini funnel
phases:
  - id: phase-1
    title: Start
    steps:
      - id: phase-1-step-1
        type: single_choice
        key: path
        prompt: Which way?
        options:
          - {value: long, label: The long way}
          - {value: short, label: The short way}
        next:
          - when: {key: path, equals: short}
            goto: phase-2-step-1
      - id: phase-1-step-2
        type: long_text
        key: why
        prompt: Why that way?
      - id: phase-1-step-3
        type: info
        prompt: Read this before the end
  - id: phase-2
    title: End
    steps:
      - id: phase-2-step-1
        type: boolean
        key: done
        prompt: All done?
"""
S1, S2, S3, S4 = "phase-1-step-1", "phase-1-step-2", "phase-1-step-3", "phase-2-step-1"
SESSION_LINK = re.compile(r'href="/admin/sessions/([0-9a-f]{32})"')
FUNNEL_ROW = re.compile(
    r'<tr data-step="([^"]+)" data-reached="(\d+)" data-completed="(\d+)"\s+'
    r'data-drop-off="([^"]*)"\s+data-median="([^"]*)"'
)


def mini_flow(prompt_suffix: str = "") -> dict[str, Any]:
    definition = load_document(MINI_FLOW)
    definition["phases"][0]["steps"][0]["prompt"] += prompt_suffix
    return definition


@pytest.fixture
def sign_in(ctx):
    """Sign a new staff member of ``org`` with ``role`` into a browser of their own."""

    def factory(org, role: Role) -> Console:
        email = add_staff(org, f"{role}-{uuid.uuid4().hex[:6]}@example.com", role)
        console = Console(ctx.test_client())
        assert console.login(email).status_code == 302
        return console

    return factory


@pytest.fixture
def walk(learner):
    """Start a session and make moves: (step_id, answer) or ("back", step_id)."""

    def factory(org, flow: str, *moves: tuple[str, Any], **contact: Any) -> str:
        walker = learner(org)
        assert walker.start(flow, **contact).status_code == 201
        for move in moves:
            response = walker.back(move[1]) if move[0] == "back" else walker.answer(*move)
            assert response.status_code == 200, response.json
        return walker.session_id

    return factory


def set_created(session_id: str, when) -> None:
    begin_write(db.session)
    db.session.execute(
        sa.update(LearnerSession).where(LearnerSession.id == session_id).values(created_at=when)
    )
    db.session.commit()


def set_event_times(session_id: str, *seconds_after_start: int) -> None:
    """Move a session's step events to the given offsets from its start, seq by seq."""
    begin_write(db.session)
    started = db.session.get(LearnerSession, session_id).created_at
    for seq, offset in enumerate(seconds_after_start, start=1):
        db.session.execute(
            sa.update(StepEvent)
            .where(StepEvent.session_id == session_id, StepEvent.seq == seq)
            .values(created_at=started + timedelta(seconds=offset))
        )
    db.session.commit()


def listed(console: Console, query: str = "") -> list[str]:
    page = console.get(f"/admin/sessions/{query}")
    assert page.status_code == 200, page.get_data(as_text=True)
    return SESSION_LINK.findall(page.get_data(as_text=True))


def funnel_rows(console: Console, query: str) -> dict[str, tuple[int, int, str, str]]:
    page = console.get(f"/admin/analytics/{query}")
    assert page.status_code == 200, page.get_data(as_text=True)
    return {
        step: (int(reached), int(completed), drop, median)
        for step, reached, completed, drop, median in FUNNEL_ROW.findall(
            page.get_data(as_text=True)
        )
    }


def latest() -> None:
    """End the test's read transaction: SQLite would keep showing its snapshot."""
    db.session.rollback()


def flow_id(org, slug: str) -> int:
    latest()
    return db.session.scalar(sa.select(Flow.id).where(Flow.org_id == org.id, Flow.slug == slug))


def test_sessions_list_filters_by_flow_version_status_dates_and_email(
    create_org, publish_flow, walk, sign_in
):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    publish_flow(studio.org)
    ada = walk(studio, "mini", email="ada@example.com")
    bob = walk(studio, "mini", (S1, "short"), (S4, True), email="Bob@Example.ORG")
    eve = walk(studio, "mini", email="eve@example.com")
    set_created(eve, utcnow() - timedelta(days=40))
    dave = walk(studio, "rafael-tats", email="dave@example.com")
    publish_flow(studio.org, mini_flow(" (v2)"))
    carol = walk(studio, "mini", email="carol%@example.com")
    mentor = sign_in(studio.org, Role.MENTOR)
    mini = flow_id(studio.org, "mini")
    today = utcnow().date()

    assert listed(mentor) == [carol, dave, bob, ada, eve]  # newest first
    assert set(listed(mentor, f"?flow={mini}")) == {ada, bob, eve, carol}
    assert set(listed(mentor, f"?flow={mini}&version=1")) == {ada, bob, eve}
    assert listed(mentor, f"?flow={mini}&version=2") == [carol]
    assert listed(mentor, "?status=completed") == [bob]
    assert set(listed(mentor, "?status=active")) == {ada, eve, dave, carol}
    assert listed(mentor, "?email=example.org") == [bob]  # case-insensitive
    assert listed(mentor, "?email=%25") == [carol]  # a literal %, not a wildcard
    assert eve not in listed(mentor, f"?since={today - timedelta(days=10)}")
    assert listed(mentor, f"?until={today - timedelta(days=30)}") == [eve]
    assert listed(mentor, f"?flow={mini}&status=active&since={today}&email=ADA") == [ada]
    assert listed(mentor, "?since=yesterday") == [carol, dave, bob, ada, eve]  # flashed, ignored
    assert mentor.get(f"/admin/sessions/?flow={mini}&version=9").status_code == 404


def test_sessions_list_shows_fifty_a_page_newest_first(create_org, publish_flow, walk, sign_in):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    start = utcnow() - timedelta(days=1)
    ids = []
    for minute in range(PAGE_SIZE + 5):
        session_id = walk(studio, "mini")
        set_created(session_id, start + timedelta(minutes=minute))
        ids.append(session_id)
    mentor = sign_in(studio.org, Role.MENTOR)

    first, second = listed(mentor), listed(mentor, "?page=2")

    assert first == ids[::-1][:PAGE_SIZE]
    assert second == ids[::-1][PAGE_SIZE:]
    page = mentor.get("/admin/sessions/").get_data(as_text=True)
    assert f"Sessions 1\N{EN DASH}{PAGE_SIZE} of {PAGE_SIZE + 5}" in page and "page=2" in page


def test_session_details_show_contact_answers_by_step_and_the_timeline(
    create_org, publish_flow, walk, sign_in
):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    session_id = walk(
        studio,
        "mini",
        (S1, "long"),
        (S2, "First <b>try</b>"),
        ("back", S2),
        (S2, "Because it is\nscenic"),
        (S3, None),
        name="Ada Lovelace",
        email="ada@example.com",
        phone="+44 20 7946 0000",
    )
    set_event_times(session_id, 30, 90, 100, 160, 165)
    mentor = sign_in(studio.org, Role.MENTOR)

    page = mentor.get(f"/admin/sessions/{session_id}")

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Ada Lovelace" in html and "ada@example.com" in html and "+44 20 7946 0000" in html
    assert "version 1</a>" in html
    answers = html[html.index('id="answers"') : html.index('id="timeline"')]
    # In flow order, with the prompt, the option's label and the latest answer.
    assert (
        answers.index("Which way?")
        < answers.index("The long way")
        < answers.index("Why that way?")
        < answers.index("Because it is\nscenic")
        < answers.index("Read this before the end")
    )
    assert "First &lt;b&gt;try&lt;/b&gt;" not in answers  # replaced by the second answer
    assert f'data-step="{S4}" class="mf-current"' in answers  # the step the learner is on
    # Time per step: s1 30 s; s2 60 s then 60 s after going back; s3 10 s then 5 s.
    for step_id, spent in ((S1, "30 s"), (S2, "2 min"), (S3, "15 s")):
        row = answers[answers.index(f'data-step="{step_id}"') :]
        assert row[: row.index("</tr>")].rstrip().endswith(f"{spent}</td>"), step_id
    timeline = html[html.index('id="timeline"') : html.index("Side effects")]
    assert re.findall(r'data-seq="(\d+)"', timeline) == ["1", "2", "3", "4", "5"]
    assert "First &lt;b&gt;try&lt;/b&gt;" in timeline  # escaped, never markup
    assert "back from" in timeline and "1 min" in timeline and "10 s" in timeline
    assert "session.started" in html and "step.completed" in html


def test_retry_turns_a_dead_delivery_pending_and_needs_a_mentor(
    create_org, publish_flow, walk, sign_in, monkeypatch
):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    session_id = walk(studio, "mini", (S1, "long"))
    other_session = walk(studio, "mini")
    latest()
    event_id = db.session.scalar(
        sa.select(OutboxEvent.id).where(
            OutboxEvent.session_id == session_id, OutboxEvent.type == "session.started"
        )
    )
    begin_write(db.session)
    db.session.execute(
        sa.update(Delivery)
        .where(Delivery.event_id == event_id)
        .values(status=DeliveryStatus.DEAD, attempts=8, last_error="PostHog answered 503")
    )
    db.session.commit()
    mentor, viewer = sign_in(studio.org, Role.MENTOR), sign_in(studio.org, Role.VIEWER)
    retry_url = f"/admin/sessions/{session_id}/events/{event_id}/retry"

    page = mentor.get(f"/admin/sessions/{session_id}").get_data(as_text=True)
    assert "PostHog answered 503" in page and 'data-status="dead"' in page
    assert retry_url in page
    assert viewer.post(retry_url).status_code == 403
    assert (
        mentor.post(f"/admin/sessions/{other_session}/events/{event_id}/retry").status_code == 404
    )

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.deliver_due_deliveries, "apply_async", broker_down)
    response = mentor.post(retry_url, follow_redirects=True)

    assert response.status_code == 200
    assert "periodic sweep" in response.get_data(as_text=True)
    latest()
    rows = db.session.scalars(sa.select(Delivery).where(Delivery.event_id == event_id)).all()
    assert rows and {(row.status, row.attempts) for row in rows} == {(DeliveryStatus.PENDING, 0)}


def test_funnel_counts_reached_completed_and_drop_off_exactly(
    create_org, publish_flow, walk, sign_in
):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    walk(studio, "mini")  # at s1
    walk(studio, "mini", (S1, "long"))  # at s2
    walk(studio, "mini", (S1, "long"), (S2, "a"), ("back", S2), (S2, "b"))  # at s3
    walk(studio, "mini", (S1, "long"), (S2, "a"), (S3, None), (S4, False))  # completed
    walk(studio, "mini", (S1, "short"))  # jumped to s4
    publish_flow(studio.org, mini_flow(" (v2)"))
    walk(studio, "mini", (S1, "short"))  # v2, at s4
    old = walk(studio, "mini", (S1, "long"))  # v2, at s2, but started 45 days ago
    set_created(old, utcnow() - timedelta(days=45))
    elsewhere = create_org()  # same flow, another org: never counted
    publish_flow(elsewhere.org, mini_flow())
    walk(elsewhere, "mini", (S1, "short"), (S4, True))
    viewer = sign_in(studio.org, Role.VIEWER)  # aggregates are for every role
    mini = flow_id(studio.org, "mini")

    v1 = funnel_rows(viewer, f"?flow={mini}&version=1")
    assert {step: row[:3] for step, row in v1.items()} == {
        S1: (5, 4, "20.0"),
        S2: (3, 2, "33.3"),
        S3: (2, 1, "50.0"),
        S4: (2, 1, "50.0"),
    }
    page = viewer.get(f"/admin/analytics/?flow={mini}&version=1").get_data(as_text=True)
    assert '<div class="mf-stat" id="stat-started">5</div>' in page
    assert '<div class="mf-stat" id="stat-completion">20%</div>' in page
    assert "<svg" in page

    every = funnel_rows(viewer, f"?flow={mini}")  # the default: last 30 days, all versions
    assert {step: row[:2] for step, row in every.items()} == {
        S1: (6, 5),
        S2: (3, 2),
        S3: (2, 1),
        S4: (3, 1),
    }
    since = (utcnow() - timedelta(days=60)).date()
    v2 = funnel_rows(viewer, f"?flow={mini}&version=2&since={since}")
    assert {step: row[:2] for step, row in v2.items()} == {
        S1: (2, 2),
        S2: (1, 0),
        S3: (0, 0),
        S4: (1, 0),
    }


def test_funnel_shows_the_median_time_per_step(create_org, publish_flow, walk, sign_in):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    for offsets in ((10, 15), (20, 35), (60,)):
        moves = [(S1, "long"), (S2, "x")][: len(offsets)]
        set_event_times(walk(studio, "mini", *moves), *offsets)
    viewer = sign_in(studio.org, Role.VIEWER)

    rows = funnel_rows(viewer, f"?flow={flow_id(studio.org, 'mini')}")

    assert rows[S1][3] == "20.0"  # median of 10, 20, 60 s
    assert rows[S2][3] == "10.0"  # median of 5 and 15 s
    assert rows[S3][3] == ""


def test_median_sums_revisits_of_a_step_within_a_session():
    start = utcnow()
    at = [start + timedelta(seconds=s) for s in (10, 40, 45, 65)]
    rows = [
        ("a", start, S1, at[0]),  # 10 s on s1
        ("a", start, S2, at[1]),  # 30 s on s2
        ("a", start, S3, at[2]),  # 5 s on s3, then back to s2
        ("a", start, S2, at[3]),  # 20 s more on s2
        ("b", start, S1, start + timedelta(seconds=4)),
    ]
    assert median_step_seconds(rows) == {S1: (7.0, 2), S2: (50.0, 1), S3: (5.0, 1)}


def test_export_job_runs_shows_progress_and_downloads(create_org, publish_flow, walk, sign_in):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    session_id = walk(studio, "mini", (S1, "long"), (S2, "Scenic"), email="ada@example.com")
    mentor, viewer = sign_in(studio.org, Role.MENTOR), sign_in(studio.org, Role.VIEWER)
    mini = flow_id(studio.org, "mini")

    jobs_page = mentor.get("/admin/jobs/").get_data(as_text=True)
    assert "Export CSV" in jobs_page
    started = mentor.post("/admin/jobs/export", {"flow_id": mini})
    assert started.status_code == 302
    job_url = started.headers["Location"]
    latest()
    job = db.session.scalars(sa.select(Job).where(Job.org_id == studio.org.id)).one()
    assert job_url.endswith(f"/admin/jobs/{job.id}")
    pending = mentor.get(job_url).get_data(as_text=True)
    assert ">pending<" in pending and 'http-equiv="refresh" content="2"' in pending
    assert "Download CSV" not in pending
    assert mentor.get(f"/admin/jobs/{job.id}/download").status_code == 409

    jobs.run_job(job.id)

    done = mentor.get(job_url).get_data(as_text=True)
    assert ">completed<" in done and 'http-equiv="refresh"' not in done
    assert f'href="/admin/jobs/{job.id}/download"' in done
    download = mentor.get(f"/admin/jobs/{job.id}/download")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert f"{studio.slug}-mini-{job.id}.csv" in download.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    download.close()
    assert [(row["session_id"], row["email"], row["path"], row["why"]) for row in table] == [
        (session_id, "ada@example.com", "long", "Scenic")
    ]
    listing = mentor.get("/admin/jobs/").get_data(as_text=True)
    assert f'data-job="{job.id}"' in listing and "CSV export of mini" in listing

    # Viewers watch jobs but neither start exports nor download answers.
    assert "Export CSV" not in viewer.get("/admin/jobs/").get_data(as_text=True)
    assert "Download CSV" not in viewer.get(job_url).get_data(as_text=True)
    assert viewer.post("/admin/jobs/export", {"flow_id": mini}).status_code == 403
    assert viewer.get(f"/admin/jobs/{job.id}/download").status_code == 403


def test_an_export_started_while_the_broker_is_down_stays_pending(
    create_org, publish_flow, sign_in, monkeypatch
):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    mentor = sign_in(studio.org, Role.MENTOR)

    def broker_down(job_id: int) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks, "enqueue_job", broker_down)
    page = mentor.post(
        "/admin/jobs/export", {"flow_id": flow_id(studio.org, "mini")}, follow_redirects=True
    )

    assert page.status_code == 200
    assert "periodic sweep" in page.get_data(as_text=True)
    latest()
    job = db.session.scalars(sa.select(Job).where(Job.org_id == studio.org.id)).one()
    assert job.status == JobStatus.PENDING


def test_viewers_see_aggregates_but_not_learners(create_org, publish_flow, walk, sign_in):
    studio = create_org()
    publish_flow(studio.org, mini_flow())
    session_id = walk(studio, "mini", (S1, "long"), email="ada@example.com")
    viewer = sign_in(studio.org, Role.VIEWER)

    assert viewer.get("/admin/sessions/").status_code == 403
    assert viewer.get(f"/admin/sessions/{session_id}").status_code == 403
    analytics = viewer.get("/admin/analytics/")
    assert analytics.status_code == 200 and "ada@example.com" not in analytics.get_data(
        as_text=True
    )
    assert 'href="/admin/sessions/"' not in analytics.get_data(as_text=True)  # not in the menu
    assert viewer.get("/admin/jobs/").status_code == 200


def console_routes(app):
    """Every rule of the learner pages, with the methods it answers."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in {"sessions", "analytics", "console_jobs"}:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method


def test_other_orgs_staff_get_404_on_every_learner_page(
    ctx, create_org, publish_flow, walk, sign_in
):
    first = create_org()
    publish_flow(first.org, mini_flow())
    session_id = walk(first, "mini", (S1, "long"), email="ada@example.com")
    latest()
    event_id = db.session.scalar(
        sa.select(OutboxEvent.id).where(OutboxEvent.session_id == session_id)
    )
    mini = flow_id(first.org, "mini")
    begin_write(db.session)
    job = create_export(first.org, "mini")
    db.session.commit()
    jobs.run_job(job.id)
    second = create_org()
    publish_flow(second.org, mini_flow())
    walk(second, "mini")
    owner = sign_in(second.org, Role.OWNER)
    values = {"session_id": session_id, "event_id": event_id, "job_id": job.id}
    # Pages without an id in their path take the first org's flow as an argument.
    flow_arg = {"sessions.index": f"?flow={mini}", "analytics.index": f"?flow={mini}"}

    routes = list(console_routes(ctx))
    assert len(routes) == 9, routes  # with the erasure of a session
    for rule, method in routes:
        if rule.endpoint == "console_jobs.index":  # the org's own list: checked below
            continue
        url = rule.build(values, append_unknown=False)[1] + flow_arg.get(rule.endpoint, "")
        response = owner.post(url, {"flow_id": mini}) if method == "POST" else owner.get(url)
        assert response.status_code == 404, (method, url, response.status_code)
        assert session_id not in response.get_data(as_text=True)

    # Their own lists never show the first org's learners or jobs.
    assert session_id not in owner.get("/admin/sessions/").get_data(as_text=True)
    assert f'data-job="{job.id}"' not in owner.get("/admin/jobs/").get_data(as_text=True)
    assert "ada@example.com" not in owner.get("/admin/analytics/").get_data(as_text=True)
