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

from mentorflow.cli.supervisor import where_to_go
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
        env["MENTORFLOW_SECRET_KEY"] = "server-test-secret-key-of-32-bytes-or-more"
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


class Up:
    """``mentorflow up`` on a seeded SQLite instance; its terminal (stdout + stderr) in a file."""

    def __init__(self, tmp_path: Path, *args: str, **settings: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "MENTORFLOW_INSTANCE_PATH": str(tmp_path / "instance"),
            "MENTORFLOW_WEB_CONCURRENCY": "1",
            "MENTORFLOW_WORKER_CONCURRENCY": "1",
            "MENTORFLOW_SWEEP_INTERVAL_SECONDS": "1",
            **{f"MENTORFLOW_{name}": value for name, value in settings.items()},
        }
        for name in ("MENTORFLOW_DATABASE_URL", "MENTORFLOW_BROKER_URL"):
            self.env.pop(name, None)
        base = f"http://127.0.0.1:{self.port}"
        subprocess.run([MENTORFLOW, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        demo = subprocess.run(
            [MENTORFLOW, "demo", "--base-url", base],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.pk = re.search(r"publishable key (pk_\S+)", demo.stdout).group(1)
        self.password = re.search(r"\(mentor@demo\.example / (\S+)\)", demo.stdout).group(1)
        self.log = tmp_path / "terminal.log"
        with self.log.open("w") as terminal:
            self.process = subprocess.Popen(
                [MENTORFLOW, "up", "--port", str(self.port), *args],
                env=self.env,
                cwd=tmp_path,
                stdout=terminal,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, f"up exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output()}"
            time.sleep(0.2)
        return self.output()

    def stop(self) -> int:
        """Ctrl-C, as in a terminal: SIGINT to the whole process group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise


def test_up_says_where_to_go_and_shows_only_warnings_of_worker_and_beat(tmp_path):
    # PostHog on a closed port: the worker must still show that its deliveries fail.
    closed = f"http://127.0.0.1:{free_port()}"
    up = Up(tmp_path, POSTHOG_API_KEY="phc_test", POSTHOG_HOST=closed, ALLOW_PRIVATE_SINKS="1")
    try:
        printed = up.wait_for("mentorflow is up on")
        base = f"http://127.0.0.1:{up.port}"
        block = printed[printed.index("mentorflow is up on") :]
        assert f"console   {base}/admin/   (mentor@demo.example / {up.password})" in block
        assert f"player    {base}/play/demo/rafael-tats" in block
        assert f"API       {base}/v1/orgs/demo\n" in block
        assert "memory   instance/outbox-memory.jsonl" in block
        assert "outbox-posthog" not in block  # PostHog has credentials: nothing goes to a file
        status, _ = call("POST", f"{base}/v1/orgs/demo/flows/rafael-tats/sessions", up.pk, {})
        assert status == 201
        up.wait_for("WARNING mentorflow.delivery.services: delivery of event")
        time.sleep(3)  # three beats of the one-second sweep
    finally:
        code = up.stop()
    printed = up.output()
    assert code == 0, printed
    assert printed.count("mentorflow is up on") == 1
    for routine in ("INFO celery", "Sending due task", "[tasks]", "celery beat v", "No hostname"):
        assert routine not in printed


def test_up_verbose_shows_the_routine_lines_too(tmp_path):
    up = Up(tmp_path, "--verbose")
    try:
        up.wait_for("mentorflow is up on")
        printed = up.wait_for("Sending due task sweep-due-deliveries")
    finally:
        up.stop()
    assert "[tasks]" in printed and "celery beat v" in printed
    assert "warnings and errors only" not in printed


def test_where_to_go_without_the_demo_or_files(tmp_path):
    config = {
        "INSTANCE_PATH": str(tmp_path),
        "SINKS": ["posthog", "memory"],
        "POSTHOG_API_KEY": "phc_x",
        "SUPERMEMORY_API_KEY": "sm_x",
    }
    block = where_to_go("http://[::1]:8000", config, verbose=True)
    assert block.splitlines()[1:] == [
        "mentorflow is up on http://[::1]:8000; Ctrl-C stops the web server, worker and beat",
        "  console   http://[::1]:8000/admin/",
        "  API       http://[::1]:8000/v1",
        "  API docs  http://[::1]:8000/v1/openapi.json",
    ]
