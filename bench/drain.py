"""Deliveries in one process: drain a backlog with ``deliver_due``, timed or under cProfile.

The harness of the delivery row's profiles (bench/README.md, "Deliveries"):

    python bench/drain.py prepare   # a backlog as the bench leaves it, kept as a template
    python bench/drain.py run       # copy the template, drain it here; deliveries/s
    python bench/drain.py profile   # the same under cProfile (the main thread's calls)

``prepare`` seeds the bench org (PostHog, Supermemory and a webhook endpoint: three
deliveries per step) and has 32 connections walk sessions through their steps against
gunicorn for ``MENTORFLOW_BENCH_BACKLOG_SECONDS`` (default 10), so consecutive events come
from different sessions, as in `make bench`. Each ``run`` drains a fresh copy of that
database into bench/sink.py, so runs of two versions of the code back to back drain the
same backlog (``PYTHONPATH=<other checkout>/src python bench/drain.py run``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on the path, and its profile.py is not the
# standard library's (which cProfile imports).
sys.path[0] = str(ROOT)

import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.run import (  # noqa: E402
    HOST,
    LOGS,
    PG_URL,
    Installation,
    free_port,
    measure_steps,
    recreate_database,
    wait_http,
)

TEMPLATE_URL = f"{PG_URL}_backlog"
WORK_URL = f"{PG_URL}_drain"
BACKLOG_SECONDS = float(os.environ.get("MENTORFLOW_BENCH_BACKLOG_SECONDS", "10"))


def start_sink() -> tuple[subprocess.Popen, str]:
    port = free_port()
    sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink.py"), str(port)])
    wait_http(f"http://{HOST}:{port}/arrivals")
    return sink, f"http://{HOST}:{port}"


def profile_sink_calls(profiles: list[cProfile.Profile]) -> None:
    """Profile each sink call in its thread (cProfile sees one thread), in CPU time (so a
    thread waiting for the GIL or a reply counts nothing)."""
    from mentorflow.delivery import services

    original = services._sink_call

    def profiled(*args: object) -> object:
        call = original(*args)

        def run() -> object:
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
            try:
                return call()
            finally:
                profiler.disable()
                profiles.append(profiler)

        return run

    services._sink_call = profiled


def cpu_seconds(pid: int) -> float:
    """Return the CPU seconds (user and system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare() -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    recreate_database(TEMPLATE_URL)
    with tempfile.TemporaryDirectory() as instance:
        inst = Installation(TEMPLATE_URL, Path(instance), "http://127.0.0.1:9")
        pairs = inst.seed(int(BACKLOG_SECONDS * 600 / 20) + 100)
        inst.serve()
        try:
            figures = measure_steps(inst.port, pairs, 32, seconds=BACKLOG_SECONDS)
        finally:
            inst.stop()
        print(f"backlog: {inst.pending()} deliveries ({figures['per_second']} steps/s)")
        from mentorflow.platform.extensions import db

        with inst.app.app_context():
            db.engine.dispose()


def copy_template() -> None:
    base, _, name = WORK_URL.rpartition("/")
    template = TEMPLATE_URL.rpartition("/")[2]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    with psycopg.connect(WORK_URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def drain(profile: bool) -> None:
    copy_template()
    sink, sink_url = start_sink()
    try:
        with tempfile.TemporaryDirectory() as instance:
            inst = Installation(WORK_URL, Path(instance), sink_url)
            from mentorflow.delivery.services import deliver_due
            from mentorflow.platform.extensions import db

            with inst.app.app_context():
                # The endpoint's URL names the sink of the run that prepared the backlog.
                db.session.execute(
                    sa.text("UPDATE webhook_endpoints SET url = :url"),
                    {"url": sink_url + "/webhook"},
                )
                db.session.commit()
            backlog = inst.pending()
            profiler = cProfile.Profile(time.thread_time) if profile else None
            calls_profiled: list[cProfile.Profile] = []
            if profile:
                profile_sink_calls(calls_profiled)
            with inst.app.app_context():
                started, cpu, sink_cpu = (
                    time.monotonic(),
                    time.process_time(),
                    cpu_seconds(sink.pid),
                )
                if profiler:
                    profiler.enable()
                delivered = calls = 0
                while True:
                    result = deliver_due()
                    delivered += result.claimed
                    calls += 1
                    if result.drained:
                        break
                if profiler:
                    profiler.disable()
                elapsed = time.monotonic() - started
                cpu, sink_cpu = time.process_time() - cpu, cpu_seconds(sink.pid) - sink_cpu
                db.session.remove()
            left = inst.pending()
            stats = json.loads(urllib.request.urlopen(f"{sink_url}/connections").read())
            print(
                f"drained {delivered} of {backlog} in {elapsed:.2f} s: "
                f"{delivered / elapsed:.0f} deliveries/s ({left} left; "
                f"{calls} deliver_due calls; sink: {stats['connections']} connections, "
                f"{stats['requests']} requests); CPU: this process {cpu:.1f} s, "
                f"the sink {sink_cpu:.1f} s"
            )
            if profiler:
                out = io.StringIO()
                print("== the main thread (claims, outcomes)", file=out)
                stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
                stats.print_stats(40)
                stats.sort_stats("tottime").print_stats(25)
                print("== the sink calls (threads)", file=out)
                stats = pstats.Stats(*calls_profiled, stream=out).sort_stats("cumulative")
                stats.print_stats(40)
                stats.sort_stats("tottime").print_stats(25)
                print(out.getvalue())
                if os.environ.get("MENTORFLOW_BENCH_PROFILE_OUT"):
                    stats.dump_stats(os.environ["MENTORFLOW_BENCH_PROFILE_OUT"])
            with inst.app.app_context():
                db.engine.dispose()
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "prepare":
        prepare()
    elif command in ("run", "profile"):
        drain(profile=command == "profile")
    else:
        raise SystemExit(__doc__)
