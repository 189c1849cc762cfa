"""`make bench`: the step-commit hot path against the floor of its own stack, in one run.

Prints one table and writes ``bench/results/latest.json``. See bench/README.md.
``python bench/run.py deliveries`` runs the two delivery rows alone (bench/deliveries.py).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.batch import SESSIONS as BATCH_SESSIONS  # noqa: E402
from bench.batch import batch_line, measure_batch  # noqa: E402
from bench.deliveries import delivery_lines, measure_drain, measure_lag  # noqa: E402
from bench.feed import feed_lines, run_feed  # noqa: E402
from bench.load import (  # noqa: E402
    LoadResult,
    build_request,
    closed_loop,
    wait_http,
)

BIN = Path(sys.executable).parent
PG_URL = os.environ.get(
    "MENTORFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mentorflow_bench"
)
REDIS_URL = os.environ.get("MENTORFLOW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECONDS = float(os.environ.get("MENTORFLOW_BENCH_SECONDS", "6"))
#: Each real/floor pair is measured this many times, alternating; the round with the median
#: ratio is shown, so a noisy neighbour on a shared VM moves the figures less.
ROUNDS = int(os.environ.get("MENTORFLOW_BENCH_ROUNDS", "3"))
LEVELS = (8, 32, 64)
STEPS = 20
ANSWERS = ["a", 42, "a short honest answer", True]
HOST = "127.0.0.1"
LOGS = ROOT / "bench" / "results" / "logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def bench_flow() -> dict[str, Any]:
    kinds = [
        {
            "type": "single_choice",
            "options": [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}],
        },
        {"type": "number", "min": 0, "max": 1000},
        {"type": "text"},
        {"type": "boolean"},
    ]
    steps = [
        {
            "id": f"phase-1-step-{i + 1}",
            "key": f"q{i + 1}",
            "prompt": f"Question {i + 1}?",
            **kinds[i % 4],
        }
        for i in range(STEPS)
    ]
    return {
        "slug": "bench",
        "title": "Bench flow",
        "phases": [{"id": "phase-1", "title": "All", "steps": steps}],
    }


def ratio(real: dict[str, Any], base: dict[str, Any]) -> float:
    return real["per_second"] / max(base["per_second"], 1)


def median_round(rounds: list[tuple[Any, ...]], key: Any) -> tuple[Any, ...]:
    """Return the round whose ``key(*round)`` is the median (the lower one of an even count)."""
    ordered = sorted(rounds, key=lambda measured: key(*measured))
    return ordered[(len(ordered) - 1) // 2]


def vacuum(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def recreate_database(url: str) -> None:
    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


class Installation:
    """A database with an org, the bench flow and pre-started sessions, and its processes."""

    def __init__(self, database_url: str, instance: Path, sink_url: str) -> None:
        self.env = {
            **os.environ,
            "MENTORFLOW_DATABASE_URL": database_url,
            "MENTORFLOW_INSTANCE_PATH": str(instance),
            "MENTORFLOW_SECRET_KEY": "bench-secret-key-of-at-least-32-bytes",
            "MENTORFLOW_BROKER_URL": REDIS_URL,
            "MENTORFLOW_POSTHOG_API_KEY": "phc_bench",
            "MENTORFLOW_POSTHOG_HOST": sink_url,
            "MENTORFLOW_SUPERMEMORY_API_KEY": "sm_bench",
            "MENTORFLOW_SUPERMEMORY_BASE_URL": sink_url,
            # The sinks are bench/sink.py on loopback, which outbound calls refuse otherwise.
            "MENTORFLOW_ALLOW_PRIVATE_SINKS": "1",
            "MENTORFLOW_WEB_CONCURRENCY": "4",
            "MENTORFLOW_LOG_LEVEL": "WARNING",
            # All load comes from one address: keep the limiter's cost in the figures, but
            # not its 429s.
            "MENTORFLOW_RATE_LIMIT": "10000000 per minute",
            # A PYTHONPATH given comes first: `PYTHONPATH=<checkout>/src` benches that code.
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
        }
        self.processes: list[subprocess.Popen] = []
        subprocess.run(
            [BIN / "mentorflow", "db", "upgrade"], env=self.env, check=True, capture_output=True
        )
        from mentorflow.app import create_app

        os.environ.update({k: v for k, v in self.env.items() if k.startswith("MENTORFLOW_")})
        self.app = create_app()
        self.port = free_port()

    def seed(self, sessions: int) -> list[tuple[str, str]]:
        """Create the org, flow and ``sessions`` fresh sessions; return (id, token) pairs."""
        from mentorflow.delivery import webhooks
        from mentorflow.flows import authoring, learner_sessions
        from mentorflow.platform.extensions import db
        from mentorflow.platform.outbox import Delivery
        from mentorflow.tenants import services as tenants

        with self.app.app_context():
            org = tenants.create_org("bench", "Bench")
            flow, _ = authoring.save_draft(org, bench_flow())
            version, _ = authoring.publish_version(flow)
            # A webhook endpoint too: every event gets three deliveries (PostHog, Supermemory,
            # the endpoint), as for an org that has one.
            webhooks.create_endpoint(
                org.id, self.app.config, url=self.env["MENTORFLOW_POSTHOG_HOST"] + "/webhook"
            )
            db.session.commit()
            pairs = []
            for index in range(sessions):
                session, token = learner_sessions.start_session(org, flow, version)
                pairs.append((session.id, token))
                if index % 500 == 499:
                    db.session.commit()
            db.session.commit()
            # The seed's session.started events are not part of any measurement.
            db.session.execute(sa.update(Delivery).values(status="delivered"))
            db.session.commit()
            db.session.remove()
        return pairs

    def start(self, *argv: str) -> subprocess.Popen:
        name = f"{Path(argv[0]).name}-{argv[1] if len(argv) > 1 else ''}-{len(self.processes)}"
        with (LOGS / f"{name}.log").open("w") as log:
            process = subprocess.Popen(
                list(argv),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def serve(self) -> None:
        """Serve the product as shipped (gunicorn, 4 sync workers)."""
        self.gunicorn(self.port, "mentorflow.app:create_app()")

    def serve_floor(self, database_url: str) -> int:
        """Serve bench/floor.py, the bare app, in a gunicorn of its own; return its port."""
        port = free_port()
        self.env["FLOOR_DATABASE_URL"] = database_url
        self.gunicorn(port, "bench.floor:app")
        return port

    def serve_stack_floor(self, database_url: str) -> int:
        """Serve bench/stack_floor.py (the product's libraries, no product code); its port."""
        port = free_port()
        self.env["FLOOR_DATABASE_URL"] = database_url
        self.env["FLOOR_REDIS_URL"] = REDIS_URL
        self.gunicorn(port, "bench.stack_floor:app")
        return port

    def gunicorn(self, port: int, target: str) -> None:
        self.start(
            str(BIN / "gunicorn"),
            "--workers",
            "4",
            "--bind",
            f"{HOST}:{port}",
            "--timeout",
            "30",
            target,
        )
        wait_http(
            f"http://{HOST}:{port}/hello" if "floor" in target else f"http://{HOST}:{port}/healthz"
        )

    def stop(self, process: subprocess.Popen | None = None) -> None:
        for proc in [process] if process else self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    def pending(self) -> int:
        from mentorflow.platform.extensions import db
        from mentorflow.platform.outbox import Delivery

        with self.app.app_context():
            count = db.session.scalar(
                sa.select(sa.func.count()).select_from(Delivery).where(Delivery.status == "pending")
            )
            db.session.remove()
        return count or 0


def step_request(session_id: str, token: str, step: int, prefix: str, host: str) -> bytes:
    """Return the POST answering step ``step`` (0-based) of a bench session."""
    body = json.dumps({"step_id": f"phase-1-step-{step + 1}", "answer": ANSWERS[step % 4]})
    return build_request(
        "POST",
        f"{prefix}/orgs/bench/sessions/{session_id}/steps",
        host,
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": f"{session_id}-{step}",
        },
        body.encode(),
    )


def step_walker(pairs: list[tuple[str, str]], connections: int, prefix: str, port: int):
    """Return a request factory: each connection walks its sessions step by step."""
    sessions = iter(pairs)
    state: dict[int, list[Any]] = {}
    host = f"{HOST}:{port}"

    def factory(index: int) -> bytes | None:
        current = state.get(index)
        if current is None or current[2] == STEPS:
            try:
                session_id, token = next(sessions)
            except StopIteration:
                return None
            current = state[index] = [session_id, token, 0]
        session_id, token, step = current
        current[2] += 1
        return step_request(session_id, token, step, prefix, host)

    return factory


def round_robin_walker(pairs: list[tuple[str, str]], prefix: str, port: int):
    """Return a request factory for an open loop: request i answers the next step of session
    i mod len(pairs), so one session's steps are len(pairs) requests apart, never concurrent."""
    host = f"{HOST}:{port}"

    def factory(index: int) -> bytes | None:
        session_id, token = pairs[index % len(pairs)]
        step = index // len(pairs)
        if step >= STEPS:
            return None
        return step_request(session_id, token, step, prefix, host)

    return factory


def getter(pairs: list[tuple[str, str]], port: int, etag: bool, prefix: str = "/v1"):
    cycle = itertools.cycle(pairs)
    host = f"{HOST}:{port}"

    def factory(index: int) -> bytes:
        session_id, token = next(cycle)
        headers = {"Authorization": f"Bearer {token}"}
        if etag:
            headers["If-None-Match"] = '"1"'
        return build_request("GET", f"{prefix}/orgs/bench/sessions/{session_id}", host, headers)

    return factory


def hello(port: int):
    request = build_request("GET", "/hello", f"{HOST}:{port}", {})
    return lambda index: request


WRK = shutil.which("wrk")
LUA = ROOT / "bench" / "lua"


def wrk(
    seconds: float, port: int, connections: int, script: str, path: str, *args: str
) -> dict[str, Any]:
    """Run wrk with one connection per thread; return its figures."""
    command = [
        WRK,
        "-t",
        str(connections),
        "-c",
        str(connections),
        "-d",
        f"{seconds:.0f}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA / script),
        f"http://{HOST}:{port}{path}",
        "--",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:  # say why: a bare CalledProcessError hid the streams row's crash
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    output = done.stdout
    raw = json.loads(output.strip().splitlines()[-1])
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["non_2xx"]
    return {
        "per_second": round(ok / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "ok": ok,
        "other": {"4xx/5xx": raw["non_2xx"]} if raw["non_2xx"] else {},
        "errors": raw["errors"],
    }


def sessions_file(pairs: list[tuple[str, str]]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("".join(f"{sid} {token}\n" for sid, token in pairs))
    return handle.name


def measure_steps(
    port: int,
    pairs: list[tuple[str, str]],
    connections: int,
    prefix: str = "/v1",
    seconds: float = SECONDS,
) -> dict[str, Any]:
    """Step commits/s and latency, walking fresh sessions."""
    if WRK:
        return wrk(
            seconds,
            port,
            connections,
            "steps.lua",
            "/",
            sessions_file(pairs),
            prefix,
            str(connections),
            str(STEPS),
        )
    return figures(
        closed_loop(
            HOST, port, connections, seconds, step_walker(pairs, connections, prefix, port)
        ),
        200,
    )


def measure_get(
    port: int, pairs: list[tuple[str, str]], etag: bool, prefix: str = "/v1"
) -> dict[str, Any]:
    if WRK:
        mode = "etag" if etag else "plain"
        return wrk(SECONDS, port, 32, "get.lua", "/", sessions_file(pairs), mode, prefix)
    code = 304 if etag else 200
    return figures(closed_loop(HOST, port, 32, SECONDS, getter(pairs, port, etag, prefix)), code)


def measure_hello(port: int) -> dict[str, Any]:
    if WRK:
        return wrk(SECONDS, port, 32, "hello.lua", "/hello")
    return figures(closed_loop(HOST, port, 32, SECONDS, hello(port)), 200)


def figures(result: LoadResult, *codes: int) -> dict[str, Any]:
    return {
        "per_second": round(result.rate(*codes), 1),
        "p50_ms": round(result.p50, 2),
        "p99_ms": round(result.percentile(99), 2),
        "ok": result.ok(*codes),
        "other": {str(k): v for k, v in result.statuses.items() if k not in codes},
        "errors": result.errors,
    }


def needed_sessions(rate_guess: float = 4000) -> int:
    return int(rate_guess * SECONDS / STEPS) + 200


def pair_rows(
    rounds: list[tuple[dict[str, Any], dict[str, Any]]],
) -> dict[str, Any]:
    """The median round of real/floor pairs, with every round's ratio (in measured order)."""
    real, floor = median_round(rounds, ratio)
    return {
        "real": real,
        "floor": floor,
        "ratio": round(ratio(real, floor), 2),
        "round_ratios": [round(ratio(*pair), 2) for pair in rounds],
        "p99_ratio": round(real["p99_ms"] / max(floor["p99_ms"], 0.01), 2),
    }


def run_postgres(results: dict[str, Any], sink_url: str) -> None:
    recreate_database(PG_URL)
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory() as instance:
        inst = Installation(PG_URL, Path(instance), sink_url)
        per_run = needed_sessions()
        measurements = len(LEVELS) * 2 * ROUNDS + 3 * ROUNDS + 4
        pairs = inst.seed(per_run * measurements + 2000 + 400 + 2 * BATCH_SESSIONS + 2)
        inst.serve()
        floor_port = inst.serve_floor(PG_URL)
        stack_port = inst.serve_stack_floor(PG_URL)
        try:
            cursor = 0

            def take(count: int) -> list[tuple[str, str]]:
                nonlocal cursor
                cursor += count
                return pairs[cursor - count : cursor]

            # Warm every worker process up (imports, caches, prepared statements), unmeasured.
            measure_steps(inst.port, take(per_run), 8, seconds=2)
            measure_steps(floor_port, take(per_run), 8, "", seconds=2)
            measure_steps(floor_port, take(per_run), 8, "/same", seconds=2)
            measure_steps(stack_port, take(per_run), 8, "", seconds=2)
            steps: dict[str, Any] = {}
            for level in LEVELS:
                steps[str(level)] = pair_rows(
                    [
                        (
                            measure_steps(inst.port, take(per_run), level),
                            measure_steps(floor_port, take(per_run), level, ""),
                        )
                        for _ in range(ROUNDS)
                    ]
                )
            results["post_steps"] = steps
            # The same statements bare, and through the product's libraries (the stack floor).
            rounds = [
                (
                    measure_steps(inst.port, take(per_run), 32),
                    measure_steps(floor_port, take(per_run), 32, "/same"),
                    measure_steps(stack_port, take(per_run), 32, ""),
                )
                for _ in range(ROUNDS)
            ]
            results["post_steps_same_statements_32"] = pair_rows([r[:2] for r in rounds])
            results["post_steps_stack_32"] = pair_rows([(r[0], r[2]) for r in rounds])
            results["stack_vs_same_32"] = pair_rows([(r[2], r[1]) for r in rounds])
            results["batch"] = measure_batch(inst.port, take(2 * BATCH_SESSIONS + 2))
            # The step runs left dead row versions behind: start the reads from a clean table,
            # as a database under autovacuum would be.
            vacuum(PG_URL)
            fresh = take(2000)
            rounds = [
                (
                    measure_get(inst.port, fresh, True),
                    measure_get(floor_port, fresh, True, ""),
                    measure_get(inst.port, fresh, False),
                    measure_hello(floor_port),
                    measure_get(stack_port, fresh, True, ""),
                )
                for _ in range(ROUNDS)
            ]
            results["get_session"] = {
                "304_vs_floor": pair_rows([(row[0], row[1]) for row in rounds]),
                "200_vs_hello": pair_rows([(row[2], row[3]) for row in rounds]),
                "304_vs_hello": pair_rows([(row[0], row[3]) for row in rounds]),
                "floor_304_vs_hello": pair_rows([(row[1], row[3]) for row in rounds]),
                "304_vs_stack": pair_rows([(row[0], row[4]) for row in rounds]),
                "stack_304_vs_floor": pair_rows([(row[4], row[1]) for row in rounds]),
            }

            run_delivery_rows(results, inst, sink_url, steps["32"]["real"]["per_second"], take)
        finally:
            inst.stop()
            from mentorflow.platform.extensions import db

            with inst.app.app_context():
                db.engine.dispose()


def run_delivery_rows(
    results: dict[str, Any], inst: Installation, sink_url: str, committed: float, take: Any
) -> None:
    """One worker process drains the backlog; then, with none left, the lag at a steady
    rate: 300 commits/s as asked, or 75 % of what this machine committed at 32 connections
    when that is less (lag under overload measures queueing, not delivery)."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    vacuum(inst.env["MENTORFLOW_DATABASE_URL"])
    results["delivery"], worker = measure_drain(inst, BIN)
    rate = min(300.0, 0.75 * committed)
    seconds = min(SECONDS * 2, 15)
    # Enough sessions that each one's next step comes a second or more later.
    lag_pairs = take(max(int(rate), int(rate * seconds / STEPS) + 1))
    results["lag"] = measure_lag(
        inst,
        BIN,
        sink_url,
        rate,
        seconds,
        {s for s, _ in lag_pairs},
        round_robin_walker(lag_pairs, "/v1", inst.port),
        HOST,
    )
    inst.stop(worker)


def run_sqlite(results: dict[str, Any], sink_url: str) -> None:
    with tempfile.TemporaryDirectory() as instance:
        database = f"sqlite:///{instance}/bench.db"
        inst = Installation(database, Path(instance), sink_url)
        per_run = needed_sessions(1500)
        pairs = inst.seed(per_run * (2 * ROUNDS + 2))
        inst.serve()
        floor_port = inst.serve_floor(database)
        try:
            chunks = iter(pairs[i : i + per_run] for i in range(0, len(pairs), per_run))
            measure_steps(inst.port, next(chunks), 8, seconds=2)
            measure_steps(floor_port, next(chunks), 8, "", seconds=2)
            results["sqlite_post_steps_8"] = pair_rows(
                [
                    (
                        measure_steps(inst.port, next(chunks), 8),
                        measure_steps(floor_port, next(chunks), 8, ""),
                    )
                    for _ in range(ROUNDS)
                ]
            )
        finally:
            inst.stop()


#: The least ratio (real / floor) issue 18 asks of each row; the p99 goal is checked beside.
GOALS = {
    "post_32": 0.70,
    "same_32": 0.85,
    "304_floor": 0.85,
    "sqlite_8": 0.70,
}


def table(results: dict[str, Any]) -> str:
    header = (
        f"{'measure':<40}{'real/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'floor/s':>9}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'ratio':>7}  rounds (in order)"
    )
    lines = ["", "mentorflow bench  " + results["machine"], "", header]

    def line(name: str, row: dict[str, Any], goal: str = "") -> None:
        real, floor = row["real"], row["floor"]
        rounds = " ".join(f"{r:.2f}" for r in row["round_ratios"])
        lines.append(
            f"{name:<40}{real['per_second']:>8.0f}{real['p50_ms']:>8.1f}{real['p99_ms']:>8.1f}"
            f"{floor['per_second']:>9.0f}{floor['p50_ms']:>8.1f}{floor['p99_ms']:>8.1f}"
            f"{row['ratio']:>7.2f}  {rounds}{goal}"
        )

    def verdict(value: float, least: float) -> str:
        return f"  goal ≥ {least:.2f}: {'met' if value >= least else 'NOT met'}"

    for level, row in results["post_steps"].items():
        goal = ""
        if level == "32":
            p99 = row["p99_ratio"]
            goal = verdict(row["ratio"], GOALS["post_32"]) + (
                f"; p99 {p99:.2f} x floor's (≤ 2: {'met' if p99 <= 2 else 'NOT met'})"
            )
        line(f"POST …/steps vs minimal txn @{level}", row, goal)
    same = results["post_steps_same_statements_32"]
    line("POST …/steps vs same statements @32", same, verdict(same["ratio"], GOALS["same_32"]))
    get = results["get_session"]
    line(
        "GET session 304 vs raw 304 @32",
        get["304_vs_floor"],
        verdict(get["304_vs_floor"]["ratio"], GOALS["304_floor"]),
    )
    line("GET session 304 vs bare /hello @32", get["304_vs_hello"])
    line("GET session 200 vs bare /hello @32", get["200_vs_hello"])
    line("raw 304 (bare app) vs bare /hello @32", get["floor_304_vs_hello"])
    # Where the gap lies: the product against its own libraries, and those against bare.
    line("POST …/steps vs stack floor @32", results["post_steps_stack_32"])
    line("stack floor vs same statements @32", results["stack_vs_same_32"])
    line("GET session 304 vs stack 304 @32", get["304_vs_stack"])
    line("stack 304 vs raw 304 @32", get["stack_304_vs_floor"])
    sqlite = results["sqlite_post_steps_8"]
    line(
        "SQLite POST …/steps vs sqlite3 txn @8", sqlite, verdict(sqlite["ratio"], GOALS["sqlite_8"])
    )
    lines += [
        "",
        f"rounds: {ROUNDS}, alternating real and floor; the median round is shown. Floors: "
        "bench/floor.py, a bare Flask + psycopg/sqlite3 app in its own gunicorn (4 workers); "
        "stack floor: bench/stack_floor.py, the same statements through flask-smorest, "
        "marshmallow, SQLAlchemy and a Redis counter (no mentorflow code).",
        *delivery_lines(results["delivery"], results["lag"]),
        batch_line(results["batch"]),
        *feed_lines(results["feed"]),
        f"load generator: {results['load_generator']}; {SECONDS:.0f} s per measurement",
    ]
    return "\n".join(lines)


def feed_env() -> dict[str, str]:
    """The environment of the feed bench's web processes: an Installation's, minus the db."""
    return {
        **os.environ,
        "MENTORFLOW_SECRET_KEY": "bench-secret-key-of-at-least-32-bytes",
        "MENTORFLOW_BROKER_URL": REDIS_URL,
        "MENTORFLOW_LOG_LEVEL": "WARNING",
        "MENTORFLOW_RATE_LIMIT": "10000000 per minute",
        "PYTHONPATH": str(ROOT),
    }


#: The delivery rows run alone drain this many seconds of step commits at 32 connections.
BACKLOG_SECONDS = float(os.environ.get("MENTORFLOW_BENCH_BACKLOG_SECONDS", "30"))


def run_deliveries() -> None:
    """``python bench/run.py deliveries``: the delivery rows alone, on the backlog of
    BACKLOG_SECONDS of step commits at 32 connections (the full run drains what all its
    step runs left, about three times as much); written to bench/results/deliveries.json."""
    LOGS.mkdir(parents=True, exist_ok=True)
    recreate_database(PG_URL)
    redis.Redis.from_url(REDIS_URL).flushdb()
    sink_port = free_port()
    sink_url = f"http://{HOST}:{sink_port}"
    sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink.py"), str(sink_port)])
    results: dict[str, Any] = {"machine": machine()}
    try:
        wait_http(f"{sink_url}/arrivals")
        with tempfile.TemporaryDirectory() as instance:
            inst = Installation(PG_URL, Path(instance), sink_url)
            pairs = inst.seed(int(1000 * BACKLOG_SECONDS / STEPS) + 700)
            inst.serve()
            try:
                backlog = measure_steps(inst.port, pairs[:-700], 32, seconds=BACKLOG_SECONDS)
                results["backlog_steps_per_second"] = backlog["per_second"]
                lag_pairs = pairs[-700:]
                run_delivery_rows(
                    results, inst, sink_url, backlog["per_second"], lambda n: lag_pairs[:n]
                )
                connections = urllib.request.urlopen(f"{sink_url}/connections").read()
                results["sink"] = json.loads(connections)
            finally:
                inst.stop()
                from mentorflow.platform.extensions import db

                with inst.app.app_context():
                    db.engine.dispose()
    finally:
        sink.terminate()
        sink.wait()
    (ROOT / "bench" / "results" / "deliveries.json").write_text(json.dumps(results, indent=2))
    print(f"mentorflow bench, the delivery rows alone  {results['machine']}")
    print(
        f"backlog: {BACKLOG_SECONDS:.0f} s of step commits at 32 connections "
        f"({results['backlog_steps_per_second']:.0f}/s); the sink saw "
        f"{results['sink']['requests']} requests on {results['sink']['connections']} connections"
    )
    print("\n".join(delivery_lines(results["delivery"], results["lag"])))


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def main() -> None:
    results: dict[str, Any] = {
        "machine": machine(),
        "load_generator": f"wrk ({WRK})"
        if WRK
        else "bundled asyncio generator (bench/load.py); install wrk for lower client overhead",
        "seconds": SECONDS,
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink.py"), str(sink_port)])
    try:
        wait_http(f"http://{HOST}:{sink_port}/arrivals")
        run_postgres(results, f"http://{HOST}:{sink_port}")
        run_sqlite(results, f"http://{HOST}:{sink_port}")
        results["feed"] = run_feed(f"{PG_URL}_feed", feed_env(), ROUNDS)
    finally:
        sink.terminate()
        sink.wait()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    # Live push, in a process of its own: 1,000 open streams while learners commit.
    subprocess.run([sys.executable, str(ROOT / "bench" / "streams.py")], check=True)


if __name__ == "__main__":
    if shutil.which("pg_isready") and subprocess.run(["pg_isready", "-h", HOST, "-q"]).returncode:
        raise SystemExit("bench: PostgreSQL is not reachable at 127.0.0.1:5432")
    if sys.argv[1:] == ["deliveries"]:
        run_deliveries()
    elif sys.argv[1:]:
        raise SystemExit("usage: python bench/run.py [deliveries]")
    else:
        main()
