"""Every process of a deployment counts against one budget: the broker's Redis or the database.

Two app instances on one database stand for two web workers (the issue's 4 gunicorn workers,
each with its own ``memory://`` counters, allowed four times each limit).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from mentorflow.platform.extensions import db
from mentorflow.tenants import services
from mentorflow.tenants.models import KeyKind, Role
from support import POSTGRES_URL, free_port, make_app, recreate_postgres_database, service_missing

REDIS_URL = os.environ.get("MENTORFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
MENTORFLOW = str(Path(sys.executable).parent / "mentorflow")
PASSWORD = "correct horse battery staple"


def random_address() -> str:
    # Counters in Redis outlive a test run: each test counts for addresses of its own.
    return "10." + ".".join(str(random.randrange(1, 255)) for _ in range(3))


class Deployment:
    """App instances on one database and one counters' storage, as web workers are."""

    def __init__(self, backend: str, database_url: str, instance: Path) -> None:
        self.backend, self.database_url, self.instance = backend, database_url, instance
        self.apps = []

    def app(self, **config):
        if self.backend == "redis":
            # No storage setting: a Redis broker is where the counters go.
            config.setdefault("BROKER_URL", REDIS_URL)
        app = make_app(self.database_url, self.instance, **config)
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in self.apps:
            with app.app_context():
                db.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def deployment(request, tmp_path):
    if request.param == "postgresql":
        database_url = recreate_postgres_database(f"{POSTGRES_URL}_limits")
    else:
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    if request.param == "redis":
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError:
            service_missing(f"Redis is not reachable at {REDIS_URL}")
    deployment = Deployment(request.param, database_url, tmp_path)
    yield deployment
    deployment.close()


def api_key(app, owner: str = "owner@example.org") -> str:
    with app.app_context():
        org = services.create_org("busy", "Busy")
        _, key = services.create_api_key(org, KeyKind.SECRET)
        services.create_staff(owner, PASSWORD, org, Role.OWNER)
        db.session.commit()
    return key


def test_workers_share_the_api_budget(deployment):
    workers = [deployment.app(RATE_LIMIT="3 per minute") for _ in range(2)]
    headers = {"Authorization": f"Bearer {api_key(workers[0])}"}
    clients = [worker.test_client() for worker in workers]
    address = random_address()
    statuses = [
        clients[attempt % 2]
        .get("/v1/orgs/busy/flows/none", headers=headers, environ_base={"REMOTE_ADDR": address})
        .status_code
        for attempt in range(5)
    ]
    assert statuses == [404, 404, 404, 429, 429]
    # The counters are where the deployment's processes all look.
    if deployment.backend == "redis":
        assert redis.Redis.from_url(REDIS_URL).keys(f"LIMITS:LIMITER/api/{address}/*")
    else:
        from mentorflow.platform.ratelimit import RateLimitCounter

        with workers[1].app_context():
            assert db.session.scalars(sa.select(RateLimitCounter.key)).all() == [
                f"LIMITER/api/{address}/3/1/minute"
            ]


def test_workers_share_the_sign_in_budget_of_an_address(deployment):
    workers = [
        deployment.app(
            RATE_LIMIT="100 per minute", SIGN_IN_LIMIT="2 per minute", WTF_CSRF_ENABLED=False
        )
        for _ in range(2)
    ]
    api_key(workers[0])
    clients = [worker.test_client() for worker in workers]
    address = random_address()
    statuses = [
        clients[attempt % 2]
        .post(
            "/admin/login",
            data={"email": "owner@example.org", "password": f"guess-{attempt}"},
            environ_base={"REMOTE_ADDR": address},
        )
        .status_code
        for attempt in range(4)
    ]
    assert statuses == [401, 401, 429, 429]


def test_sign_in_counts_per_account_from_any_address(deployment):
    app = deployment.app(
        RATE_LIMIT="100 per minute", SIGN_IN_ACCOUNT_LIMIT="3 per minute", WTF_CSRF_ENABLED=False
    )
    # Counters in Redis outlive a test run: an account of this run's own.
    owner = f"owner-{random.randrange(10**9)}@example.org"
    api_key(app, owner)
    client = app.test_client()

    def sign_in(email: str, password: str) -> int:
        return client.post(
            "/admin/login",
            data={"email": email, "password": password},
            environ_base={"REMOTE_ADDR": random_address()},
        ).status_code

    # One guess per address, as a botnet would: the account's own budget still runs out.
    assert [sign_in(owner, f"guess-{n}") for n in range(4)] == [401] * 3 + [429]
    # The right password is not even checked now (any spelling of the address counts),
    assert sign_in(f" {owner.upper()} ", PASSWORD) == 429
    assert client.get("/admin/").status_code == 302
    # and other accounts are not held up.
    assert sign_in(f"other-{owner}", "guess") == 401


@pytest.mark.parametrize("deployment", ["sqlite", "postgresql"], indirect=True)
def test_database_counters_lose_no_hit_when_processes_count_at_once(deployment):
    from mentorflow.platform.ratelimit import DatabaseStorage

    app = deployment.app()
    with app.app_context():
        storage = DatabaseStorage(db.engine)
    storage.reset()

    def count_hits() -> None:
        for _ in range(25):
            storage.incr("LIMITER/api/10.0.0.1/1000/1/minute", 60)

    threads = [threading.Thread(target=count_hits) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.get("LIMITER/api/10.0.0.1/1000/1/minute") == 100


@pytest.mark.parametrize("deployment", ["sqlite", "postgresql"], indirect=True)
def test_database_counter_starts_again_after_its_window(deployment):
    from mentorflow.platform.ratelimit import DatabaseStorage, RateLimitCounter

    app = deployment.app()
    with app.app_context():
        storage = DatabaseStorage(db.engine)
    storage.SWEEP_SECONDS = 0.0
    assert [storage.incr("window", 60) for _ in range(3)] == [1, 2, 3]
    assert storage.incr("gone", 60) == 1
    with storage.engine.begin() as connection:
        connection.execute(sa.update(RateLimitCounter).values(expires_at=0.0))
    # The ended window restarts at this hit, and the next sweep drops the other ended ones.
    assert storage.incr("window", 60) == 1
    assert storage.get("gone") == 0
    with storage.engine.connect() as connection:
        keys = connection.execute(sa.select(RateLimitCounter.key)).scalars().all()
    assert keys == ["window"]


def test_serve_refuses_per_process_counters_with_several_workers(tmp_path):
    env = {
        **os.environ,
        "MENTORFLOW_INSTANCE_PATH": str(tmp_path / "instance"),
        "MENTORFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "MENTORFLOW_RATE_LIMIT_STORAGE_URL": "memory://",
        "MENTORFLOW_WEB_CONCURRENCY": "4",
    }
    process = subprocess.Popen(
        [MENTORFLOW, "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate()
        pytest.fail("serve started 4 workers that count rate limits each on its own")
    assert process.returncode != 0
    assert "memory:// counts per process" in output
