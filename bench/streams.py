"""Live push under load: 1,000 open session streams while learners commit steps.

Against the real `mentorflow serve` (gunicorn gthread) on PostgreSQL + Redis:

- POST …/steps throughput (closed loop) without streams, then while 1,000 streams are held
  open by another process: the cost of holding them;
- while the streams are open, commits at 100 steps/s (open loop) on streamed sessions: the
  time from a commit's response to its `state` event reaching the stream's client (p50/p95).

Run alone with ``python bench/streams.py`` (PostgreSQL and Redis as for ``make bench``).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import open_loop  # noqa: E402
from bench.run import (  # noqa: E402
    BIN,
    HOST,
    LOGS,
    PG_URL,
    SECONDS,
    Installation,
    free_port,
    measure_steps,
    recreate_database,
    round_robin_walker,
    wait_http,
)

STREAMS = int(os.environ.get("MENTORFLOW_BENCH_STREAMS", "1000"))
COMMIT_RATE = 100.0
CONNECTIONS = 32
#: Sessions per connection for the one-second warm-up: 80 steps each, more than it can take.
WARM_UP_SESSIONS = 4
#: Each throughput measurement spans a whole heartbeat round (15 s) of the open streams.
THROUGHPUT_SECONDS = max(SECONDS, 16.0)


async def _hold(port: int, pairs: list[tuple[str, str]], ready: Any, stop: Any, out: Any) -> None:
    arrivals: list[tuple[str, int, float]] = []
    opened = 0
    failed = 0

    async def one(session_id: str, token: str) -> None:
        nonlocal opened, failed
        try:
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
            writer.write(
                (
                    f"GET /v1/orgs/bench/sessions/{session_id}/stream HTTP/1.1\r\n"
                    f"Host: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
                    "Last-Event-ID: 1\r\nAccept: text/event-stream\r\n\r\n"
                ).encode()
            )
            status = await reader.readline()
            if b" 200 " not in status:
                failed += 1
                return
            opened += 1
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"id: "):
                    arrivals.append((session_id, int(line[4:]), time.time()))
        except OSError:
            failed += 1

    tasks = []
    for session_id, token in pairs:
        tasks.append(asyncio.create_task(one(session_id, token)))
        await asyncio.sleep(0.002)  # don't open a thousand connections in one burst
    while opened + failed < len(pairs):
        await asyncio.sleep(0.1)
    ready.put((opened, failed))
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    out.put(arrivals)


def _holder(port: int, pairs: list[tuple[str, str]], ready: Any, stop: Any, out: Any) -> None:
    asyncio.run(_hold(port, pairs, ready, stop, out))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def run_streams() -> dict[str, Any]:
    """Measure and return the live-push figures."""
    LOGS.mkdir(parents=True, exist_ok=True)
    database = f"{PG_URL}_streams"
    recreate_database(database)
    inst = Installation(
        database, Path(tempfile.mkdtemp(prefix="bench-streams-")), "http://127.0.0.1:9"
    )
    threads = STREAMS // 2 + 64  # room for an uneven spread over the 4 workers
    inst.env.update(
        {
            "MENTORFLOW_WEB_THREADS": str(threads),
            "MENTORFLOW_STREAM_LIMIT": str(threads - 16),
            "MENTORFLOW_SINKS": "",
        }
    )
    # Fresh sessions per throughput measurement (each walks 20 steps).
    measured = int(THROUGHPUT_SECONDS * 1500 / 20) + 50 + WARM_UP_SESSIONS * CONNECTIONS
    pairs = inst.seed(STREAMS + 2 * measured)
    streamed, before, during = (
        pairs[:STREAMS],
        pairs[STREAMS : STREAMS + measured],
        pairs[STREAMS + measured :],
    )
    port = free_port()
    inst.port = port
    inst.start(str(BIN / "mentorflow"), "serve", "--host", HOST, "--port", str(port))
    wait_http(f"http://{HOST}:{port}/healthz")
    context = multiprocessing.get_context("spawn")
    ready, out, stop = context.Queue(), context.Queue(), context.Event()
    holder = None
    try:
        # Warm up, unmeasured: each connection gets sessions of its own (wrk gives each
        # thread its share), more than it can walk in a second. With one each, a connection
        # that took more than its session's 20 steps in that second ran out of sessions, and
        # wrk stopped with a Lua error: the crash of this phase on a quiet machine.
        warm = WARM_UP_SESSIONS * CONNECTIONS
        measure_steps(port, before[:warm], CONNECTIONS, "/v1", seconds=1)
        without = measure_steps(port, before[warm:], CONNECTIONS, "/v1", seconds=THROUGHPUT_SECONDS)
        holder = context.Process(target=_holder, args=(port, streamed, ready, stop, out))
        holder.start()
        opened, failed = ready.get(timeout=300)
        commits = open_loop(
            HOST, port, COMMIT_RATE, SECONDS, round_robin_walker(streamed, "/v1", port)
        )
        with_streams = measure_steps(port, during, CONNECTIONS, "/v1", seconds=THROUGHPUT_SECONDS)
        time.sleep(1)
        stop.set()
        arrivals = out.get(timeout=60)
    finally:
        stop.set()
        if holder is not None:
            holder.join(timeout=30)
        inst.stop()
    committed: dict[tuple[str, int], float] = {}
    for finished, body in commits.completions:
        try:
            session = json.loads(body)["session"]
        except (ValueError, KeyError):
            continue
        committed[(session["id"], session["version"])] = finished
    delays = [
        max(0.0, arrived - committed[(sid, version)]) * 1000
        for sid, version, arrived in arrivals
        if (sid, version) in committed
    ]
    cost = 1 - with_streams["per_second"] / without["per_second"]
    return {
        "streams_open": opened,
        "streams_refused": failed,
        "commits": len(committed),
        "events_matched": len(delays),
        "push_p50_ms": round(percentile(delays, 50), 1),
        "push_p95_ms": round(percentile(delays, 95), 1),
        "post_steps_without_streams": without["per_second"],
        "post_steps_with_streams": with_streams["per_second"],
        "throughput_cost_percent": round(100 * cost, 1),
    }


def streams_lines(figures: dict[str, Any]) -> list[str]:
    """Return the bench table's rows of the live-push figures."""
    return [
        f"{figures['streams_open']} open streams ({figures['streams_refused']} refused), "
        f"{COMMIT_RATE:.0f} steps/s: commit → client p50 {figures['push_p50_ms']} ms, "
        f"p95 {figures['push_p95_ms']} ms (goal < 250 ms; "
        f"{figures['events_matched']}/{figures['commits']} events)",
        f"POST …/steps @{CONNECTIONS} holding them: {figures['post_steps_with_streams']:.0f}/s vs "
        f"{figures['post_steps_without_streams']:.0f}/s without "
        f"({figures['throughput_cost_percent']}% cost; goal ≤ 10 %)",
    ]


if __name__ == "__main__":
    results = run_streams()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "streams.json").write_text(json.dumps(results, indent=2))
    print("\n".join(streams_lines(results)))
