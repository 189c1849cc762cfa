"""Browser fixtures: Debian's chromium, driven by playwright, against a real `mentorflow serve`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import free_port, service_missing

CHROMIUM = Path("/usr/bin/chromium")
# Checked to work on these machines; never `playwright install`, which downloads a browser.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
EVERY_STEP_FLOW = Path(__file__).resolve().parent / "every-step-type.yaml"
MENTORFLOW = str(Path(sys.executable).parent / "mentorflow")
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


class LiveServer:
    """A `mentorflow serve` (gunicorn) on a free port, over a SQLite instance of its own."""

    def __init__(self, instance: Path) -> None:
        self.instance = instance
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MENTORFLOW_INSTANCE_PATH": str(instance),
            "MENTORFLOW_WEB_CONCURRENCY": "2",
        }
        for name in ("MENTORFLOW_DATABASE_URL", "MENTORFLOW_BROKER_URL"):
            self.env.pop(name, None)
        self.process: subprocess.Popen | None = None
        self.pk = self.sk = ""

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [MENTORFLOW, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise AssertionError(f"mentorflow {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def seed(self) -> None:
        self.cli("db", "upgrade")
        printed = self.cli("demo", "--base-url", self.base_url)
        self.pk = re.search(r"publishable key +(pk_\S+)", printed).group(1)
        self.sk = re.search(r"secret key +(sk_\S+)", printed).group(1)
        self.cli("flow", "push", "demo", str(EVERY_STEP_FLOW), "--publish")

    def start(self) -> None:
        log = (self.instance / "server.log").open("ab")
        self.process = subprocess.Popen(
            [MENTORFLOW, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server did not come up within 30 s; see {self.instance}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)

    def url(self, path: str) -> str:
        return self.base_url + path

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """Call the API as an outside client; return the status and the decoded body."""
        request = urllib.request.Request(
            self.url(path),
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"null")

    def session(self, session_id: str) -> dict[str, Any]:
        """Return a session as the server holds it (read with the demo's secret key)."""
        status, body = self.call("GET", f"/v1/orgs/demo/sessions/{session_id}", self.sk)
        assert status == 200, body
        return body


@pytest.fixture(scope="session")
def live_server(chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server with the demo seeded and the every-step-type flow published."""
    # Only the browser talks to it: without chromium, skip before seeding a server.
    server = LiveServer(tmp_path_factory.mktemp("player-instance"))
    server.seed()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium(pytestconfig: pytest.Config) -> Iterator[Any]:
    """Headless Debian chromium, launched once for the whole run."""
    if not CHROMIUM.is_file():
        service_missing(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("the playwright package is not installed")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
    except Exception:
        playwright.stop()
        raise
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Callable[..., Any]]:
    """Open pages in a fresh browser context (its own localStorage) at a named viewport.

    Script errors on any page fail the test.
    """
    contexts: list[Any] = []
    errors: list[str] = []

    def open_page(viewport: str = "desktop", context: Any = None) -> Any:
        if context is None:
            context = chromium.new_context(viewport=VIEWPORTS[viewport])
            context.set_default_timeout(10_000)
            contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"script errors in the page: {errors}"


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """Save a full-page screenshot as test-output/screenshots/<test>--<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test_name = request.node.name

    def save(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{test_name}--{name}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path

    return save
