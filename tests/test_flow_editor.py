"""The structured editor's endpoints: validate with the server's validator, autosave, conflicts."""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path

import sqlalchemy as sa

from console_client import Console, add_staff, csrf_token
from mentorflow.flows.document import load_document
from mentorflow.flows.models import Flow
from mentorflow.platform.extensions import db

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


def flow_id(slug: str = "onboarding") -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(Flow.id).where(Flow.slug == slug))


def post_json(console: Console, url: str, body: object) -> object:
    token = csrf_token(console.client, "/admin/")
    return console.client.post(url, json=body, headers={"X-CSRFToken": token})


def draft(console: Console, fid: int) -> dict:
    response = console.get(f"/admin/flows/{fid}/draft.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_flow_page_opens_on_the_editor_with_the_yaml_view_as_advanced(mentor):
    fid = flow_id()
    page = mentor.get(f"/admin/flows/{fid}").get_data(as_text=True)
    assert 'id="flow-editor"' in page and "flow-editor.js" in page
    assert "YAML (advanced)" in page and 'name="draft_revision"' in page
    yaml_page = mentor.get(f"/admin/flows/{fid}?view=yaml").get_data(as_text=True)
    assert re.search(r'<div id="flow-editor"[^>]*hidden', yaml_page.replace("\n", " "))


def test_validation_names_the_bad_field_and_saves_nothing(mentor):
    fid = flow_id()
    state = draft(mentor, fid)
    document = copy.deepcopy(state["document"])
    scale = {"id": "phase-2-step-3", "type": "scale", "key": "confidence", "prompt": "Sure?"}
    scale.update(min=10, max=5)
    document["phases"][1]["steps"].append(scale)
    document["phases"][0]["steps"][1]["key"] = "bad key!"
    response = post_json(mentor, f"/admin/flows/{fid}/validate", {"document": document})
    assert response.status_code == 200
    body = response.get_json()
    assert body["valid"] is False
    paths = {error["path"]: error["message"] for error in body["errors"]}
    assert paths["phases[1].steps[2].min"] == "must be less than max (5)"
    assert "phases[0].steps[1].key" in paths
    assert draft(mentor, fid)["revision"] == state["revision"]

    fine = post_json(mentor, f"/admin/flows/{fid}/validate", {"document": state["document"]})
    assert fine.get_json() == {"valid": True, "errors": []}


def test_validation_refuses_another_slug_unstorable_text_and_non_json(mentor):
    fid = flow_id()
    document = draft(mentor, fid)["document"]
    renamed = {**document, "slug": "another"}
    body = post_json(mentor, f"/admin/flows/{fid}/validate", {"document": renamed}).get_json()
    assert body["errors"][0]["path"] == "slug"
    lone = {**document, "title": "bad \ud800 text"}
    body = post_json(mentor, f"/admin/flows/{fid}/validate", {"document": lone}).get_json()
    assert body["valid"] is False and body["errors"][0]["path"] == "title"
    token = csrf_token(mentor.client, "/admin/")
    raw = mentor.client.post(
        f"/admin/flows/{fid}/validate",
        data="{not json",
        headers={"X-CSRFToken": token, "Content-Type": "application/json"},
    )
    assert raw.status_code == 400
    assert post_json(mentor, f"/admin/flows/{fid}/validate", {"doc": 1}).status_code == 422


def test_autosave_bumps_the_revision_and_the_yaml_view_shows_the_change(mentor):
    fid = flow_id()
    state = draft(mentor, fid)
    document = copy.deepcopy(state["document"])
    document["phases"][0]["steps"][1]["prompt"] = "How many years have you tattooed?"
    saved = post_json(
        mentor, f"/admin/flows/{fid}/draft", {"document": document, "revision": state["revision"]}
    )
    assert saved.status_code == 200
    assert saved.get_json()["revision"] == state["revision"] + 1
    assert saved.get_json()["changed"]["changed"] == ["phase-1-step-2"]
    page = mentor.get(f"/admin/flows/{fid}?view=yaml").get_data(as_text=True)
    assert "How many years have you tattooed?" in page
    db.session.rollback()
    stored = db.session.get(Flow, fid).draft
    assert stored == load_document(page_yaml(page))


def page_yaml(page: str) -> str:
    match = re.search(r'<textarea[^>]*id="document"[^>]*>(.*?)</textarea>', page, re.S)
    return html.unescape(match.group(1))


def test_a_stale_autosave_is_a_conflict_with_what_changed_and_overwrite_is_a_choice(mentor):
    fid = flow_id()
    state = draft(mentor, fid)
    theirs = copy.deepcopy(state["document"])
    theirs["phases"][1]["steps"][0]["prompt"] = "Their prompt"
    first = post_json(
        mentor, f"/admin/flows/{fid}/draft", {"document": theirs, "revision": state["revision"]}
    )
    assert first.status_code == 200

    mine = copy.deepcopy(state["document"])
    mine["title"] = "My title"
    stale = post_json(
        mentor, f"/admin/flows/{fid}/draft", {"document": mine, "revision": state["revision"]}
    )
    assert stale.status_code == 409
    conflict = stale.get_json()
    assert conflict["theirs"]["revision"] == state["revision"] + 1
    assert conflict["theirs"]["document"]["phases"][1]["steps"][0]["prompt"] == "Their prompt"
    assert conflict["changes"]["changed"] == ["phase-2-step-1"]
    db.session.rollback()
    assert db.session.get(Flow, fid).title == "Studio onboarding"  # nothing lost

    forced = post_json(
        mentor,
        f"/admin/flows/{fid}/draft",
        {"document": mine, "revision": conflict["theirs"]["revision"]},
    )
    assert forced.status_code == 200
    db.session.rollback()
    assert db.session.get(Flow, fid).title == "My title"


def test_an_invalid_or_unrevisioned_save_is_refused(mentor):
    fid = flow_id()
    state = draft(mentor, fid)
    document = copy.deepcopy(state["document"])
    document["phases"][0]["steps"][1]["next"][0]["goto"] = "nowhere"
    bad = post_json(
        mentor, f"/admin/flows/{fid}/draft", {"document": document, "revision": state["revision"]}
    )
    assert bad.status_code == 422
    assert bad.get_json()["errors"][0]["path"] == "phases[0].steps[1].next[0].goto"
    missing = post_json(mentor, f"/admin/flows/{fid}/draft", {"document": state["document"]})
    assert missing.status_code == 422
    assert draft(mentor, fid)["revision"] == state["revision"]


def test_a_viewer_may_validate_but_not_save(client, studio):
    add_staff(studio.org, "viewer@studio.example", "viewer")
    viewer = Console(client)
    viewer.login("viewer@studio.example")
    fid = flow_id()
    state = draft(viewer, fid)
    assert (
        post_json(
            viewer, f"/admin/flows/{fid}/validate", {"document": state["document"]}
        ).status_code
        == 200
    )
    saved = post_json(
        viewer,
        f"/admin/flows/{fid}/draft",
        {"document": state["document"], "revision": state["revision"]},
    )
    assert saved.status_code == 403


def test_a_mentor_creates_a_flow_from_a_title_without_yaml(mentor):
    created = mentor.post("/admin/flows/new", {"title": "Pricing check-up"})
    assert created.status_code == 302
    fid = flow_id("pricing-check-up")
    state = draft(mentor, fid)
    assert state["document"]["title"] == "Pricing check-up"
    again = mentor.post("/admin/flows/new", {"title": "Pricing check-up"})
    assert again.status_code == 302 and flow_id("pricing-check-up-2") is not None
    nul = mentor.post("/admin/flows/new", {"title": "Bad \x00 title"})
    assert nul.headers["Location"].endswith("/admin/flows/new")
    assert flow_id("bad-title") is None


def test_another_orgs_mentor_gets_404_from_the_editor_endpoints(client, studio, create_org):
    fid = flow_id()
    other = create_org("other", name="Other")
    add_staff(other.org, "mentor@other.example", "mentor")
    console = Console(client)
    console.login("mentor@other.example")
    assert console.get(f"/admin/flows/{fid}/draft.json").status_code == 404
    document = {"slug": "onboarding"}
    assert (
        post_json(console, f"/admin/flows/{fid}/validate", {"document": document}).status_code
        == 404
    )
    saved = post_json(console, f"/admin/flows/{fid}/draft", {"document": document, "revision": 1})
    assert saved.status_code == 404


def test_a_scale_step_may_name_its_ends(mentor):
    fid = flow_id()
    state = draft(mentor, fid)
    document = copy.deepcopy(state["document"])
    scale = {"id": "phase-2-step-3", "type": "scale", "key": "confidence", "prompt": "Sure?"}
    scale.update(min_label="Not at all", max_label=5)
    document["phases"][1]["steps"].append(scale)
    body = post_json(mentor, f"/admin/flows/{fid}/validate", {"document": document}).get_json()
    assert body["errors"] == [
        {"path": "phases[1].steps[2].max_label", "message": "must be a string (put it in quotes)"}
    ]
    scale["max_label"] = "Completely"
    saved = post_json(
        mentor, f"/admin/flows/{fid}/draft", {"document": document, "revision": state["revision"]}
    )
    assert saved.status_code == 200
    stored = saved.get_json()["document"]["phases"][1]["steps"][2]
    assert (stored["min"], stored["max"]) == (1, 10)
    assert (stored["min_label"], stored["max_label"]) == ("Not at all", "Completely")
    assert "min_label: Not at all" in saved.get_json()["yaml"]
