"""Side effects after each committed step, delivered by a real Celery worker on real Redis.

The worker is a separate `mentorflow worker` process; PostHog and Supermemory are reached
through their official clients, pointed at the local recorder.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from mentorflow.delivery.integrations import set_integration
from mentorflow.flows import authoring, learner_sessions
from mentorflow.flows.document import load_document
from mentorflow.flows.export import create_export
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, OutboxEvent
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import KeyKind, Org
from mentorflow.worker import tasks
from support import (
    POSTGRES_URL,
    Learner,
    free_port,
    make_app,
    recreate_postgres_database,
    service_missing,
)

MENTORFLOW = str(Path(sys.executable).parent / "mentorflow")
SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
REDIS_URL = os.environ.get("MENTORFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
STEPS = [
    ("phase-1-step-1", None),
    ("phase-1-step-2", "new"),
    ("phase-2-step-1", 250),
    ("phase-2-step-2", {"name": "Ada", "email": "ada@example.com"}),
]


def redis_reachable(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError:
        return False
    return True


class Processes:
    """Worker and beat processes started by a test, stopped at its end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.running = env, logs, []

    def start(self, *args: str) -> subprocess.Popen:
        with (self.logs / f"{args[0]}-{len(self.running)}.log").open("w") as log:
            process = subprocess.Popen(
                [MENTORFLOW, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(process)
        return process

    def worker(self) -> subprocess.Popen:
        return self.start("worker", "--concurrency", "2", "--loglevel", "INFO")

    def beat(self) -> subprocess.Popen:
        return self.start("beat", "--loglevel", "INFO")

    @staticmethod
    def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


class Stack:
    """An in-process app for learner requests plus the environment for worker processes."""

    def __init__(
        self, backend: str, recorder, tmp_path: Path, broker_url: str, **overrides: object
    ) -> None:
        if backend == "postgresql":
            database_url = recreate_postgres_database(POSTGRES_URL + "_worker")
        else:
            database_url = f"sqlite:///{tmp_path / 'worker.db'}"
        settings = {
            "BROKER_URL": broker_url,
            "POSTHOG_API_KEY": "phc_test",
            "POSTHOG_HOST": recorder.url,
            "SUPERMEMORY_API_KEY": "sm_test",
            "SUPERMEMORY_BASE_URL": recorder.url,
            "DELIVERY_MAX_ATTEMPTS": 3,
            "DELIVERY_BACKOFF_SECONDS": 0.3,
            "DELIVERY_BACKOFF_MAX_SECONDS": 2,
            "DELIVERY_LEASE_SECONDS": 3,
            "SWEEP_INTERVAL_SECONDS": 1,
            # The recorder listens on 127.0.0.1.
            "ALLOW_PRIVATE_SINKS": True,
            **overrides,
        }
        self.app = make_app(database_url, tmp_path, **settings)
        self.env = {
            **os.environ,
            "MENTORFLOW_DATABASE_URL": database_url,
            "MENTORFLOW_INSTANCE_PATH": str(tmp_path),
            "MENTORFLOW_SECRET_KEY": "test-secret",
            **{f"MENTORFLOW_{name}": str(value) for name, value in settings.items()},
        }
        self.processes = Processes(self.env, tmp_path)
        with self.app.app_context():
            org = tenant_services.create_org("workers", "Workers")
            _, self.pk = tenant_services.create_api_key(org, KeyKind.PUBLISHABLE)
            _, self.sk = tenant_services.create_api_key(org, KeyKind.SECRET)
            flow, _ = authoring.save_draft(org, load_document(SMALL_FLOW.read_text()))
            authoring.publish_version(flow)
            db.session.commit()
            db.session.remove()

    def add_org(self, slug: str) -> str:
        """Create another org with the same published flow; return its publishable key."""
        with self.app.app_context():
            org = tenant_services.create_org(slug, slug.title())
            _, pk = tenant_services.create_api_key(org, KeyKind.PUBLISHABLE)
            flow, _ = authoring.save_draft(org, load_document(SMALL_FLOW.read_text()))
            authoring.publish_version(flow)
            db.session.commit()
            db.session.remove()
        return pk

    def walk(self, sessions: int, org: str = "workers", pk: str | None = None) -> list[int]:
        """Walk ``sessions`` learners through all four steps; return every status code."""
        client = self.app.test_client()
        statuses = []
        for _ in range(sessions):
            learner = Learner(client, org, pk or self.pk)
            statuses.append(learner.start("onboarding").status_code)
            for step_id, answer in STEPS:
                statuses.append(learner.answer(step_id, answer).status_code)
        return statuses

    def deliveries(self) -> dict[str, int]:
        with self.app.app_context():
            rows = db.session.execute(
                sa.select(Delivery.status, sa.func.count()).group_by(Delivery.status)
            ).all()
            db.session.remove()
        return {str(status): count for status, count in rows}

    def close(self) -> None:
        self.processes.stop_all()
        with self.app.app_context():
            db.engine.dispose()


@pytest.fixture
def shared_redis() -> str:
    if not redis_reachable(REDIS_URL):
        service_missing(f"Redis is not reachable at {REDIS_URL}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


@pytest.fixture
def stack(backend, recorder, tmp_path, shared_redis):
    stack = Stack(backend, recorder, tmp_path, shared_redis)
    yield stack
    stack.close()


def settled(stack: Stack, timeout: float = 60) -> dict[str, int]:
    """Wait until no delivery is pending; return the counts by status."""
    deadline = time.monotonic() + timeout
    counts = stack.deliveries()
    while counts.get("pending") and time.monotonic() < deadline:
        time.sleep(0.3)
        counts = stack.deliveries()
    return counts


def step_events(recorder) -> list[dict]:
    return [e for e in recorder.posthog_events() if e["event"] == "step.completed"]


def test_every_step_commit_is_delivered_once_to_each_sink(stack, recorder):
    stack.processes.worker()
    statuses = stack.walk(50)
    assert set(statuses) == {200, 201}
    recorder.wait_for(
        lambda r: (
            len({e["uuid"] for e in step_events(r)}) >= 200
            and len({d["id"] for d in r.memory_documents()}) >= 200
        ),
        timeout=90,
    )
    events = step_events(recorder)
    assert len({e["uuid"] for e in events}) == 200
    assert {e["properties"]["step_id"] for e in events} == {s for s, _ in STEPS}
    assert all(e["properties"]["$groups"] == {"organization": "workers"} for e in events)
    documents = recorder.memory_documents()
    assert len({d["id"] for d in documents}) == 200
    assert settled(stack) == {"delivered": (50 + 200 + 50) * 2}


def test_broker_outage_never_fails_a_step_and_loses_nothing(backend, recorder, tmp_path):
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    redis_server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    stack = None
    try:
        for _ in range(50):
            if redis_reachable(broker):
                break
            time.sleep(0.1)
        stack = Stack(backend, recorder, tmp_path, broker)
        stack.processes.worker()
        stack.processes.beat()
        assert set(stack.walk(2)) == {200, 201}
        redis_server.terminate()
        redis_server.wait(timeout=10)
        statuses = stack.walk(5)
        assert set(statuses) == {200, 201}, statuses
        redis_server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        recorder.wait_for(lambda r: len({e["uuid"] for e in step_events(r)}) >= 28, timeout=120)
        assert len({e["uuid"] for e in step_events(recorder)}) == 28
        assert settled(stack) == {"delivered": (7 * 2 + 28) * 2}
    finally:
        if stack is not None:
            stack.close()
        redis_server.terminate()
        redis_server.wait(timeout=10)


def test_worker_killed_mid_batch_loses_nothing(stack, recorder):
    statuses = stack.walk(50)
    assert set(statuses) == {200, 201}
    worker = stack.processes.worker()
    recorder.wait_for(lambda r: len(r.posthog_events()) >= 20, timeout=60)
    stack.processes.kill(worker)
    delivered_before_restart = len(recorder.posthog_events())
    assert delivered_before_restart < 300, "the worker finished before it could be killed"
    stack.processes.worker()
    stack.processes.beat()
    recorder.wait_for(
        lambda r: (
            len({e["uuid"] for e in r.posthog_events()}) >= 300
            and len({d["id"] for d in r.memory_documents()}) >= 200
        ),
        timeout=120,
    )
    events = recorder.posthog_events()
    assert len({e["uuid"] for e in events}) == 300
    # A redelivery is the same event again, never a new one.
    assert len(events) - len({e["uuid"] for e in events}) == len(events) - 300


def test_sink_500_is_retried_with_backoff_then_delivered(stack, recorder):
    recorder.fail("/batch/", 500, times=2)
    stack.processes.worker()
    stack.processes.beat()
    stack.walk(1)
    recorder.wait_for(lambda r: len(step_events(r)) >= 4, timeout=60)
    failed = [r for r in recorder.requests if r.path.startswith("/batch/") and r.status == 500]
    assert len(failed) == 2
    assert settled(stack) == {"delivered": 12}


def test_sink_rejecting_for_good_goes_dead_with_its_error(stack, recorder):
    recorder.fail("/ns/", 400)
    stack.processes.worker()
    stack.processes.beat()
    stack.walk(1)
    assert settled(stack) == {"delivered": 8, "dead": 4}
    with stack.app.app_context():
        dead = db.session.scalars(sa.select(Delivery).where(Delivery.status == "dead")).all()
        assert {d.sink for d in dead} == {"memory"}
        assert all(d.attempts == 1 and "400" in d.last_error for d in dead)


def test_a_dripping_org_does_not_delay_another_orgs_deliveries(
    backend, recorder, dripper, tmp_path, shared_redis
):
    # Org "slowpoke" points both sinks at a host that drips a byte every 0.5 s: each of its
    # calls lasts the whole 4 s deadline. Org "workers" uses the healthy recorder.
    stack = Stack(
        backend,
        recorder,
        tmp_path,
        shared_redis,
        SINK_TIMEOUT=4,
        DELIVERY_LEASE_SECONDS=30,
        DELIVERY_BACKOFF_SECONDS=30,
    )
    try:
        slow_pk = stack.add_org("slowpoke")
        with stack.app.app_context():
            org = db.session.scalar(sa.select(Org).where(Org.slug == "slowpoke"))
            for sink, key in (("posthog", "phc_slow"), ("memory", "sm_slow")):
                set_integration(org, sink, stack.app.config, api_key=key, url=dripper.url)
            db.session.commit()
            db.session.remove()
        stack.processes.worker()
        stack.processes.beat()
        # Two waves, so that the slow org's calls run in both worker processes.
        for wave in (1, 2):
            stack.walk(1, org="slowpoke", pk=slow_pk)
            deadline = time.monotonic() + 30
            while dripper.requests < 2 * wave and time.monotonic() < deadline:
                time.sleep(0.05)
            assert dripper.requests >= 2 * wave, "the slow org's calls never started"

        stack.walk(1)

        recorder.wait_for(lambda r: len(step_events(r)) >= 4, timeout=10)
        recorder.wait_for(lambda r: len(r.memory_documents()) >= 4, timeout=10)
        lags = [
            request.received_at - datetime.fromisoformat(event["timestamp"]).timestamp()
            for request in recorder.requests
            if request.path == "/batch/" and request.accepted
            for event in request.body["batch"]
        ]
        assert lags and max(lags) < 2.0, f"the healthy org's events waited {max(lags):.1f} s"
        # Recorded as each call finished, not when the slow org's calls end.
        waited = time.monotonic()
        while time.monotonic() - waited < 2.0:
            if _deliveries_of(stack, "workers") == {"delivered": 12}:
                break
            time.sleep(0.1)
        assert _deliveries_of(stack, "workers") == {"delivered": 12}
        assert _deliveries_of(stack, "slowpoke").get("pending")
    finally:
        stack.close()


def _deliveries_of(stack: Stack, slug: str) -> dict[str, int]:
    with stack.app.app_context():
        rows = db.session.execute(
            sa.select(Delivery.status, sa.func.count())
            .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
            .join(Org, Org.id == OutboxEvent.org_id)
            .where(Org.slug == slug)
            .group_by(Delivery.status)
        ).all()
        db.session.remove()
    return {str(status): count for status, count in rows}


def test_export_job_csv_matches_the_database(stack):
    with stack.app.app_context():
        begin_write(db.session)
        org = tenant_services.get_org("workers")
        flow = authoring.get_flow(org, "onboarding")
        for index in range(1000):
            started, _ = learner_sessions.start_session(
                org, flow, flow.published_version, email=f"learner{index}@example.com"
            )
            session = learner_sessions.session_record(started)
            for step_id, answer in STEPS[: index % 5]:
                if step_id == "phase-2-step-1":
                    answer = index
                learner_sessions.commit_step(org, session, step_id, answer)
        job = create_export(org, "onboarding", by="tests")
        db.session.commit()
        job_id = job.id
        expected = {s.id: s for s in db.session.scalars(sa.select(LearnerSession)).all()}
        expected = {k: (s.email, dict(s.answers), str(s.status)) for k, s in expected.items()}
        db.session.remove()
    stack.processes.worker()
    with stack.app.app_context():
        tasks.enqueue_job(job_id)
    client = stack.app.test_client()
    headers = {"Authorization": f"Bearer {stack.sk}"}
    deadline = time.monotonic() + 120
    while True:
        status = client.get(f"/v1/orgs/workers/jobs/{job_id}", headers=headers).json
        if status["status"] in ("completed", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status["status"] == "completed", status
    assert status["progress"] == 100 and status["result"]["rows"] == 1000
    download = client.get(status["download_url"], headers=headers)
    assert download.status_code == 200 and download.mimetype == "text/csv"
    text = download.get_data(as_text=True)
    download.close()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1000
    assert list(rows[0])[-3:] == ["level", "day-rate", "contact"]
    for row in rows:
        email, answers, status_ = expected[row["session_id"]]
        assert row["email"] == email and row["status"] == status_
        assert row["level"] == answers.get("level", "")
        assert row["day-rate"] == ("" if "day-rate" not in answers else str(answers["day-rate"]))
    other = client.get(status["download_url"], headers={"Authorization": f"Bearer {stack.pk}"})
    assert other.status_code == 403
