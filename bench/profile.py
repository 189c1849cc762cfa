"""Instructions and round trips per request: load-independent figures for bench/README.md.

``python bench/profile.py`` prints, for ``POST …/steps`` (with an Idempotency-Key) and the
conditional GET (304), on PostgreSQL:

- round trips to the server per request, counted in libpq's protocol trace (a simple query
  or an extended-protocol Sync each wait for the server once);
- instructions per request, from valgrind's callgrind: the script runs under it once per
  ``app:what`` (setup, 20 steps and 20 GETs of warm-up on that app, then N requests of
  ``what``) and once as ``app:none`` (the same setup, imports and warm-up, no more), in-process
  through the WSGI app (Flask's test client); the difference over N is per request. The
  wake-up of the workers after a commit is left out (under valgrind its thread sends a
  message per request). With ``MENTORFLOW_PROFILE_FLOORS=1``, also the floors of
  bench/floor.py (minimal step, same statements, 304) and of bench/stack_floor.py (the same
  statements and 304 through the product's libraries) the same way. Only the client
  process's instructions count: the PostgreSQL server's work is not in them.

``MENTORFLOW_BENCH_DATABASE_URL`` as for ``make bench`` (``_profile`` is appended).
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg import pq

ROOT = Path(__file__).resolve().parents[1]
PG_URL = (
    os.environ.get(
        "MENTORFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mentorflow_bench"
    )
    + "_profile"
)
REQUESTS = int(os.environ.get("MENTORFLOW_PROFILE_REQUESTS", "100"))
WARM = 20
STEPS = 20


def setup() -> tuple[object, list[tuple[str, str]]]:
    """An app on a fresh database with the bench flow and sessions to walk."""
    sys.path.insert(0, str(ROOT))
    from bench.run import bench_flow
    from mentorflow.app import create_app
    from mentorflow.flows import authoring, learner_sessions
    from mentorflow.platform.extensions import db
    from mentorflow.tenants import services as tenants

    instance = tempfile.mkdtemp()
    app = create_app(
        {
            "DATABASE_URL": PG_URL,
            "INSTANCE_PATH": instance,
            "SECRET_KEY": "profile-secret-key-of-at-least-32-bytes",
            "RATE_LIMIT": "10000000 per minute",
            "RATE_LIMIT_STORAGE_URL": "memory://",
        }
    )
    app.extensions.pop("mentorflow.after_commit_hooks", None)  # the wake-up: left out
    pairs = []
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        org = tenants.create_org("bench", "Bench")
        flow, _ = authoring.save_draft(org, bench_flow())
        version, _ = authoring.publish_version(flow)
        for _ in range((2 * REQUESTS + 2 * WARM) // STEPS + 2):
            session, token = learner_sessions.start_session(org, flow, version)
            pairs.append((session.id, token))
        db.session.commit()
        db.session.remove()
    return app, pairs


def walker(app, pairs, prefix="/v1"):
    """Return an iterator of responses, each answering the next step of a session."""
    client = app.test_client()
    answers = ["a", 42, "a short honest answer", True]
    sessions = iter(pairs)

    def steps():
        while True:
            session_id, token = next(sessions)
            for step in range(STEPS):
                body = {"step_id": f"phase-1-step-{step + 1}", "answer": answers[step % 4]}
                yield client.post(
                    f"{prefix}/orgs/bench/sessions/{session_id}/steps",
                    json=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Idempotency-Key": f"{session_id}-{step}",
                    },
                )

    return steps()


def getter(app, pairs, prefix="/v1"):
    client = app.test_client()
    session_id, token = pairs[-1]

    def get():
        return client.get(
            f"{prefix}/orgs/bench/sessions/{session_id}",
            headers={"Authorization": f"Bearer {token}", "If-None-Match": '"1"'},
        )

    return get


def recreate() -> None:
    base, _, name = PG_URL.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def run(mode: str) -> None:
    """One process's work for ``mode`` (``app:what``): setup, that app's warm-up, then
    ``REQUESTS`` requests of ``what`` (none for ``app:none``, the baseline subtracted)."""
    app, pairs = setup()
    family, what = mode.split(":")
    steps, get = walker(app, pairs), getter(app, pairs)
    if family != "product":
        # The floors on the same database: bench/floor.py (bare) or bench/stack_floor.py.
        os.environ["FLOOR_DATABASE_URL"] = PG_URL
        if family == "stack":
            from bench import stack_floor as floor
        else:
            from bench import floor
        prefix = "/same" if what == "same" else ""
        steps, get = walker(floor.app, pairs, prefix), getter(floor.app, pairs, "")
    for _ in range(WARM):
        assert next(steps).status_code == 200
        assert get().status_code == 304
    # The setup's objects (the app, the sessions) go to the permanent generation: otherwise
    # whether a full collection of them falls among the measured requests (tens of millions
    # of instructions each) decides a figure more than the requests do.
    gc.collect()
    gc.freeze()
    for _ in range(REQUESTS if what != "none" else 0):
        if what == "get":
            assert get().status_code == 304
        else:
            assert next(steps).status_code == 200


def round_trips() -> dict[str, float]:
    """Round trips per request, from libpq's trace of every pooled connection."""
    from sqlalchemy import event

    from mentorflow.platform.extensions import db

    recreate()
    app, pairs = setup()
    steps, get = walker(app, pairs), getter(app, pairs)
    for _ in range(WARM):
        next(steps), get()
    counts = {}
    with app.app_context():
        engine = db.engine
    for name, request in (("post", lambda: next(steps)), ("get", get)):
        handle, path = tempfile.mkstemp()

        def on_checkout(dbapi_connection, record, proxy, handle=handle):
            dbapi_connection.pgconn.trace(handle)
            dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

        def on_checkin(dbapi_connection, record):
            if dbapi_connection is not None:
                dbapi_connection.pgconn.untrace()

        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)
        for _ in range(REQUESTS):
            request()
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
        os.close(handle)
        text = Path(path).read_text()
        os.unlink(path)
        waits = len(re.findall(r"^F\t\d+\t(?:Query|Sync)\b", text, re.MULTILINE))
        counts[name] = waits / REQUESTS
    return counts


def instructions(modes: tuple[str, ...]) -> dict[str, float]:
    """Instructions per request under callgrind: each ``app:what`` run minus its ``app:none``
    run (setup, imports and the same warm-up), over ``REQUESTS``."""
    totals = {}
    baselines = tuple(dict.fromkeys(f"{mode.split(':')[0]}:none" for mode in modes))
    for mode in (*baselines, *modes):
        recreate()
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "callgrind.out"
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "run",
                    mode,
                ],
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            totals[mode] = int(re.search(r"^totals: (\d+)", out.read_text(), re.M).group(1))
    return {
        mode: (totals[mode] - totals[f"{mode.split(':')[0]}:none"]) / REQUESTS for mode in modes
    }


def main() -> None:
    trips = round_trips()
    print(f"round trips per request: POST …/steps {trips['post']:.2f}, 304 GET {trips['get']:.2f}")
    if os.environ.get("MENTORFLOW_PROFILE_CALLGRIND", "1") != "0":
        modes: tuple[str, ...] = ("product:post", "product:get")
        if os.environ.get("MENTORFLOW_PROFILE_FLOORS") == "1":
            modes += ("floor:post", "floor:same", "floor:get", "stack:post", "stack:get")
        counts = instructions(modes)
        print(
            "instructions per request (callgrind): "
            + ", ".join(f"{mode} {count / 1e6:.2f} M" for mode, count in counts.items())
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        run(sys.argv[2])
    else:
        main()
