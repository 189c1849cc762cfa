"""A session's live stream against the real server (gunicorn), with Redis and without it."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mentorflow.cli.demo import example_answer
from support import POSTGRES_URL, free_port, recreate_postgres_database
from test_server import MENTORFLOW, Server, call

REDIS_URL = os.environ.get("MENTORFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class LoggedServer(Server):
    """The real server, its output kept in a file (the access log)."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        super().__init__(env, port)
        self.log = log

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [MENTORFLOW, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the server did not come up within 30 s")


class EventStream:
    """An open stream, read by a thread into a queue of events (None once it ends)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        request = urllib.request.Request(url, headers=headers or {})
        self.response = urllib.request.urlopen(request, timeout=30)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if not line:
                    if event:
                        self.events.put(event)
                    event = {}
                elif line.startswith(":"):
                    self.events.put({"comment": line[1:].strip()})
                else:
                    name, _, value = line.partition(": ")
                    event[name] = value
        except (OSError, ValueError, AttributeError):
            pass  # closed by the test (from this other thread) or by the server
        self.events.put(None)

    def next_state(self, timeout: float) -> dict | None:
        """Return the next `state` event within ``timeout`` s (None if none came or it ended)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if event is None:
                self.events.put(None)
                return None
            if event.get("event") == "state":
                return {"id": int(event["id"]), **json.loads(event["data"])}
        return None

    def ended_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.events.get(timeout=left) is None:
                    return True
            except queue.Empty:
                return False
        return False

    def close(self) -> None:
        self.response.close()


@pytest.fixture(scope="module", params=["embedded", "redis"])
def live_server(request, backend, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"stream-{backend}-{request.param}")
    env = {
        **os.environ,
        "MENTORFLOW_INSTANCE_PATH": str(tmp),
        "MENTORFLOW_WEB_CONCURRENCY": "2",
        "MENTORFLOW_WEB_THREADS": "16",
        "MENTORFLOW_STREAM_HEARTBEAT_SECONDS": "1",
        "MENTORFLOW_SECRET_KEY": "stream-test-secret-key-of-32-bytes-or-more",
    }
    if backend == "postgresql":
        env["MENTORFLOW_DATABASE_URL"] = recreate_postgres_database(POSTGRES_URL + "_stream")
    else:
        env.pop("MENTORFLOW_DATABASE_URL", None)
    if request.param == "redis":
        env["MENTORFLOW_BROKER_URL"] = REDIS_URL
    else:
        env.pop("MENTORFLOW_BROKER_URL", None)
    port = free_port()
    subprocess.run([MENTORFLOW, "db", "upgrade"], env=env, check=True, capture_output=True)
    demo = subprocess.run(
        [MENTORFLOW, "demo", "--base-url", f"http://127.0.0.1:{port}"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    keys = {
        "pk": re.search(r"publishable key (pk_\S+)", demo.stdout).group(1),
        "sk": re.search(r"secret key\s+(sk_\S+)", demo.stdout).group(1),
    }
    subprocess.run(
        [MENTORFLOW, "org", "create", "other", "--name", "Other"],
        env=env,
        check=True,
        capture_output=True,
    )
    other = subprocess.run(
        [MENTORFLOW, "key", "create", "other", "--kind", "secret"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    keys["other_sk"] = other.stdout.strip().splitlines()[-1].strip()
    server = LoggedServer(env, port, tmp / "server.log")
    server.start()
    yield server, f"http://127.0.0.1:{port}", keys
    server.stop()


def start(base: str, pk: str, org: str = "demo") -> tuple[str, str, dict]:
    status, created = call("POST", f"{base}/v1/orgs/{org}/flows/rafael-tats/sessions", pk, {})
    assert status == 201, created
    return created["session"]["id"], created["token"], created


def ticket_for(base: str, session_id: str, token: str) -> str:
    status, body = call("POST", f"{base}/v1/orgs/demo/sessions/{session_id}/stream-tickets", token)
    assert status == 201, body
    return body["ticket"]


def answer_current(base: str, session_id: str, token: str, state: dict) -> dict:
    step = state["step"]
    body = {"step_id": step["id"], "answer": example_answer(step)}
    status, after = call("POST", f"{base}/v1/orgs/demo/sessions/{session_id}/steps", token, body)
    assert status == 200, after
    return after


def test_a_commit_reaches_an_open_stream_within_a_second(live_server):
    _server, base, keys = live_server
    session_id, token, created = start(base, keys["pk"])
    stream = EventStream(
        f"{base}/v1/orgs/demo/sessions/{session_id}/stream?ticket="
        + ticket_for(base, session_id, token)
    )
    try:
        first = stream.next_state(timeout=5)
        assert first["id"] == 1 and first["session"]["current_step_id"] == created["step"]["id"]
        state = created
        for _ in range(3):
            committed = time.monotonic()
            state = answer_current(base, session_id, token, state)
            pushed = stream.next_state(timeout=5)
            assert time.monotonic() - committed < 1.0
            assert pushed["id"] == state["session"]["version"]
            assert pushed["session"] == state["session"] and pushed["step"] == state["step"]
    finally:
        stream.close()


def test_the_header_works_for_clients_that_can_send_it_and_last_event_id_resumes(live_server):
    _server, base, keys = live_server
    session_id, token, created = start(base, keys["pk"])
    state = answer_current(base, session_id, token, created)  # version 2
    url = f"{base}/v1/orgs/demo/sessions/{session_id}/stream"
    behind = EventStream(url, {"Authorization": f"Bearer {token}", "Last-Event-ID": "1"})
    current = EventStream(url, {"Authorization": f"Bearer {keys['sk']}", "Last-Event-ID": "2"})
    try:
        # Older than the session: the current state at once.
        caught_up = behind.next_state(timeout=1)
        assert caught_up["id"] == 2 and caught_up["session"] == state["session"]
        # Current: nothing until the next change, which then arrives.
        assert current.next_state(timeout=1.5) is None
        state = answer_current(base, session_id, token, state)
        assert current.next_state(timeout=2)["id"] == 3
    finally:
        behind.close()
        current.close()


def test_another_orgs_session_is_a_404_and_a_ticket_opens_only_its_session(live_server):
    server, base, keys = live_server
    session_id, token, _ = start(base, keys["pk"])
    other_id, _other_token, _ = start(base, keys["pk"])
    url = f"{base}/v1/orgs/other/sessions/{session_id}/stream"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(
            urllib.request.Request(url, headers={"Authorization": f"Bearer {keys['other_sk']}"}),
            timeout=5,
        )
    assert error.value.code == 404
    error.value.close()
    ticket = ticket_for(base, session_id, token)
    for wrong in (
        f"{base}/v1/orgs/demo/sessions/{other_id}/stream?ticket={ticket}",
        f"{base}/v1/orgs/other/sessions/{session_id}/stream?ticket={ticket}",
        f"{base}/v1/orgs/demo/sessions/{session_id}/stream?ticket={ticket[:-4]}AAAA",
    ):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(wrong, timeout=5)
        assert error.value.code in (401, 404), wrong
        assert error.value.headers["Content-Type"] == "application/problem+json"
        error.value.close()
    # The ticket's session: it works, and the access log keeps no usable copy of it.
    stream = EventStream(f"{base}/v1/orgs/demo/sessions/{session_id}/stream?ticket={ticket}")
    assert stream.next_state(timeout=5)["session"]["id"] == session_id
    stream.close()
    time.sleep(0.5)
    log = server.log.read_text()
    assert "/stream?ticket=" in log
    assert ticket not in log and ticket[:40] not in log


def test_a_revoked_or_replaced_credential_closes_the_stream(live_server):
    _server, base, keys = live_server
    status, minted = call("POST", f"{base}/v1/orgs/demo/learners/user-77/tokens", keys["sk"], {})
    assert status == 201, minted
    learner_token = minted["token"]
    session_id, _, _ = start(base, learner_token)
    as_learner = EventStream(
        f"{base}/v1/orgs/demo/sessions/{session_id}/stream?ticket="
        + ticket_for(base, session_id, learner_token)
    )
    other_id, session_token, _ = start(base, keys["pk"])
    as_session = EventStream(
        f"{base}/v1/orgs/demo/sessions/{other_id}/stream",
        {"Authorization": f"Bearer {session_token}"},
    )
    try:
        assert as_learner.next_state(timeout=5) and as_session.next_state(timeout=5)
        assert not as_learner.ended_within(1.5) and not as_session.ended_within(0.1)
        revoke = urllib.request.Request(
            f"{base}/v1/orgs/demo/learners/user-77/tokens",
            method="DELETE",
            headers={"Authorization": f"Bearer {keys['sk']}"},
        )
        assert urllib.request.urlopen(revoke, timeout=5).status == 204
        status, _ = call("POST", f"{base}/v1/orgs/demo/sessions/{other_id}/tokens", keys["sk"])
        assert status == 201
        # Checked again at each heartbeat (1 s here).
        assert as_learner.ended_within(4)
        assert as_session.ended_within(4)
    finally:
        as_learner.close()
        as_session.close()
