"""The change feed's read rate: one consumer reads the whole feed page by page (limit 500).

Real: ``GET /v1/orgs/{org}/events`` with the secret key, following ``next_cursor``. Floor:
``/bench/orgs/{org}/events``, the same keyset query (snapshot xmin, the join for
``external_user_id``, the same page body) in raw SQL through a psycopg pool and orjson, on the
same gunicorn app. Both are read over keep-alive HTTP by one client; rounds alternate and the
median ratio is shown. See bench/README.md.
"""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
from flask import Response, request

from bench.app import create_bench_app, floor, pool
from bench.load import wait_http

EVENTS = int(os.environ.get("MENTORFLOW_BENCH_FEED_EVENTS", "50000"))
SESSIONS = 200
PAGE = 500

FLOOR_SQL = """
SELECT e.id, e.txid, e.feed_seq, e.type, e.created_at, e.session_id, s.external_user_id,
       e.payload ->> 'flow', (e.payload ->> 'flow_version')::int, e.payload ->> 'step_id',
       (e.payload - ARRAY['org', 'session_id', 'flow', 'flow_version', 'step_id', 'occurred_at',
                          'distinct_id', 'memory_container']::text[])::text
FROM outbox_events e LEFT JOIN learner_sessions s ON s.id = e.session_id
WHERE e.org_id = (SELECT id FROM orgs WHERE slug = %(org)s)
  AND (e.txid, e.feed_seq) > (%(txid)s, %(seq)s)
  AND e.txid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint
ORDER BY e.txid, e.feed_seq
LIMIT %(limit)s
"""
FLOW = {
    "slug": "bench",
    "title": "Feed bench",
    "phases": [
        {
            "id": "phase-1",
            "title": "All",
            "steps": [{"id": "phase-1-step-1", "type": "text", "key": "q1", "prompt": "Q?"}],
        }
    ],
}
HOST = "127.0.0.1"
BIN = Path(sys.executable).parent


def _cursor(txid: int, seq: int) -> str:
    return f"{txid}.{seq}"


@floor.get("/orgs/<org>/events")
def floor_events(org: str) -> Response:
    """The feed's page in raw SQL: one autocommit keyset SELECT, the page encoded by orjson."""
    after = request.args.get("after", "0.0")
    txid, seq = (int(part) for part in after.split("."))
    limit = int(request.args.get("limit", PAGE))
    with pool(autocommit=True).connection() as conn:
        rows = conn.execute(
            FLOOR_SQL, {"org": org, "txid": txid, "seq": seq, "limit": limit + 1}
        ).fetchall()
    events = [
        {
            "id": str(row[0]),
            "cursor": _cursor(row[1], row[2]),
            "type": row[3],
            "occurred_at": row[4].isoformat(),
            "session_id": row[5],
            "external_user_id": row[6],
            "flow": row[7],
            "flow_version": row[8],
            "step_id": row[9],
            "data": orjson.Fragment(row[10]),
        }
        for row in rows[:limit]
    ]
    body = {
        "events": events,
        "next_cursor": events[-1]["cursor"] if events else after,
        "has_more": len(rows) > limit,
    }
    return Response(orjson.dumps(body), mimetype="application/json")


def create_feed_bench_app() -> Any:
    """The bench app (bench/app.py) with the feed's floor mounted (this module's import)."""
    return create_bench_app()


def seed(database_url: str, instance: Path) -> str:
    """Create an org, a flow, sessions and EVENTS step events; return the secret key."""
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from mentorflow.app import create_app
    from mentorflow.flows import authoring, learner_sessions
    from mentorflow.platform.extensions import db
    from mentorflow.tenants import services as tenants
    from mentorflow.tenants.models import KeyKind

    app = create_app(
        {"DATABASE_URL": database_url, "INSTANCE_PATH": str(instance), "SECRET_KEY": "x" * 32}
    )
    with app.app_context():
        upgrade()
        org = tenants.create_org("feed", "Feed")
        _, secret = tenants.create_api_key(org, KeyKind.SECRET)
        flow, _ = authoring.save_draft(org, FLOW)
        version, _ = authoring.publish_version(flow)
        for index in range(SESSIONS):
            learner_sessions.start_session(org, flow, version, external_user_id=f"learner-{index}")
        db.session.commit()
        # Step events as commit_step writes them, inserted in transactions of 5,000 (each
        # its own txid), the way many commits would leave them.
        for start in range(0, EVENTS, 5000):
            db.session.execute(
                sa.text(
                    "INSERT INTO outbox_events (id, org_id, session_id, type, payload, created_at)"
                    " SELECT gen_random_uuid(), :org, s.id, 'step.completed', jsonb_build_object("
                    "'org', 'feed', 'session_id', s.id, 'flow', 'bench', 'flow_version', 1,"
                    "'status', 'active', 'distinct_id', s.external_user_id,"
                    "'memory_container', 'mentorflow-feed-' || s.id,"
                    "'occurred_at', now()::text, 'seq', g,"
                    "'step_id', 'phase-1-step-' || (g % 20 + 1),"
                    "'phase', 'phase-1', 'prompt', 'Question ' || (g % 20 + 1) || '?',"
                    "'step_type', 'text', 'key', 'q' || (g % 20 + 1),"
                    "'answer', 'a short honest answer'), now()"
                    " FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) AS g"
                    " JOIN (SELECT id, external_user_id, row_number() OVER (ORDER BY id) AS n"
                    "       FROM learner_sessions) AS s ON s.n = g % CAST(:sessions AS integer) + 1"
                ),
                {
                    "org": org.id,
                    "lo": start + 1,
                    "hi": min(start + 5000, EVENTS),
                    "sessions": SESSIONS,
                },
            )
            db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return secret


def read_feed(port: int, path: str, secret: str) -> dict[str, Any]:
    """Read the whole feed at ``path`` page by page; return events/s and page latencies."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {secret}"}
    after, events, pages = None, 0, []
    started = time.perf_counter()
    while True:
        query = f"?limit={PAGE}" + (f"&after={after}" if after else "")
        t0 = time.perf_counter()
        conn.request("GET", path + query, headers=headers)
        response = conn.getresponse()
        body = orjson.loads(response.read())
        pages.append(time.perf_counter() - t0)
        assert response.status == 200, body
        events += len(body["events"])
        after = body["next_cursor"]
        if not body["has_more"]:
            break
    seconds = time.perf_counter() - started
    conn.close()
    pages.sort()
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "per_second": events / seconds,
        "page_p50_ms": round(statistics.median(pages) * 1000, 2),
        "page_p99_ms": round(pages[int(len(pages) * 0.99)] * 1000, 2),
    }


def run_feed(database_url: str, env: dict[str, str], rounds: int) -> dict[str, Any]:
    """Seed a feed database, serve it with gunicorn, read it ``rounds`` times each way."""
    base, _, name = database_url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    with tempfile.TemporaryDirectory() as instance:
        secret = seed(
            database_url.replace("postgresql://", "postgresql+psycopg://"), Path(instance)
        )
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        server_env = {
            **env,
            "MENTORFLOW_DATABASE_URL": database_url,
            "MENTORFLOW_INSTANCE_PATH": instance,
        }
        server = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--workers",
                "2",
                "--bind",
                f"{HOST}:{port}",
                "bench.feed:create_feed_bench_app()",
            ],
            env=server_env,
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
            start_new_session=True,
        )
        try:
            wait_http(f"http://{HOST}:{port}/healthz")
            real_path, floor_path = "/v1/orgs/feed/events", "/bench/orgs/feed/events"
            read_feed(port, real_path, secret)  # warm-up, unmeasured
            read_feed(port, floor_path, secret)
            measured = [
                (read_feed(port, real_path, secret), read_feed(port, floor_path, secret))
                for _ in range(rounds)
            ]
        finally:
            server.terminate()
            server.wait(timeout=20)
    ratios = [real["per_second"] / base["per_second"] for real, base in measured]
    real, base = measured[sorted(range(rounds), key=lambda i: ratios[i])[rounds // 2]]
    return {
        "real": real,
        "floor": base,
        "ratio": real["per_second"] / base["per_second"],
        "round_ratios": ratios,
        "page": PAGE,
    }


def feed_lines(feed: dict[str, Any]) -> list[str]:
    """The table's lines of the feed's read rate."""
    real, base = feed["real"], feed["floor"]
    return [
        f"feed read, pages of {feed['page']}: {real['per_second']:.0f} events/s "
        f"(page p50 {real['page_p50_ms']} ms, p99 {real['page_p99_ms']} ms; {real['events']} "
        f"events) vs raw-SQL floor {base['per_second']:.0f} events/s (p50 "
        f"{base['page_p50_ms']} ms): ratio {feed['ratio']:.2f}; rounds "
        + " ".join(f"{r:.2f}" for r in feed["round_ratios"]),
    ]
