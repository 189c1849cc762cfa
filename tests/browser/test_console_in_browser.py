"""The staff console in headless chromium: author, publish, walk, find the learner, count them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Page, expect

MENTORFLOW = str(Path(sys.executable).parent / "mentorflow")
FLOW = """slug: studio-check
title: Studio check-up
phases:
  - id: phase-1
    title: Where you are
    steps:
      - id: phase-1-step-1
        type: text
        key: studio-name
        prompt: What is your studio called?
      - id: phase-1-step-2
        type: single_choice
        key: booked
        prompt: How booked are you?
        options:
          - {value: full, label: Fully booked}
          - {value: gaps, label: Some gaps}
        next:
          - when: {key: booked, equals: full}
            goto: phase-2-step-2
  - id: phase-2
    title: Money
    steps:
      - id: phase-2-step-1
        type: number
        key: day-rate
        prompt: What is your day rate?
        min: 0
      - id: phase-2-step-2
        type: long_text
        key: fear
        prompt: What scares you about raising prices?
"""
BROKEN = FLOW.replace("goto: phase-2-step-2", "goto: nowhere")


def demo_password(server) -> str:
    return json.loads((server.instance / "demo.json").read_text())["staff_password"]


def sign_in(page: Page, server, email: str, password: str) -> None:
    page.goto(server.url("/admin/"))
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))


def answer(page: Page, step_id: str, fill: str | None = None, choose: str | None = None) -> None:
    form = page.locator(f"form.step[data-step-id='{step_id}']")
    expect(form).to_be_visible()
    if fill is not None:
        form.locator("input:visible, textarea:visible").first.fill(fill)
    if choose is not None:
        form.get_by_label(choose).check()
    form.locator("button[type=submit]").click()


def test_mentor_authors_publishes_and_finds_the_learner(live_server, new_page, screenshot):
    page = new_page()
    sign_in(page, live_server, "mentor@demo.example", demo_password(live_server))
    expect(page.get_by_text("Pricing for tattoo artists")).to_be_visible()
    screenshot(page, "01-dashboard")

    page.goto(live_server.url("/admin/flows/new"))
    page.locator("#document").fill(BROKEN)
    page.locator("#save-draft").click()
    errors = page.locator("#document-errors")
    expect(errors).to_contain_text("phases[0].steps[1].next[0].goto")
    expect(errors).to_contain_text("unknown step 'nowhere'")
    screenshot(page, "02-validation-error-inline")

    page.locator("#document").fill(FLOW)
    page.locator("#save-draft").click()
    expect(page.get_by_text("Created the draft of “Studio check-up”.")).to_be_visible()
    page.locator("#notes").fill("first version")
    page.locator("#publish").click()
    expect(page.get_by_text("Published version 1.")).to_be_visible()
    screenshot(page, "03-published")

    learner = new_page()
    learner.goto(live_server.url("/play/demo/studio-check"))
    learner.get_by_label("Your name").fill("Ink Ada")
    learner.get_by_role("button", name="Start").click()
    answer(learner, "phase-1-step-1", fill="Needle & Co")
    answer(learner, "phase-1-step-2", choose="Some gaps")
    answer(learner, "phase-2-step-1", fill="450")
    expect(learner.locator("form[data-step-id='phase-2-step-2']")).to_be_visible()
    learner.reload()
    expect(learner.locator("form[data-step-id='phase-2-step-2']")).to_be_visible()
    screenshot(learner, "04-player-after-reload")
    stored = learner.evaluate("() => Object.values(window.localStorage).map(JSON.parse)")
    session_id = next(s["session_id"] for s in stored if "session_id" in s)
    state = live_server.session(session_id)
    assert state["session"]["answers"] == {
        "studio-name": "Needle & Co",
        "booked": "gaps",
        "day-rate": 450,
    }
    assert state["session"]["current_step_id"] == "phase-2-step-2"

    page.goto(live_server.url("/admin/sessions/?email=&status=active"))
    page.get_by_role("link", name="Ink Ada").click()
    answers = page.locator("#answers")
    expect(answers.get_by_role("cell", name="Needle & Co")).to_be_visible()
    expect(answers.get_by_role("cell", name="Some gaps")).to_be_visible()
    expect(answers.get_by_role("cell", name="450")).to_be_visible()
    screenshot(page, "05-session-detail")

    page.goto(live_server.url("/admin/flows/"))
    page.get_by_role("link", name="Studio check-up").click()
    flow_id = re.search(r"/admin/flows/(\d+)", page.url).group(1)
    page.goto(live_server.url(f"/admin/analytics/?flow={flow_id}"))
    first = page.locator("tr[data-step='phase-1-step-1']")
    expect(first).to_have_attribute("data-reached", "1")
    expect(first).to_have_attribute("data-completed", "1")
    expect(page.locator("tr[data-step='phase-2-step-2']")).to_have_attribute("data-completed", "0")
    screenshot(page, "06-funnel")


def test_a_viewer_cannot_publish(live_server, new_page, screenshot):
    email = "viewer@demo.example"
    subprocess.run(
        [MENTORFLOW, "staff", "create", email, "--org", "demo", "--role", "viewer"],
        input="viewer password 123\n",
        text=True,
        env=live_server.env,
        check=True,
        capture_output=True,
    )
    page = new_page()
    sign_in(page, live_server, email, "viewer password 123")
    page.goto(live_server.url("/admin/flows/"))
    page.get_by_role("link", name="Pricing for tattoo artists").click()
    expect(page.locator("#document")).to_have_attribute("readonly", "")
    expect(page.locator("#publish")).to_have_count(0)
    screenshot(page, "viewer-flow-page")
    status = page.evaluate("""async () => {
        const token = document.querySelector('input[name=csrf_token]').value;
        const body = new URLSearchParams({csrf_token: token, notes: 'sneaky'});
        const response = await fetch(location.pathname + '/publish', {method: 'POST', body});
        return response.status;
    }""")
    assert status == 403


def test_an_invitation_link_keeps_its_token_out_of_the_server_logs(
    live_server, new_page, screenshot
):
    owner = new_page()
    sign_in(owner, live_server, "mentor@demo.example", demo_password(live_server))
    owner.goto(live_server.url("/admin/settings/members"))
    owner.get_by_label("Email").fill("invited.mentor@demo.example")
    owner.get_by_role("button", name="Create invitation link").click()
    link = owner.locator("#invitation-link").inner_text().strip()
    base, _, token = link.partition("#")
    assert base == live_server.url("/admin/invite/") and len(token) > 30

    invitee = new_page()
    invitee.goto(link)  # the page's script posts the token from after the "#"
    expect(invitee.get_by_role("heading", name=re.compile("^Join "))).to_be_visible()
    assert "#" not in invitee.url
    invitee.get_by_label("Choose a password").fill("invitee password 1")
    invitee.get_by_label("Repeat the password").fill("invitee password 1")
    screenshot(invitee, "invitation")
    invitee.get_by_role("button", name=re.compile("^Join ")).click()
    expect(invitee).to_have_url(re.compile(r"/admin/$"))
    expect(invitee.get_by_text("Your role is mentor")).to_be_visible()

    logged = (live_server.instance / "server.log").read_text()
    assert "/admin/invite/" in logged  # the access log saw the pages, not the token
    assert token not in logged
