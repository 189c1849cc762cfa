"""An offline batch of 20 answers against the same 20 answers as single POSTs (ms per answer).

One keep-alive connection, one request at a time: what a device coming back online pays.
``make bench`` runs it on its PostgreSQL installation; ``python bench/batch.py`` runs it alone.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
#: Answers per batch, as the issue asks: a 20-step bench session answered in one request.
ITEMS = 20
ANSWERS = ["a", 42, "a short honest answer", True]
#: Sessions walked each way; the median session is shown.
SESSIONS = 15


def _item(session_id: str, step: int) -> dict[str, Any]:
    return {
        "step_id": f"phase-1-step-{step + 1}",
        "answer": ANSWERS[step % 4],
        "idempotency_key": f"{session_id}-batch-{step}",
    }


def _post(connection: http.client.HTTPConnection, path: str, token: str, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection.request("POST", path, json.dumps(body), headers)
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"bench: {path} answered {response.status}: {data[:300]!r}")
    return json.loads(data)


def singles(connection: http.client.HTTPConnection, session_id: str, token: str) -> float:
    """Answer the 20 steps one POST each; return the seconds taken."""
    path = f"/v1/orgs/bench/sessions/{session_id}/steps"
    started = time.perf_counter()
    for step in range(ITEMS):
        item = _item(session_id, step)
        connection.request(
            "POST",
            path,
            json.dumps({"step_id": item["step_id"], "answer": item["answer"]}),
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": item["idempotency_key"],
            },
        )
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"bench: {path} answered {response.status}: {data[:300]!r}")
    return time.perf_counter() - started


def batch(connection: http.client.HTTPConnection, session_id: str, token: str) -> float:
    """Answer the 20 steps in one batch; return the seconds taken."""
    path = f"/v1/orgs/bench/sessions/{session_id}/steps/batch"
    items = [_item(session_id, step) for step in range(ITEMS)]
    started = time.perf_counter()
    body = _post(connection, path, token, {"items": items})
    elapsed = time.perf_counter() - started
    outcomes = {result["outcome"] for result in body["results"]}
    if outcomes != {"applied"}:
        raise SystemExit(f"bench: a batch was not applied whole: {outcomes}")
    return elapsed


def measure_batch(port: int, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Return ms per answer, single POSTs vs one batch, over ``SESSIONS`` sessions each way.

    Takes ``2 * SESSIONS + 2`` fresh sessions from ``pairs`` (the first two warm up).
    """
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        singles(connection, *pairs[0])
        batch(connection, *pairs[1])
        rest = pairs[2 : 2 + 2 * SESSIONS]
        single_ms, batch_ms = [], []
        # Alternating, so a noisy neighbour slows both kinds alike.
        for index in range(SESSIONS):
            single_ms.append(singles(connection, *rest[2 * index]) * 1000 / ITEMS)
            batch_ms.append(batch(connection, *rest[2 * index + 1]) * 1000 / ITEMS)
    finally:
        connection.close()
    single, batched = statistics.median(single_ms), statistics.median(batch_ms)
    return {
        "items": ITEMS,
        "sessions": SESSIONS,
        "single_ms_per_answer": round(single, 2),
        "batch_ms_per_answer": round(batched, 2),
        "ratio": round(single / batched, 1),
    }


def batch_line(row: dict[str, Any]) -> str:
    return (
        f"{row['items']}-item batch vs {row['items']} POSTs:  "
        f"{row['batch_ms_per_answer']:.2f} vs {row['single_ms_per_answer']:.2f} ms per answer, "
        f"{row['ratio']:.1f}x fewer (goal >= 5x; median of {row['sessions']} sessions each)"
    )


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.run import LOGS, PG_URL, Installation, recreate_database

    LOGS.mkdir(parents=True, exist_ok=True)
    recreate_database(PG_URL)
    with tempfile.TemporaryDirectory() as instance:
        inst = Installation(PG_URL, Path(instance), "http://127.0.0.1:9")
        pairs = inst.seed(2 * SESSIONS + 2)
        inst.serve()
        try:
            print(batch_line(measure_batch(inst.port, pairs)))
        finally:
            inst.stop()


if __name__ == "__main__":
    main()
