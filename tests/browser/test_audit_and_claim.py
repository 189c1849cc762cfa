"""In headless chromium: the Audit page shows a revoked key; the player claims its anonymous
session when the embedding page hands it a learner token."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Page, expect

DEMO_EMAIL = "mentor@demo.example"
DEMO = "/play/demo/rafael-tats"
STORAGE_KEY = "mentorflow.player:demo:rafael-tats"


def demo_password(server: Any) -> str:
    return json.loads((server.instance / "demo.json").read_text())["staff_password"]


def sign_in(page: Page, server: Any) -> None:
    page.goto(server.url("/admin/"))
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.get_by_label("Email").fill(DEMO_EMAIL)
    page.get_by_label("Password").fill(demo_password(server))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))


def test_an_admin_revokes_a_key_and_sees_it_on_the_audit_page(live_server, new_page, screenshot):
    page = new_page()
    sign_in(page, live_server)
    page.goto(live_server.url("/admin/settings/keys"))
    page.locator("#create-key select").select_option("secret")
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key").inner_text()
    prefix = new_key[:11]
    page.goto(live_server.url("/admin/settings/keys"))
    row = page.locator(f"tr[data-prefix='{prefix}']")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(f"tr[data-prefix='{prefix}']")).to_contain_text("revoked")

    page.get_by_role("link", name="Audit").click()
    expect(page).to_have_url(re.compile(r"/admin/audit/"))
    revoked = page.locator("#audit tr[data-action='key.revoked']").first
    expect(revoked).to_contain_text(DEMO_EMAIL)
    expect(revoked).to_contain_text(f"key:{prefix}")
    page.locator("#action").select_option("key.revoked")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit tbody tr")).to_have_count(
        page.locator("#audit tr[data-action='key.revoked']").count()
    )
    expect(page.locator("#audit tr[data-action='key.created']")).to_have_count(0)
    screenshot(page, "audit")
    # The secret itself is nowhere on the page.
    assert new_key not in page.content()
    status, _ = live_server.call("GET", "/v1/orgs/demo/flows/rafael-tats", new_key)
    assert status == 401


def test_the_player_claims_its_session_when_handed_a_learner_token(
    live_server, new_page, screenshot
):
    page = new_page()
    page.goto(live_server.url(DEMO))
    page.get_by_role("button", name="Start").click()
    form = page.locator("form.step[data-step-id='phase-1-step-1']")
    expect(form).to_be_visible()
    form.locator("input[type=radio]").first.check()
    form.locator("button[type=submit]").click()
    expect(page.locator("form[data-step-id='phase-1-step-2']")).to_be_visible()
    saved = json.loads(page.evaluate(f"() => localStorage.getItem('{STORAGE_KEY}')"))
    assert saved["token"].startswith("st_")

    status, minted = live_server.call(
        "POST", "/v1/orgs/demo/learners/browser-user-1/tokens", live_server.sk, {}
    )
    assert status == 201
    # What the embedding page does once its user signs in (here the player's own window).
    page.evaluate(
        "(token) => window.postMessage({type: 'mentorflow:learner-token', token}, location.origin)",
        minted["token"],
    )
    expect(page.locator("#status")).to_contain_text("saved to your account")
    expect(page.locator("form[data-step-id='phase-1-step-2']")).to_be_visible()
    stored = json.loads(page.evaluate(f"() => localStorage.getItem('{STORAGE_KEY}')"))
    assert stored == {"session_id": saved["session_id"], "token": minted["token"]}
    status, listed = live_server.call(
        "GET", "/v1/orgs/demo/learners/browser-user-1/sessions", live_server.sk
    )
    assert status == 200
    assert [item["id"] for item in listed["items"]] == [saved["session_id"]]
    screenshot(page, "claimed")

    # Another device of the same learner resumes where this one is.
    status, resumed = live_server.call(
        "POST", "/v1/orgs/demo/flows/rafael-tats/sessions", minted["token"], {"resume": True}
    )
    assert status == 200 and resumed["session"]["id"] == saved["session_id"]
