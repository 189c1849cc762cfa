"""The API's docs page in headless chromium: Swagger UI from the package, nothing from a CDN."""

from __future__ import annotations

from playwright.sync_api import expect


def test_docs_page_renders_the_document_from_its_own_origin(live_server, new_page, screenshot):
    page = new_page()
    requested: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: console.append(message.text))
    page.goto(live_server.url("/v1/docs"))

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("mentorflow learner API")
    operation = page.locator(
        ".opblock-summary-path[data-path='/v1/orgs/{org}/sessions/{session_id}/steps']"
    )
    expect(operation).to_be_visible()
    path = screenshot(page, "docs")
    assert path.is_file()

    foreign = [
        url
        for url in requested
        if not url.startswith(live_server.base_url) and not url.startswith("data:")
    ]
    assert foreign == []
    assert any(url.endswith("/v1/openapi.json") for url in requested)
    blocked = [text for text in console if "Content Security Policy" in text]
    assert blocked == []


def test_docs_assets_are_only_swagger_uis_files(live_server):
    status, body = live_server.call("GET", "/v1/docs/assets/oauth2-redirect.html", "")
    assert status == 404
    assert body["status"] == 404
