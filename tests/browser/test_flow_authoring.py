"""Authoring without YAML in headless chromium: the step editor, autosave and conflicts."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import yaml
from playwright.sync_api import Page, expect
from test_console_in_browser import MENTORFLOW, answer, demo_password, sign_in

SAVED = re.compile(r"All changes saved")


def select_step(page: Page, step_id: str) -> None:
    page.locator(f"li.mf-step[data-step-id='{step_id}']").click()
    expect(page.locator("#step-form .mf-mono").first).to_have_text(step_id)


def add_step(page: Page, phase: int) -> None:
    page.locator(f"button.mf-add-step[data-phase='{phase}']").click()


def wait_saved(page: Page) -> None:
    expect(page.locator("#editor-status")).to_have_text(SAVED, timeout=15_000)


def pull(server, slug: str) -> dict:
    return yaml.safe_load(server.cli("flow", "pull", "demo", slug))


def second_mentor(server) -> tuple[str, str]:
    email, password = "second.mentor@demo.example", "second mentor password 1"
    subprocess.run(
        [MENTORFLOW, "staff", "create", email, "--org", "demo", "--role", "mentor"],
        input=password + "\n",
        text=True,
        env=server.env,
        capture_output=True,
    )
    return email, password


def walk_api(server, name: str, answers: list[tuple[str, object]]) -> str:
    """Start a session as a learner would (publishable key) and answer; return its id."""
    status, body = server.call(
        "POST", "/v1/orgs/demo/flows/pricing-check-up/sessions", server.pk, {"name": name}
    )
    assert status == 201, body
    session_id, token = body["session"]["id"], body["token"]
    for step_id, value in answers:
        status, body = server.call(
            "POST",
            f"/v1/orgs/demo/sessions/{session_id}/steps",
            token,
            {"step_id": step_id, "answer": value},
        )
        assert status == 200, body
    return session_id


def start_worker(server) -> subprocess.Popen:
    """A Celery worker for the server's jobs (the embedded broker in its instance folder)."""
    log = (server.instance / "worker.log").open("ab")
    process = subprocess.Popen(
        [MENTORFLOW, "worker", "--concurrency", "1"],
        env=server.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return process


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def build_three_phase_flow(page: Page, server, title: str) -> str:
    """Build a three-phase flow with a branch through the editor only; return its URL."""
    page.goto(server.url("/admin/flows/new"))
    page.get_by_label("Title of the new flow").fill(title)
    page.get_by_role("button", name="Create and open the editor").click()
    expect(page.locator("#flow-editor li.mf-step")).to_have_count(1)

    page.locator("#step-prompt").fill("What is your studio called?")
    page.locator(".mf-phase-title").nth(0).fill("Where you are")
    add_step(page, 0)
    page.locator("#step-type").select_option("single_choice")
    page.locator("#step-prompt").fill("How booked are you?")
    page.get_by_label("Label of option 1").fill("Fully booked")
    page.get_by_label("Value of option 1").fill("full")
    page.get_by_label("Label of option 2").fill("Some gaps")
    page.get_by_label("Value of option 2").fill("gaps")

    page.locator("#add-phase").click()
    page.locator(".mf-phase-title").nth(1).fill("Money")
    page.locator("#step-type").select_option("number")
    page.locator("#step-prompt").fill("What is your day rate?")
    page.locator("#step-min").fill("0")

    page.locator("#add-phase").click()
    page.locator(".mf-phase-title").nth(2).fill("Plans")
    page.locator("#step-type").select_option("long_text")
    page.locator("#step-prompt").fill("What scares you about raising prices?")
    add_step(page, 2)
    page.locator("#step-type").select_option("info")
    page.locator("#step-prompt").fill("Thanks, that is all")
    wait_saved(page)

    select_step(page, "phase-1-step-2")
    page.locator("#add-rule").click()
    rule = page.locator(".mf-rule").first
    rule.locator(".mf-rule-key").select_option("how-booked-are-you")
    rule.locator(".mf-rule-value").select_option("full")
    rule.locator(".mf-rule-goto").select_option("phase-3-step-1")
    wait_saved(page)
    return page.url


def test_a_mentor_builds_a_branching_flow_without_yaml(live_server, new_page, screenshot):
    page = new_page()
    sign_in(page, live_server, "mentor@demo.example", demo_password(live_server))
    build_three_phase_flow(page, live_server, "Pricing check-up")

    # A bad field: the server's validator answers next to it, and nothing is saved.
    select_step(page, "phase-2-step-1")
    page.locator("#step-max").fill("-5")
    error = page.locator("[data-error-path='phases[1].steps[0].min']")
    expect(error).to_have_text("must not be more than max (-5)")
    expect(page.locator("#editor-status")).to_contain_text("Not saved: 1 problem")
    expect(page.locator("li.mf-step[data-step-id='phase-2-step-1'] .mf-step-errors")).to_have_text(
        "1"
    )
    screenshot(page, "editor-error-next-to-field")
    page.locator("#step-max").fill("5000")
    expect(error).to_have_count(0)
    wait_saved(page)

    # Reorder with the keyboard, then drag it back.
    thanks = page.locator("li.mf-step[data-step-id='phase-3-step-2']")
    thanks.focus()
    page.keyboard.press("Alt+ArrowUp")
    steps = page.locator("section.mf-phase").nth(2).locator("li.mf-step")
    expect(steps.first).to_have_attribute("data-step-id", "phase-3-step-2")
    wait_saved(page)
    assert [s["id"] for s in pull(live_server, "pricing-check-up")["phases"][2]["steps"]] == [
        "phase-3-step-2",
        "phase-3-step-1",
    ]
    steps.first.drag_to(steps.nth(1), target_position={"x": 10, "y": 25})
    expect(steps.first).to_have_attribute("data-step-id", "phase-3-step-1")
    wait_saved(page)

    select_step(page, "phase-1-step-2")
    screenshot(page, "editor")
    document = pull(live_server, "pricing-check-up")
    assert [phase["title"] for phase in document["phases"]] == ["Where you are", "Money", "Plans"]
    booked = document["phases"][0]["steps"][1]
    assert booked["type"] == "single_choice"
    assert booked["options"] == [
        {"value": "full", "label": "Fully booked"},
        {"value": "gaps", "label": "Some gaps"},
    ]
    assert booked["next"] == [
        {"when": {"key": "how-booked-are-you", "equals": "full"}, "goto": "phase-3-step-1"}
    ]
    assert document["phases"][1]["steps"][0]["max"] == 5000

    # The YAML view shows the same draft.
    page.get_by_role("tab", name="YAML (advanced)").click()
    expect(page.locator("#document")).to_contain_text("goto: phase-3-step-1")

    # Try the draft: the player on a preview session, walked to the end, counted nowhere.
    page.get_by_role("button", name="Try the draft").click()
    expect(page.locator("#preview-banner")).to_contain_text("Preview of the draft.")
    answer(page, "phase-1-step-1", fill="Needle & Co")
    answer(page, "phase-1-step-2", choose="Fully booked")
    answer(page, "phase-3-step-1", fill="That they leave")  # the branch skipped phase 2
    screenshot(page, "preview")
    answer(page, "phase-3-step-2")
    expect(page.get_by_role("heading", name="You're all done")).to_be_visible()
    screenshot(page, "preview-done")
    preview_id = page.locator("#player").get_attribute("data-preview-session")
    state = live_server.session(preview_id)["session"]
    assert state["status"] == "completed"
    assert state["answers"]["how-booked-are-you"] == "full"
    status, feed = live_server.call("GET", "/v1/orgs/demo/events?limit=500", live_server.sk)
    assert status == 200 and preview_id not in {e["session_id"] for e in feed["events"]}
    page.get_by_role("link", name="Back to the editor").click()
    flow_id = re.search(r"/admin/flows/(\d+)", page.url).group(1)
    page.goto(live_server.url(f"/admin/analytics/?flow={flow_id}"))
    expect(page.locator("#stat-started")).to_have_text("0")

    # Publish v1; four learners start it.
    worker = start_worker(live_server)
    try:
        page.goto(live_server.url(f"/admin/flows/{flow_id}"))
        page.locator("#notes").fill("first version")
        page.locator("#publish").click()
        expect(page.get_by_text("Published version 1.")).to_be_visible()
        learners = {
            "Ann": [("phase-1-step-1", "Ann's ink")],
            "Ben": [("phase-1-step-1", "Ben's"), ("phase-1-step-2", "full")],
            "Cat": [("phase-1-step-1", "Cat's"), ("phase-1-step-2", "gaps")],
            "Dan": [],
        }
        ids = {name: walk_api(live_server, name, answers) for name, answers in learners.items()}
        page.goto(live_server.url(f"/admin/analytics/?flow={flow_id}"))
        expect(page.locator("#stat-started")).to_have_text("4")  # the preview is not counted

        # v2 stores "Some gaps" as another value: Cat's answer no longer fits.
        page.goto(live_server.url(f"/admin/flows/{flow_id}"))
        select_step(page, "phase-1-step-2")
        page.get_by_label("Value of option 2").fill("some-gaps")
        wait_saved(page)
        page.locator("#notes").fill("one option fewer")
        page.locator("#publish").click()
        dialog = page.locator("#migration-dialog")
        expect(dialog).to_contain_text("Version 2 is published")
        expect(page.locator("#active-count")).to_contain_text("4 active sessions")
        page.locator("#check-migration").click()
        expect(page.locator("#movable-count")).to_have_text("3 can move")
        expect(page.locator("#pinned-count")).to_have_text("1 stay pinned")
        expect(page.locator(f"tr[data-session-id='{ids['Cat']}']")).to_contain_text(
            "the answer to 'how-booked-are-you' does not fit"
        )
        screenshot(page, "migration-dialog")
        page.once("dialog", lambda confirm: confirm.accept())
        page.locator("#move-sessions").click()
        expect(page.locator("#migration-done")).to_contain_text(
            "3 moved, 1 stayed pinned", timeout=60_000
        )
        expect(page.locator("tr[data-outcome='pinned']")).to_contain_text("Cat")
        screenshot(page, "migration-done")
    finally:
        stop_worker(worker)
    versions = {name: live_server.session(sid)["session"] for name, sid in ids.items()}
    assert {name: state["flow_version"] for name, state in versions.items()} == {
        "Ann": 2,
        "Ben": 2,
        "Cat": 1,
        "Dan": 2,
    }
    assert versions["Ben"]["current_step_id"] == "phase-3-step-1"
    status, history = live_server.call(
        "GET", f"/v1/orgs/demo/sessions/{ids['Ben']}/events", live_server.sk
    )
    assert status == 200 and history["events"][-1]["type"] == "session.migrated"


def test_a_second_mentors_concurrent_edit_is_shown_and_chosen(live_server, new_page, screenshot):
    first = new_page()
    sign_in(first, live_server, "mentor@demo.example", demo_password(live_server))
    first.goto(live_server.url("/admin/flows/new"))
    first.get_by_label("Title of the new flow").fill("Shared draft")
    first.get_by_role("button", name="Create and open the editor").click()
    expect(first.locator("#flow-editor li.mf-step")).to_have_count(1)
    url = first.url

    email, password = second_mentor(live_server)
    second = new_page()
    sign_in(second, live_server, email, password)
    second.goto(url)
    expect(second.locator("#step-prompt")).to_be_visible()

    first.locator("#step-prompt").fill("The first mentor's question")
    wait_saved(first)
    second.locator("#flow-title-input").fill("The second mentor's title")
    conflict = second.locator("#editor-conflict")
    expect(conflict).to_be_visible(timeout=15_000)
    expect(conflict).to_contain_text("Someone else saved this draft")
    expect(conflict.locator("#conflict-changes")).to_contain_text("phase-1-step-1")
    screenshot(second, "editor-conflict")
    assert pull(live_server, "shared-draft")["title"] == "Shared draft"  # nothing overwritten

    second.locator("#conflict-overwrite").click()
    wait_saved(second)
    saved = pull(live_server, "shared-draft")
    assert saved["title"] == "The second mentor's title"

    # The first mentor, now behind, reloads theirs instead.
    first.locator("#step-prompt").fill("Another question")
    expect(first.locator("#editor-conflict")).to_be_visible(timeout=15_000)
    first.locator("#conflict-reload").click()
    expect(first.locator("#flow-title-input")).to_have_value("The second mentor's title")
    expect(first.locator("#editor-status")).to_contain_text("Reloaded their version")
