"""Live screens in chromium: the player follows its session, with streams and without."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from test_console_in_browser import demo_password, sign_in
from test_player import (
    DEMO,
    FULL_DAY,
    click_continue,
    expect_step,
    record_responses,
    session_id,
    start,
)


@pytest.fixture(scope="module")
def server_without_streams(live_server, tmp_path_factory) -> Iterator[Any]:
    """A real server with MENTORFLOW_STREAMS=0: clients must poll."""
    server = type(live_server)(tmp_path_factory.mktemp("no-streams-instance"))
    server.env["MENTORFLOW_STREAMS"] = "0"
    server.seed()
    server.start()
    yield server
    server.stop()


def test_a_step_taken_in_one_tab_appears_in_the_other_without_a_click(live_server, new_page):
    first = new_page()
    start(first, live_server.url(DEMO))
    expect_step(first, "phase-1-step-1")
    second = new_page(context=first.context)  # same localStorage: the same session
    responses = record_responses(second)
    second.goto(live_server.url(DEMO))
    expect_step(second, "phase-1-step-1")

    first.get_by_label("About a month").check()
    click_continue(first)
    expect_step(first, "phase-1-step-2")
    # Pushed: no click, no reload in the second tab.
    expect_step(second, "phase-1-step-2")
    expect(second.locator("#status")).to_contain_text("another window or device")
    expect(second.locator("#progress-label")).to_have_text("Step 2 of 16 · 6% complete")

    first.get_by_role("button", name="Back").click()
    expect_step(first, "phase-1-step-1")
    expect_step(second, "phase-1-step-1")
    expect(second.get_by_label("About a month")).to_be_checked()
    # Live, not polled: the second tab opened a stream and read the session only to start.
    assert ("POST", "stream-tickets", 201) in responses
    assert [r for r in responses if r[0] == "GET" and r[2] == 304] == []


def test_with_streams_off_the_player_converges_by_polling(server_without_streams, new_page):
    server = server_without_streams
    first = new_page()
    start(first, server.url(DEMO))
    expect_step(first, "phase-1-step-1")
    second = new_page(context=first.context)
    responses = record_responses(second)
    with second.expect_response(lambda response: response.status == 304, timeout=10_000):
        second.goto(server.url(DEMO))
        expect_step(second, "phase-1-step-1")

    first.get_by_label("About a month").check()
    click_continue(first)
    expect_step(first, "phase-1-step-2")
    expect_step(second, "phase-1-step-2")  # within a poll or two (3 s each)
    assert ("POST", "stream-tickets", 503) in responses
    # Polls are conditional: the unchanged session came back as 304s, without a body.
    assert any(method == "GET" and status == 304 for method, _, status in responses)


def test_the_facilitators_room_moves_a_learner_as_they_answer(live_server, new_page, screenshot):
    console = new_page()
    sign_in(console, live_server, "mentor@demo.example", demo_password(live_server))
    console.goto(live_server.url("/admin/flows/"))
    row = console.get_by_role("row").filter(has_text="rafael-tats")
    row.get_by_role("link", name="Live").click()
    expect(console.locator("#live-status")).to_have_text("Live.")
    room = console.locator("#room")

    learner = new_page()
    start(learner, live_server.url(DEMO), name="Grace")
    expect_step(learner, "phase-1-step-1")
    on_step = room.locator("[data-step-id='phase-1-step-1'] [data-session-id]")
    expect(on_step.filter(has_text="Grace")).to_have_count(1)  # a new learner joins the room
    learner.get_by_label("About a month").check()
    click_continue(learner)
    expect_step(learner, "phase-1-step-2")
    grace_on = {
        step: room.locator(f"[data-step-id='{step}'] [data-session-id]").filter(has_text="Grace")
        for step in ("phase-1-step-1", "phase-1-step-2", "phase-1-step-3")
    }
    expect(grace_on["phase-1-step-2"]).to_have_count(1)
    expect(grace_on["phase-1-step-1"]).to_have_count(0)

    # The session's own page follows too.
    details = new_page(context=console.context)
    details.goto(live_server.url(f"/admin/sessions/{session_id(learner)}"))
    expect(details.locator("#live-region")).to_contain_text("now at phase-1-step-2")

    learner.get_by_label(FULL_DAY).fill("450")
    click_continue(learner)
    expect_step(learner, "phase-1-step-3")
    # No reload, no click in the console: the room moves Grace from step 2 to step 3.
    expect(grace_on["phase-1-step-3"]).to_have_count(1)
    expect(grace_on["phase-1-step-2"]).to_have_count(0)
    expect(details.locator("#live-region")).to_contain_text("now at phase-1-step-3")
    screenshot(console, "room")
