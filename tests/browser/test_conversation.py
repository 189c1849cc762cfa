"""A step's conversation box in the player, and the conversation on the console's session page."""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

CHAT_FLOW = """\
slug: chatty
title: Talk it through
phases:
  - id: phase-1
    title: Your prices
    steps:
      - id: phase-1-step-1
        type: text
        key: day-rate-story
        prompt: How did you set your day rate?
        chat: true
      - id: phase-1-step-2
        type: boolean
        key: raised
        prompt: Have you raised it this year?
"""


def sign_in(page: Page, server, email: str, password: str) -> None:
    page.goto(server.url("/admin/login"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_a_chat_step_keeps_the_learners_notes_and_the_console_shows_them(
    live_server, new_page, screenshot, tmp_path
):
    document = tmp_path / "chatty.yaml"
    document.write_text(CHAT_FLOW)
    live_server.cli("flow", "push", "demo", str(document), "--publish")

    page = new_page()
    page.goto(live_server.url("/play/demo/chatty"))
    page.get_by_role("button", name="Start").click()
    expect(page.locator("form[data-step-id='phase-1-step-1']")).to_be_visible()
    chat = page.locator("#chat")
    expect(chat).to_be_visible()
    expect(chat.get_by_text("No notes yet")).to_be_visible()

    # An empty note is refused on the page, and nothing is sent.
    chat.get_by_role("button", name="Send").click()
    expect(chat.get_by_text("Write something first.")).to_be_visible()

    chat.get_by_label("Your note or question").fill("Is 450 too low for a full day?")
    chat.get_by_role("button", name="Send").click()
    expect(chat.locator(".chat-message--user")).to_have_text("YouIs 450 too low for a full day?")
    expect(chat.get_by_label("Your note or question")).to_have_value("")

    stored = json.loads(
        page.evaluate("() => window.localStorage.getItem('mentorflow.player:demo:chatty')")
    )
    session_id = stored["session_id"]
    status, body = live_server.call(
        "POST",
        f"/v1/orgs/demo/sessions/{session_id}/messages",
        live_server.sk,
        {
            "role": "assistant",
            "content": "Not for your style: try 600.",
            "step_id": "phase-1-step-1",
        },
    )
    assert status == 201, body

    # A reload reads the conversation back from the server, the mentor's reply included.
    page.reload()
    expect(chat.locator(".chat-message")).to_have_count(2)
    expect(chat.locator(".chat-message--assistant")).to_contain_text("Not for your style")
    screenshot(page, "chat-step")

    page.locator("form.step textarea, form.step input").first.fill("Copied a friend's rate.")
    page.locator("form.step button[type=submit]").click()
    expect(page.locator("form[data-step-id='phase-1-step-2']")).to_be_visible()
    expect(page.locator("#chat")).to_have_count(0)  # that step declares no chat

    console = new_page()
    password = json.loads((live_server.instance / "demo.json").read_text())["staff_password"]
    sign_in(console, live_server, "mentor@demo.example", password)
    console.goto(live_server.url(f"/admin/sessions/{session_id}"))
    beside = console.locator("#conversation-phase-1-step-1")
    expect(beside).to_contain_text("Is 450 too low for a full day?")
    expect(beside).to_contain_text("Not for your style: try 600.")
    timeline = console.locator("#timeline")
    expect(timeline.locator("tr.mf-message-row")).to_have_count(2)
    expect(timeline).to_contain_text("Copied a friend's rate.")
    screenshot(console, "console-conversation")
