"""A learner's session survives a restart of the real server (gunicorn)."""

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
from pathlib import Path

import pytest

from support import POSTGRES_URL, free_port, recreate_postgres_database

MENTORFLOW = str(Path(sys.executable).parent / "mentorflow")


def call(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Server:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port, self.process = env, port, None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MENTORFLOW, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the server did not come up within 30 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def server_env(backend, tmp_path):
    env = {
        **os.environ,
        "MENTORFLOW_INSTANCE_PATH": str(tmp_path),
        "MENTORFLOW_WEB_CONCURRENCY": "2",
    }
    if backend == "postgresql":
        env["MENTORFLOW_DATABASE_URL"] = recreate_postgres_database(POSTGRES_URL + "_server")
    else:
        env.pop("MENTORFLOW_DATABASE_URL", None)
    env["PORT"] = str(free_port())
    subprocess.run([MENTORFLOW, "db", "upgrade"], env=env, check=True, capture_output=True)
    demo = subprocess.run(
        [MENTORFLOW, "demo", "--base-url", f"http://127.0.0.1:{env['PORT']}"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    env["PK"] = re.search(r"publishable key (pk_\S+)", demo.stdout).group(1)
    env["WALKTHROUGH"] = demo.stdout.split("(paste into a shell):", 1)[1]
    return env


def test_printed_walkthrough_completes_the_demo_flow(server_env):
    server = Server(server_env, int(server_env["PORT"]))
    server.start()
    try:
        walk = subprocess.run(
            ["bash", "-e", "-c", server_env["WALKTHROUGH"]],
            capture_output=True,
            text=True,
            timeout=120,
            env=server_env,
        )
    finally:
        server.stop()
    assert walk.returncode == 0, walk.stderr
    lines = walk.stdout.strip().splitlines()
    assert lines[-3] == "(100, None)"
    assert lines[-2] == "('completed', {'completed': 16, 'percent': 100, 'total': 16})"
    assert lines[-1] == "['phase-1', 'phase-2', 'phase-3', 'phase-4']"


def test_session_survives_a_server_restart(server_env):
    port = int(server_env["PORT"])
    server = Server(server_env, port)
    api = f"http://127.0.0.1:{port}/v1/orgs/demo"
    server.start()
    try:
        status, created = call("POST", f"{api}/flows/rafael-tats/sessions", server_env["PK"], {})
        assert status == 201
        session_id, token = created["session"]["id"], created["token"]
        first = created["step"]
        status, state = call(
            "POST",
            f"{api}/sessions/{session_id}/steps",
            token,
            {"step_id": first["id"], "answer": first["options"][-1]["value"]},
        )
        assert status == 200
        server.stop()
        server.start()
        status, refreshed = call("GET", f"{api}/sessions/{session_id}", token)
        assert status == 200
        assert refreshed == state
        assert refreshed["session"]["answers"] == {first["key"]: first["options"][-1]["value"]}
    finally:
        server.stop()
