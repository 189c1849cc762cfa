"""An admin adds a webhook, sees a delivery, replays it; erases a learner with confirmation.

A server and a worker of their own (the receiver is the local recorder, so private addresses
are allowed for this instance only).
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from standardwebhooks import Webhook
from test_console_in_browser import demo_password, sign_in

MENTORFLOW = str(Path(sys.executable).parent / "mentorflow")
# The browser conftest's server class, loaded under a name of its own (every conftest is the
# module "conftest", so importing it by that name would depend on collection order).
_spec = importlib.util.spec_from_file_location(
    "browser_fixtures", Path(__file__).with_name("conftest.py")
)
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
LiveServer = _fixtures.LiveServer


@pytest.fixture
def hook_server(chromium, tmp_path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path)
    server.env["MENTORFLOW_ALLOW_PRIVATE_SINKS"] = "1"
    server.env["MENTORFLOW_SWEEP_INTERVAL_SECONDS"] = "1"
    server.seed()
    server.start()
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [MENTORFLOW, "worker", "--concurrency", "1"],
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield server
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        server.stop()


def reload_until(page: Page, locator: str, timeout: float = 30_000) -> None:
    """Reload the page until ``locator`` shows (the worker delivers in the background)."""
    for _ in range(int(timeout / 500)):
        if page.locator(locator).count():
            return
        page.wait_for_timeout(500)
        page.reload()
    expect(page.locator(locator)).to_be_visible()


def test_admin_adds_a_webhook_replays_a_delivery_and_erases_a_learner(
    hook_server, recorder, new_page, screenshot
):
    server = hook_server
    page = new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, server, "mentor@demo.example", demo_password(server))

    page.goto(server.url("/admin/webhooks/"))
    page.get_by_label("URL").fill(recorder.url + "/hooks/browser")
    page.get_by_label("Description").fill("CRM")
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.locator("#new-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    screenshot(page, "webhooks-01-secret-shown-once")
    page.get_by_role("link", name="Done: to the endpoint").click()

    status, body = server.call(
        "POST",
        "/v1/orgs/demo/flows/rafael-tats/sessions",
        server.sk,
        {"external_user_id": "erase-me", "name": "Erin Erase", "email": "erin@example.com"},
    )
    assert status == 201, body
    session_id = body["session"]["id"]
    recorder.wait_for(lambda r: r.webhook_requests("/hooks/browser", accepted_only=True), 30)
    reload_until(page, "#deliveries tr[data-status='delivered']")
    expect(page.locator("#attempts")).to_contain_text("accepted")
    screenshot(page, "webhooks-02-delivered")

    row = page.locator("#deliveries tr[data-status='delivered']").first
    event_id = row.get_attribute("data-event")
    row.get_by_role("button", name="Replay").click()
    expect(page.get_by_text(f"Event {event_id} is being sent again")).to_be_visible()
    recorder.wait_for(
        lambda r: (
            [q.headers["webhook-id"] for q in r.webhook_requests("/hooks/browser")].count(event_id)
            == 2
        ),
        30,
    )
    for request in recorder.webhook_requests("/hooks/browser"):
        Webhook(secret).verify(request.raw_body, request.headers)

    page.goto(server.url("/admin/learners/?q=erase-me"))
    page.get_by_role("link", name="erase-me").first.click()
    page.get_by_label("Type the learner's id to confirm").fill("erase-me")
    page.get_by_role("button", name="Erase learner").click()
    expect(page).to_have_url(re.compile(r"/admin/jobs/\d+"))
    expect(page.locator("#erasure-receipt")).to_contain_text("sessions", timeout=30_000)
    screenshot(page, "webhooks-03-erasure-receipt")
    status, _ = server.call("GET", f"/v1/orgs/demo/sessions/{session_id}", server.sk)
    assert status == 404
    recorder.wait_for(
        lambda r: any(
            q.body["type"] == "learner.erased" for q in r.webhook_requests("/hooks/browser")
        ),
        30,
    )
