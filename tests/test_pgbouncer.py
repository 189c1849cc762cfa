"""Through PgBouncer in transaction pooling mode, as deployments past one machine run: the
step commit's fast path, sixteen racers and the worker's claims work when consecutive
transactions of one client land on different server connections."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask

from mentorflow.delivery import services as deliveries
from mentorflow.flows.models import StepEvent
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import Delivery, DeliveryStatus
from support import (
    POSTGRES_URL,
    Learner,
    free_port,
    make_app,
    recreate_postgres_database,
    service_missing,
)
from test_concurrency import RACERS, race

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
#: Fewer server connections than racers: transactions of one client share them.
SERVER_POOL_SIZE = 4


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if found is None:
        service_missing("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    return found


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[str]:
    """A PgBouncer on a free port in transaction pooling mode in front of the test server;
    return its host:port."""
    binary = pgbouncer_binary()
    base = POSTGRES_URL.rpartition("/")[0]
    server = psycopg.conninfo.conninfo_to_dict(base + "/postgres")
    # Not under pytest's private temporary folder: PgBouncer will not run as root, it drops
    # to the postgres user, who must reach its files.
    folder = Path(tempfile.mkdtemp(prefix="mentorflow-pgbouncer-"))
    folder.chmod(0o777)
    port = free_port()
    user = server.get("user", "postgres")
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {SERVER_POOL_SIZE}\nmax_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    output = folder / "pgbouncer.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(f"postgresql://{user}@{address}/postgres", connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                service_missing(f"PgBouncer did not start: {output.read_text()}")
            time.sleep(0.1)
    yield address
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def backend() -> str:
    return "postgresql"


@pytest.fixture(scope="module")
def app(pgbouncer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The app with its database reached through PgBouncer, with the settings the README
    gives for it."""
    direct = recreate_postgres_database(POSTGRES_URL + "_pgbouncer")
    scheme_and_user, _, rest = direct.rpartition("@")
    through = f"{scheme_and_user}@{pgbouncer}/{rest.split('/', 1)[1]}"
    app = make_app(
        through, tmp_path_factory.mktemp("instance-pgbouncer"), DB_PREPARED_STATEMENTS=False
    )
    yield app
    with app.app_context():
        db.engine.dispose()


def test_the_app_talks_to_pgbouncer(ctx):
    # SHOW is PgBouncer's admin console only; its own version banner names it.
    assert str(db.engine.url.port) != "5432"


def test_sessions_walk_to_the_end_through_transaction_pooling(ctx, create_org, publish_flow):
    keys = create_org("pooled")
    publish_flow(keys.org, SMALL_FLOW)
    # Twice as many walkers at once as server connections, each statement run more often than
    # the driver's prepare threshold: a statement prepared on one server connection would be
    # missing on the next, which PgBouncer picks per transaction.
    failures: list[str] = []
    finished: list[dict] = []

    def walk(number: int) -> None:
        try:
            for round_ in range(3):
                walker = Learner(ctx.test_client(), keys.slug, keys.pk)
                assert walker.start("onboarding").status_code == 201
                for step_id, answer in [
                    ("phase-1-step-1", None),
                    ("phase-1-step-2", "new"),
                    ("phase-2-step-1", 7),
                    ("phase-2-step-2", {"name": "Ada", "email": "ada@example.org"}),
                ]:
                    key = f"{number}-{round_}-{step_id}"
                    response = walker.answer(step_id, answer, Idempotency_Key=key)
                    assert response.status_code == 200, response.get_data(as_text=True)
                    replay = walker.answer(step_id, answer, Idempotency_Key=key)
                    assert replay.headers["Idempotent-Replayed"] == "true"
                    assert walker.get(If_None_Match=response.headers["ETag"]).status_code == 304
                finished.append(walker.get().json["session"])
        except Exception as exc:  # reported below, with the others
            failures.append(f"walker {number}: {exc!r}")

    threads = [threading.Thread(target=walk, args=(n,)) for n in range(SERVER_POOL_SIZE * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert len(finished) == SERVER_POOL_SIZE * 2 * 3
    assert {(s["status"], s["version"]) for s in finished} == {("completed", 5)}


def test_sixteen_racers_through_pgbouncer_yield_one_200(ctx, create_org, publish_flow, learner):
    keys = create_org("pooled-racers")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    url = f"/v1/orgs/pooled-racers/sessions/{walker.session_id}/steps"
    statuses = race(ctx, url, walker.token, [{"step_id": "phase-1-step-1"}] * RACERS, [{}] * RACERS)
    assert sorted(statuses) == [200] + [409] * (RACERS - 1)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StepEvent)) == 1


def test_workers_claim_through_pgbouncer_each_delivery_once(ctx, create_org, publish_flow, learner):
    keys = create_org("pooled-claims")
    publish_flow(keys.org, SMALL_FLOW)
    for _ in range(10):
        walker = learner(keys)
        walker.start("onboarding")
        walker.answer("phase-1-step-1", None)
    db.session.rollback()
    due = db.session.scalar(sa.select(sa.func.count()).select_from(Delivery))
    assert due == 10 * 2 * len(ctx.config["SINKS"])

    claimed: list[list[tuple]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        with ctx.app_context():
            barrier.wait()
            mine = []
            while claims := deliveries.claim_due_deliveries(3):
                mine += [(c.event.id, c.sink) for c in claims]
            claimed.append(mine)
            db.session.remove()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [pair for mine in claimed for pair in mine]
    assert len(every) == len(set(every)) == due  # each one leased once, none missed

    # Then delivered: the leases end, a worker's batch calls the sinks and records outcomes.
    db.session.execute(sa.update(Delivery).values(next_attempt_at=sa.func.now()))
    db.session.commit()
    result = deliveries.deliver_due(budget_seconds=5)
    assert result.drained
    statuses = db.session.scalars(sa.select(Delivery.status)).all()
    assert set(statuses) == {DeliveryStatus.DELIVERED}
