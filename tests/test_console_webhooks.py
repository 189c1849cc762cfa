"""The console's webhook pages and learner erasure, through the test client."""

from __future__ import annotations

import sqlalchemy as sa

from console_client import Console, add_staff
from mentorflow.delivery import webhooks
from mentorflow.flows.models import Learner
from mentorflow.jobs.models import Job
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role


def test_admins_manage_webhooks_and_the_secret_is_shown_once(ctx, client, create_org):
    keys = create_org()
    add_staff(keys.org, "admin@example.com", Role.ADMIN)
    add_staff(keys.org, "mentor@example.com", Role.MENTOR)
    console = Console(client)
    console.login("admin@example.com")
    refused = console.post("/admin/webhooks/new", {"url": "https://127.0.0.1/x"})
    assert refused.status_code == 422
    assert "not a public one" in refused.get_data(as_text=True)
    created = console.post(
        "/admin/webhooks/new",
        {"url": "https://hooks.example.com/x", "event_types": ["learner.erased"]},
    )
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    page = created.get_data(as_text=True)
    assert "whsec_" in page
    db.session.rollback()
    (endpoint,) = webhooks.list_endpoints(keys.org.id)
    assert endpoint.event_types == ["learner.erased"]
    details = console.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert "https://hooks.example.com/x" in details and "whsec_" not in details

    mentor = Console(ctx.test_client())
    mentor.login("mentor@example.com")
    assert mentor.get("/admin/webhooks/").status_code == 403
    other = create_org()
    add_staff(other.org, "stranger@example.com", Role.OWNER)
    stranger = Console(ctx.test_client())
    stranger.login("stranger@example.com")
    assert stranger.get(f"/admin/webhooks/{endpoint.id}").status_code == 404


def test_erasing_a_learner_in_the_console_needs_their_id_typed(
    ctx, client, create_org, publish_flow
):
    keys = create_org()
    publish_flow(keys.org)
    add_staff(keys.org, "admin@example.com", Role.ADMIN)
    started = client.post(
        f"/v1/orgs/{keys.slug}/flows/rafael-tats/sessions",
        json={"external_user_id": "user-5"},
        headers={"Authorization": f"Bearer {keys.sk}"},
    )
    assert started.status_code == 201
    db.session.rollback()
    learner = db.session.scalar(sa.select(Learner).where(Learner.external_user_id == "user-5"))
    console = Console(client)
    console.login("admin@example.com")
    page = f"/admin/learners/{learner.id}"
    assert "Erase this learner" in console.get(page).get_data(as_text=True)
    wrong = console.post(f"{page}/erase", {"confirm": "user-6"}, form_page=page)
    assert wrong.status_code == 302
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0
    right = console.post(f"{page}/erase", {"confirm": "user-5"}, form_page=page)
    assert right.status_code == 302 and "/admin/jobs/" in right.headers["Location"]
    db.session.rollback()
    (job,) = db.session.scalars(sa.select(Job)).all()
    assert job.kind == "erase" and job.params["external_user_id"] == "user-5"


def test_erasing_a_session_in_the_console_needs_its_id_typed(
    ctx, client, create_org, publish_flow, learner
):
    keys = create_org()
    publish_flow(keys.org)
    add_staff(keys.org, "admin@example.com", Role.ADMIN)
    add_staff(keys.org, "mentor@example.com", Role.MENTOR)
    walker = learner(keys)
    walker.start("rafael-tats")
    page = f"/admin/sessions/{walker.session_id}"
    mentor = Console(ctx.test_client())
    mentor.login("mentor@example.com")
    assert "Erase session" not in mentor.get(page).get_data(as_text=True)
    assert (
        mentor.post(f"{page}/erase", {"confirm": walker.session_id}, form_page=page).status_code
        == 403
    )
    console = Console(client)
    console.login("admin@example.com")
    assert "Erase session" in console.get(page).get_data(as_text=True)
    console.post(f"{page}/erase", {"confirm": "nope"}, form_page=page)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0
    done = console.post(f"{page}/erase", {"confirm": walker.session_id}, form_page=page)
    assert done.status_code == 302 and "/admin/jobs/" in done.headers["Location"]
    db.session.rollback()
    (job,) = db.session.scalars(sa.select(Job)).all()
    assert job.params == {"scope": "session", "session_id": walker.session_id}
