"""The staff console: sign-in, roles, flow authoring, and tenancy on every console URL."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from console_client import Console, add_staff
from mentorflow.flows.models import Flow, FlowVersion
from mentorflow.platform.extensions import db

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


def flow_id(slug: str = "onboarding") -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(Flow.id).where(Flow.slug == slug))


def test_everything_under_admin_needs_a_signed_in_staff_member(client, studio):
    for url in ["/admin/", "/admin/flows/", f"/admin/flows/{flow_id()}"]:
        response = client.get(url)
        assert response.status_code == 302
        assert "/admin/login" in response.headers["Location"]


def test_wrong_password_is_refused(client, studio):
    add_staff(studio.org, "mentor@studio.example", "mentor")
    response = Console(client).login("mentor@studio.example", "not the password")
    assert response.status_code == 401
    assert "do not match" in response.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302


def test_forms_without_a_csrf_token_are_refused(mentor):
    response = mentor.client.post(f"/admin/flows/{flow_id()}/publish", data={"notes": "x"})
    assert response.status_code == 400


def test_login_cookie_is_httponly_and_samesite(client, studio):
    add_staff(studio.org, "mentor@studio.example", "mentor")
    response = Console(client).login("mentor@studio.example")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_dashboard_lists_the_orgs_flows(mentor):
    page = mentor.get("/admin/").get_data(as_text=True)
    assert "Studio onboarding" in page and "Studio · mentor" in page


def test_create_flow_shows_validation_errors_inline_then_saves(mentor):
    bad = (
        SMALL_FLOW.read_text()
        .replace("onboarding", "second")
        .replace("goto: phase-2-step-2", "goto: nowhere")
    )
    response = mentor.post("/admin/flows/new", {"document": bad})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "phases[0].steps[1].next[0].goto" in page and "unknown step &#39;nowhere&#39;" in page
    assert flow_id("second") is None

    good = SMALL_FLOW.read_text().replace("slug: onboarding", "slug: second")
    created = mentor.post("/admin/flows/new", {"document": good})
    assert created.status_code == 302
    assert flow_id("second") is not None


def test_save_refuses_to_overwrite_a_newer_draft(mentor):
    fid = flow_id()
    page = mentor.get(f"/admin/flows/{fid}").get_data(as_text=True)
    revision = re.search(r'name="draft_revision" value="(\d+)"', page).group(1)
    mine = SMALL_FLOW.read_text().replace("Studio onboarding", "Mine")
    theirs = SMALL_FLOW.read_text().replace("Studio onboarding", "Theirs")
    first = mentor.post(f"/admin/flows/{fid}", {"document": theirs, "draft_revision": revision})
    assert first.status_code == 302
    second = mentor.post(f"/admin/flows/{fid}", {"document": mine, "draft_revision": revision})
    assert second.status_code == 200
    assert "saved by someone else" in second.get_data(as_text=True)
    assert "Mine" in second.get_data(as_text=True)  # the editor keeps what was typed
    db.session.rollback()
    assert db.session.get(Flow, fid).title == "Theirs"


def test_publish_versions_diff_and_rollback(mentor):
    fid = flow_id()
    changed = SMALL_FLOW.read_text().replace("What is your day rate?", "Your day rate?")
    mentor.post(f"/admin/flows/{fid}", {"document": changed, "draft_revision": "1"})
    published = mentor.post(f"/admin/flows/{fid}/publish", {"notes": "shorter prompt"})
    assert published.status_code == 302
    db.session.rollback()
    numbers = db.session.scalars(
        sa.select(FlowVersion.number).where(FlowVersion.flow_id == fid)
    ).all()
    assert sorted(numbers) == [1, 2]
    diff = mentor.get(f"/admin/flows/{fid}/diff?a=1&b=2").get_data(as_text=True)
    assert "phase-2-step-1" in diff and "+        prompt: Your day rate?" in diff
    rollback = mentor.post(f"/admin/flows/{fid}/rollback", {"version": "1"})
    assert rollback.status_code == 302
    db.session.rollback()
    assert db.session.get(Flow, fid).published_version.number == 1
    export = mentor.get(f"/admin/flows/{fid}/export?version=2")
    assert export.mimetype == "application/yaml" and "Your day rate?" in export.get_data(True)


def test_a_viewer_cannot_publish_or_edit(client, studio):
    add_staff(studio.org, "viewer@studio.example", "viewer")
    viewer = Console(client)
    viewer.login("viewer@studio.example")
    fid = flow_id()
    page = viewer.get(f"/admin/flows/{fid}").get_data(as_text=True)
    assert "Publish the draft" not in page and "readonly" in page
    assert viewer.post(f"/admin/flows/{fid}/publish", {"notes": "x"}).status_code == 403
    assert (
        viewer.post(
            f"/admin/flows/{fid}", {"document": SMALL_FLOW.read_text(), "draft_revision": "1"}
        ).status_code
        == 403
    )
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(FlowVersion)) == 1


def console_routes(app):
    """Every console URL that names an object, driven from the url map."""
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/admin/") and rule.arguments - {"filename"}:
            yield rule


def test_staff_of_another_org_get_404_on_every_console_url(
    ctx, client, studio, create_org, learner
):
    walker = learner(studio)
    walker.start("onboarding")
    other = create_org("other-studio", name="Other")
    add_staff(other.org, "owner@other.example", "owner")
    console = Console(client)
    console.login("owner@other.example")
    db.session.rollback()
    from mentorflow.jobs.models import Job

    values = {
        "flow_id": flow_id(),
        "session_id": walker.session_id,
        "job_id": 1,
        "slug": "studio",
        "event_id": "00000000-0000-0000-0000-000000000000",
    }
    job = Job(org_id=studio.org.id, kind="export_sessions", params={"flow_id": values["flow_id"]})
    db.session.add(job)
    db.session.commit()
    values["job_id"] = job.id
    checked = 0
    for rule in console_routes(ctx):
        if not rule.arguments <= set(values):
            continue
        url = rule.build({k: values[k] for k in rule.arguments}, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = (
                console.get(url)
                if method == "GET"
                else console.post(url, {"version": "1", "notes": "x"})
            )
            assert response.status_code == 404, (method, url, response.status_code)
            checked += 1
    assert checked >= 8
