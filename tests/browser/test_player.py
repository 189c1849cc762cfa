"""The player page in headless chromium, against a real server and the demo flow."""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import Page, expect

from mentorflow.admin.player import embed_snippet

DEMO = "/play/demo/rafael-tats"
STORAGE_KEY = "mentorflow.player:demo:rafael-tats"
GOAL = "Booked two months out at a day rate that pays for the quiet weeks."
FULL_DAY = "What do you charge for a full-day session?"
A_YEAR_FROM_NOW = "Where do you want your tattoo business to be a year from now?"
BLOCKER = "What is the one thing holding you back most right now?"


def expect_step(page: Page, step_id: str) -> None:
    expect(page.locator(f"form[data-step-id='{step_id}']")).to_be_visible()


def click_continue(page: Page) -> None:
    page.locator("form.step button[type=submit]").click()


def start(page: Page, url: str, name: str | None = None) -> None:
    page.goto(url)
    if name:
        page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Start").click()


def saved_storage(page: Page) -> dict[str, Any]:
    """Return everything the page keeps in localStorage, decoded."""
    raw = page.evaluate("() => Object.fromEntries(Object.entries(window.localStorage))")
    return {key: json.loads(value) for key, value in raw.items()}


def session_id(page: Page, key: str = STORAGE_KEY) -> str:
    return saved_storage(page)[key]["session_id"]


def record_responses(page: Page) -> list[tuple[str, str, int]]:
    """Collect (method, last path segment, status) of every API response the page receives."""
    seen: list[tuple[str, str, int]] = []

    def record(response: Any) -> None:
        if "/v1/" in response.url:
            seen.append((response.request.method, response.url.rsplit("/", 1)[-1], response.status))

    page.on("response", record)
    return seen


def hear_nothing_live(page: Page) -> None:
    """Cut the page off from live updates: no stream ticket, no conditional re-read."""
    page.route("**/stream-tickets", lambda route: route.abort())

    def no_polls(route: Any) -> None:
        if route.request.headers.get("if-none-match"):
            route.abort()
        else:
            route.continue_()

    page.route("**/v1/orgs/*/sessions/*", no_polls)


def test_answers_survive_a_reload_and_back_shows_the_stored_answer(
    live_server, new_page, screenshot
):
    page = new_page()
    page.goto(live_server.url(DEMO))  # no ?key=: the demo org's convenience
    expect(page.get_by_role("heading", name="Before we start")).to_be_visible()
    screenshot(page, "01-start")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_role("button", name="Start").click()

    expect_step(page, "phase-1-step-1")
    page.get_by_label("About a month").check()
    click_continue(page)
    expect_step(page, "phase-1-step-2")
    page.get_by_label(FULL_DAY).fill("450")
    click_continue(page)
    expect_step(page, "phase-1-step-3")
    page.get_by_label(A_YEAR_FROM_NOW).fill(GOAL)
    click_continue(page)
    expect_step(page, "phase-1-step-4")
    expect(page.locator("#progress-label")).to_have_text("Step 4 of 16 · 18% complete")

    storage = saved_storage(page)
    assert list(storage) == [STORAGE_KEY]
    assert set(storage[STORAGE_KEY]) == {"session_id", "token"}

    page.reload()
    expect_step(page, "phase-1-step-4")
    expect(page.get_by_label(BLOCKER)).to_have_value("")
    expect(page.locator("#progress-label")).to_have_text("Step 4 of 16 · 18% complete")
    screenshot(page, "02-after-reload")
    server = live_server.session(storage[STORAGE_KEY]["session_id"])["session"]
    assert server["current_step_id"] == "phase-1-step-4"
    assert server["answers"] == {"booking-status": "booked-1-month", "day-rate": 450, "goal": GOAL}
    assert server["name"] == "Ada"

    page.get_by_role("button", name="Back").click()
    expect_step(page, "phase-1-step-3")
    expect(page.get_by_label(A_YEAR_FROM_NOW)).to_have_value(GOAL)
    page.get_by_role("button", name="Back").click()
    expect_step(page, "phase-1-step-2")
    expect(page.get_by_label(FULL_DAY)).to_have_value("450")

    page.reload()  # the server's stored answer, not anything the page remembered
    expect_step(page, "phase-1-step-2")
    expect(page.get_by_label(FULL_DAY)).to_have_value("450")
    expect(page.locator("#progress-label")).to_have_text("Step 2 of 16 · 6% complete")
    screenshot(page, "03-back-prefilled")
    page.get_by_role("button", name="Back").click()
    expect_step(page, "phase-1-step-1")
    expect(page.get_by_label("About a month")).to_be_checked()
    assert live_server.session(session_id(page))["session"]["answers"]["day-rate"] == 450


def test_a_bad_answer_shows_the_error_next_to_the_field_and_changes_nothing(
    live_server, new_page, screenshot
):
    page = new_page("phone")
    start(page, live_server.url(DEMO))
    expect_step(page, "phase-1-step-1")
    click_continue(page)  # nothing chosen
    expect(page.locator(".question .field-error")).to_have_text("Your answer is required.")
    page.get_by_label("A couple of weeks").check()
    click_continue(page)
    expect_step(page, "phase-1-step-2")
    before = live_server.session(session_id(page))

    field = page.get_by_label(FULL_DAY)
    field.fill("-5")
    click_continue(page)
    error = page.locator("form[data-step-id='phase-1-step-2'] .question .field-error")
    expect(error).to_have_text("Your answer must be at least 0.")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    assert error.get_attribute("id") in field.get_attribute("aria-describedby").split()
    screenshot(page, "error-next-to-field")
    assert live_server.session(session_id(page)) == before

    field.fill("380")
    click_continue(page)
    expect_step(page, "phase-1-step-3")
    assert live_server.session(session_id(page))["session"]["answers"]["day-rate"] == 380


def test_a_stale_tab_rerenders_where_the_session_is(live_server, new_page, screenshot):
    first = new_page()
    start(first, live_server.url(DEMO))
    expect_step(first, "phase-1-step-1")
    second = new_page(context=first.context)  # same localStorage: the same session
    # A tab that hears nothing live (streams down, and between two polls): it goes stale.
    hear_nothing_live(second)
    responses = record_responses(second)
    second.goto(live_server.url(DEMO))
    expect_step(second, "phase-1-step-1")

    first.get_by_label("About a month").check()
    click_continue(first)
    expect_step(first, "phase-1-step-2")

    second.get_by_label("3+ months out").check()
    click_continue(second)
    expect_step(second, "phase-1-step-2")
    expect(second.locator("#status")).to_contain_text("moved on in another window")
    # A stale step is a 409 whose body carries where the session is: no refetch needed.
    assert ("POST", "steps", 409) in responses
    answers = live_server.session(session_id(first))["session"]["answers"]
    assert answers == {"booking-status": "booked-1-month"}
    screenshot(second, "after-stale-submit")

    first.get_by_role("button", name="Back").click()
    expect_step(first, "phase-1-step-1")
    second.get_by_role("button", name="Back").click()  # the session is no longer at step 2
    expect_step(second, "phase-1-step-1")
    expect(second.locator("#status")).to_contain_text("moved on in another window")
    assert ("POST", "back", 409) in responses
    expect(second.get_by_label("About a month")).to_be_checked()
    screenshot(second, "after-stale-back")


def test_a_lost_response_is_retried_with_the_same_idempotency_key(
    live_server, new_page, screenshot
):
    page = new_page()
    start(page, live_server.url(DEMO))
    expect_step(page, "phase-1-step-1")
    version = live_server.session(session_id(page))["session"]["version"]
    keys: list[str] = []
    replayed: list[str | None] = []

    def lose_the_first_response(route: Any) -> None:
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()  # the server commits the step...
            route.abort("connectionreset")  # ...and its answer never arrives
        else:
            route.continue_()

    def record_replay(response: Any) -> None:
        if response.url.endswith("/steps"):
            replayed.append(response.headers.get("idempotent-replayed"))

    page.route("**/steps", lose_the_first_response)
    page.on("response", record_replay)
    page.get_by_label("About a month").check()
    click_continue(page)
    expect(page.get_by_role("alert")).to_contain_text("couldn't save your answer")
    expect(page.get_by_label("About a month")).to_be_checked()  # the form is kept
    screenshot(page, "network-error")

    page.get_by_role("button", name="Try again").click()
    expect_step(page, "phase-1-step-2")
    assert len(keys) == 2 and keys[0] == keys[1]
    assert replayed == ["true"]
    server = live_server.session(session_id(page))["session"]
    assert server["version"] == version + 1  # applied once
    assert server["answers"] == {"booking-status": "booked-1-month"}


def test_a_lost_start_is_retried_with_the_same_idempotency_key_by_the_typed_client(
    live_server, new_page
):
    page = new_page()
    scripts: list[str] = []
    keys: list[str] = []

    def lose_the_first_start(route: Any) -> None:
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()  # the server starts the session...
            route.abort("connectionreset")  # ...and its answer never arrives
        else:
            route.continue_()

    page.on("request", lambda request: scripts.append(request.url.rsplit("/", 1)[-1]))
    page.route("**/sessions", lose_the_first_start)
    start(page, live_server.url(DEMO), name="Ada")
    expect(page.get_by_role("alert")).to_contain_text("couldn't reach the server")
    page.get_by_role("button", name="Try again").click()
    expect_step(page, "phase-1-step-1")
    assert len(keys) == 2 and keys[0] == keys[1]
    # The player talks to the API through the same module any page can import.
    assert "mentorflow-client.js" in scripts


def test_answers_given_offline_are_sent_as_one_batch_when_back_online(
    live_server, new_page, screenshot
):
    page = new_page()
    start(page, live_server.url(DEMO))
    expect_step(page, "phase-1-step-1")
    version = live_server.session(session_id(page))["session"]["version"]
    seen = record_responses(page)

    page.context.set_offline(True)
    page.get_by_label("About a month").check()
    click_continue(page)
    # The next step comes from the published definition, not from the server.
    expect_step(page, "phase-1-step-2")
    expect(page.locator("#status")).to_contain_text("1 answer kept on this device")
    page.get_by_label(FULL_DAY).fill("450")
    click_continue(page)
    expect_step(page, "phase-1-step-3")
    page.get_by_label(A_YEAR_FROM_NOW).fill(GOAL)
    click_continue(page)
    expect_step(page, "phase-1-step-4")
    expect(page.locator("#status")).to_contain_text("3 answers kept on this device")
    screenshot(page, "offline-queue")
    # Only the answers join the id and token in storage; nothing reached the server yet.
    queued = saved_storage(page)[STORAGE_KEY]
    assert set(queued) == {"session_id", "token", "queue"}
    assert [(item["step_id"], item["answer"]) for item in queued["queue"]] == [
        ("phase-1-step-1", "booked-1-month"),
        ("phase-1-step-2", 450),
        ("phase-1-step-3", GOAL),
    ]
    assert live_server.session(session_id(page))["session"]["version"] == version

    page.context.set_offline(False)
    status = page.locator("#status")
    expect(status).to_contain_text("Back online: 3 answers given offline were saved")
    expect_step(page, "phase-1-step-4")
    screenshot(page, "back-online")
    server = live_server.session(session_id(page))["session"]
    assert server["completed_step_ids"] == ["phase-1-step-1", "phase-1-step-2", "phase-1-step-3"]
    assert server["answers"] == {"booking-status": "booked-1-month", "day-rate": 450, "goal": GOAL}
    assert server["version"] == version + 3  # one step event each, in order
    # The answers went as one batch and nothing else wrote one (the live stream may take a
    # fresh ticket when the connection comes back: that writes no answer).
    answer_posts = [e for e in seen if e[0] == "POST" and e[1] != "stream-tickets"]
    assert answer_posts == [("POST", "batch", 200)]
    assert set(saved_storage(page)[STORAGE_KEY]) == {"session_id", "token"}


def test_completing_the_flow_shows_the_completion_screen(live_server, new_page, screenshot):
    page = new_page("phone")
    start(page, live_server.url(DEMO), name="Rafael")
    expect_step(page, "phase-1-step-1")
    page.get_by_label("3+ months out").check()  # skips the content phase
    click_continue(page)
    page.get_by_label(FULL_DAY).fill("900")
    click_continue(page)
    page.get_by_label(A_YEAR_FROM_NOW).fill(GOAL)
    click_continue(page)
    page.get_by_label(BLOCKER).fill("Fear of empty weeks.")
    click_continue(page)
    expect_step(page, "phase-1-step-5")
    click_continue(page)  # optional: left empty
    expect_step(page, "phase-3-step-1")
    expect(page.locator("#phase-title")).to_have_text("Time")
    page.get_by_role("radio", name="7", exact=True).check()
    click_continue(page)
    page.get_by_label("What is the hardest part of making content for you?").fill("Filming.")
    click_continue(page)
    page.get_by_label("Yes, and I enjoy it").check()
    click_continue(page)
    page.get_by_label("More than a year ago").check()
    click_continue(page)
    page.get_by_label('A client says "that is too expensive."').fill("It is worth it.")
    click_continue(page)
    page.get_by_label("What scares you most about charging more?").fill("Losing regulars.")
    click_continue(page)
    expect_step(page, "phase-4-step-4")
    expect(page.get_by_label("Name")).to_have_value("Rafael")
    page.get_by_label("Email").fill("rafael@example.com")
    expect(page.get_by_role("button", name="Finish")).to_be_visible()
    screenshot(page, "01-contact")
    page.get_by_role("button", name="Finish").click()

    expect(page.get_by_role("heading", name="You're all done")).to_be_visible()
    expect(page.locator("#progress-label")).to_have_text("12 of 12 steps · 100% complete")
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    screenshot(page, "02-done")
    server = live_server.session(session_id(page))
    assert server["step"] is None
    assert server["session"]["status"] == "completed"
    assert server["session"]["progress"] == {"completed": 12, "total": 12, "percent": 100}
    assert server["session"]["email"] == "rafael@example.com"

    page.reload()
    expect(page.get_by_role("heading", name="You're all done")).to_be_visible()
    page.get_by_role("button", name="Start over").click()
    page.get_by_role("button", name="Start over").click()  # the confirmation
    expect(page.get_by_role("heading", name="Before we start")).to_be_visible()
    assert saved_storage(page) == {}


def test_every_step_type_renders_and_answers(live_server, new_page, screenshot):
    page = new_page("phone")
    shots = iter(range(1, 100))

    def shot(name: str) -> None:
        screenshot(page, f"{next(shots):02d}-{name}")

    start(page, live_server.url(f"/play/demo/every-step?key={live_server.pk}"), name="Grace")

    expect_step(page, "welcome")
    expect(page.locator(".body p")).to_have_count(2)
    expect(page.get_by_role("button", name="Back")).to_have_count(0)
    shot("info")
    click_continue(page)

    expect_step(page, "intro-video")
    video = page.locator("video")
    expect(video).to_have_attribute("src", "https://video.example.invalid/intro.mp4")
    expect(video).to_have_attribute("controls", "")
    shot("video")
    click_continue(page)

    expect_step(page, "pick-one")
    page.get_by_label("Realism").check()
    shot("single_choice")
    click_continue(page)

    expect_step(page, "pick-some")
    expect(page.locator(".question .hint")).to_have_text("Choose 1 to 2.")
    page.get_by_label("Instagram").check()
    page.get_by_label("Referrals from clients").check()
    expect(page.get_by_label("TikTok")).to_be_disabled()  # max_selected reached
    expect(page.get_by_label("Walk-ins")).to_be_disabled()
    shot("multi_choice")
    click_continue(page)

    expect_step(page, "yes-no")
    page.get_by_label("Yes").check()
    shot("boolean")
    click_continue(page)

    expect_step(page, "short-text")
    studio = page.get_by_label("What is your studio called?")
    expect(studio).to_have_attribute("maxlength", "60")
    studio.fill("Ink & Iron")
    shot("text")
    click_continue(page)

    expect_step(page, "long-text")
    story = page.get_by_label("How did you get started?")
    expect(story).to_have_attribute("maxlength", "500")
    expect(page.locator(".question .hint")).to_have_text("Optional: you can leave this empty.")
    story.fill("An apprenticeship.")
    expect(page.locator(".counter")).to_have_text("18 / 500")
    shot("long_text")
    story.fill("")  # optional: sent as no answer
    click_continue(page)

    expect_step(page, "a-number")
    rate = page.get_by_label("What is your hourly rate?")
    expect(rate).to_have_attribute("min", "20")
    expect(rate).to_have_attribute("max", "1000")
    rate.fill("85.5")
    shot("number")
    click_continue(page)

    expect_step(page, "a-scale")
    expect(page.get_by_role("radio")).to_have_count(5)
    page.get_by_role("radio", name="4", exact=True).check()
    shot("scale")
    click_continue(page)

    expect_step(page, "a-wide-scale")
    slider = page.get_by_label("How confident are you about your prices, from 0 to 100?")
    expect(slider).to_have_attribute("type", "range")
    slider.fill("70")
    expect(page.locator("output")).to_have_text("70")
    shot("scale-range")
    click_continue(page)

    expect_step(page, "an-email")
    email = page.get_by_label("Which email do clients write to?")
    email.fill("not an email")
    click_continue(page)
    expect(page.locator(".question .field-error")).to_have_text(
        "Your answer must be a valid email address."
    )
    email.fill("hello@inkandiron.example")
    shot("email")
    click_continue(page)

    expect_step(page, "a-phone")
    page.get_by_label("And the studio's phone number?").fill("+1 555 010 0199")
    shot("phone")
    click_continue(page)

    expect_step(page, "contact")
    expect(page.get_by_label("Name")).to_have_value("Grace")
    page.get_by_label("Email").fill("grace@")
    page.get_by_label("Phone").fill("555 010 0142")
    click_continue(page)
    email_error = page.get_by_label("Email").locator("xpath=following-sibling::p[1]")
    expect(email_error).to_have_text("Email must be a valid email address.")
    expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name")).not_to_have_attribute("aria-invalid", "true")
    shot("contact-error")
    page.get_by_label("Email").fill("grace@example.com")
    click_continue(page)

    expect(page.get_by_role("heading", name="You're all done")).to_be_visible()
    expect(page.get_by_text("Thank you, Grace!")).to_be_visible()
    shot("done")
    state = live_server.session(session_id(page, "mentorflow.player:demo:every-step"))
    assert state["session"]["answers"] == {
        "style": "realism",
        "channels": ["instagram", "referrals"],
        "has-waitlist": True,
        "studio-name": "Ink & Iron",
        "story": None,
        "hourly-rate": 85.5,
        "energy": 4,
        "confidence": 70,
        "work-email": "hello@inkandiron.example",
        "studio-phone": "+1 555 010 0199",
        "contact": {"name": "Grace", "email": "grace@example.com", "phone": "555 010 0142"},
    }


def test_the_embed_snippet_runs_the_player_in_another_site(live_server, new_page, screenshot):
    page = new_page()
    snippet = embed_snippet(
        live_server.base_url, "demo", "rafael-tats", live_server.pk, title="Pricing check-up"
    )
    page.set_content(f"<h1>Studio site</h1><p>Check your prices:</p>{snippet}")
    player = page.frame_locator("iframe[title='Pricing check-up']")
    player.get_by_role("button", name="Start").click()
    expect(player.locator("form[data-step-id='phase-1-step-1']")).to_be_visible()
    screenshot(page, "embedded")


def test_pages_explain_a_missing_or_wrong_key(live_server, new_page, screenshot):
    live_server.cli("org", "create", "studio-two", "--name", "Studio Two")
    other_pk = live_server.cli("key", "create", "studio-two", "--kind", "publishable")
    other_pk = other_pk.strip().splitlines()[-1]
    page = new_page("phone")

    response = page.goto(live_server.url("/play/studio-two/rafael-tats"))
    assert response.status == 400
    expect(page.get_by_role("heading", name="This page needs a publishable key")).to_be_visible()
    expect(page.locator(".snippet")).to_contain_text(
        f'src="{live_server.base_url}/play/studio-two/rafael-tats?key=pk_'
    )
    screenshot(page, "missing-key")

    cases = {
        f"/play/demo/rafael-tats?key={live_server.sk}": (400, "Only a publishable key"),
        "/play/demo/rafael-tats?key=pk_unknown": (403, "This key is not accepted"),
        f"/play/studio-two/rafael-tats?key={live_server.pk}": (404, "There is no such flow"),
        f"/play/demo/rafael-tats?key={other_pk}": (404, "There is no such flow"),
        "/play/demo/no-such-flow": (404, "There is no such flow"),
        "/play/nobody/rafael-tats?key=pk_unknown": (403, "This key is not accepted"),
    }
    for path, (status, heading) in cases.items():
        response = page.goto(live_server.url(path))
        assert response.status == status, path
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    screenshot(page, "unknown-flow")


def test_embed_snippet_is_an_escaped_iframe():
    snippet = embed_snippet("https://flows.example/", "demo", "rafael-tats", "pk_a&b", title='"Hi"')
    assert snippet.startswith('<iframe src="https://flows.example/play/demo/rafael-tats?key=pk_a')
    assert "key=pk_a%26b" in snippet
    assert 'title="&quot;Hi&quot;"' in snippet
    assert 'loading="lazy"' in snippet
