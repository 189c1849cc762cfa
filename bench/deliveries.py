"""The delivery rows of `make bench`: one worker process drains the backlog the step runs
left, then the lag of deliveries while learners commit at a steady rate.

``python bench/run.py deliveries`` runs these two rows alone, on a backlog of their own (see
``run_deliveries`` in bench/run.py).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.load import LoadResult, RequestFactory, open_loop

#: The drain is measured over this many seconds at most (what is left is then drained
#: unmeasured, or cleared, before the lag phase).
DRAIN_SECONDS = 300.0
#: How long the rest of the backlog may take to drain before the lag phase clears it.
REST_SECONDS = 600.0


def measure_drain(inst: Any, bin_dir: Path) -> tuple[dict[str, Any], subprocess.Popen]:
    """Start one worker process (``--concurrency 1``) on the backlog and time it; return the
    figures and the worker, left running. The backlog is gone when this returns: what the
    measurement's window left is drained (or, past :data:`REST_SECONDS`, cleared)."""
    backlog = inst.pending()
    worker = inst.start(
        str(bin_dir / "mentorflow"), "worker", "--concurrency", "1", "--loglevel", "WARNING"
    )
    # The step runs' wake-ups were flushed with Redis: one message starts the drain.
    subprocess.run(
        [bin_dir / "mentorflow", "deliveries", "retry"],
        env=inst.env,
        capture_output=True,
        check=True,
    )
    started = time.monotonic()
    left = wait_drained(inst, started + DRAIN_SECONDS)
    elapsed = time.monotonic() - started
    figures = {
        "backlog": backlog,
        "delivered": backlog - left,
        "seconds": round(elapsed, 2),
        "per_second": round((backlog - left) / elapsed, 1),
        "left_pending": left,
        # Drained after the measurement, before the lag phase (unmeasured), or cleared.
        "drained_after": 0,
        "cleared_before_lag": 0,
    }
    if left:
        rest = wait_drained(inst, time.monotonic() + REST_SECONDS)
        figures["drained_after"] = left - rest
        if rest:
            figures["cleared_before_lag"] = clear_pending(inst)
    return figures, worker


def wait_drained(inst: Any, until: float) -> int:
    """Wait until no delivery is pending or ``until`` (monotonic) passes; return how many
    are left."""
    left = inst.pending()
    while left and time.monotonic() < until:
        time.sleep(0.2)
        left = inst.pending()
    return left


def clear_pending(inst: Any) -> int:
    """Mark every pending delivery delivered (the lag phase must start with none queued);
    return how many."""
    from mentorflow.platform.extensions import db
    from mentorflow.platform.outbox import Delivery

    with inst.app.app_context():
        result = db.session.execute(
            sa.update(Delivery).where(Delivery.status == "pending").values(status="delivered")
        )
        db.session.commit()
        db.session.remove()
    return result.rowcount or 0


def measure_lag(
    inst: Any,
    bin_dir: Path,
    sink_url: str,
    rate: float,
    seconds: float,
    sessions: set[str],
    factory: RequestFactory,
    host: str,
) -> dict[str, Any]:
    """Commit at ``rate`` steps/s for ``seconds`` (open loop) with the worker and the beat
    running, on no backlog; return the lag of the step events at every sink."""
    queued = inst.pending()
    if queued:
        raise RuntimeError(f"the lag phase must start with no delivery queued ({queued} are)")
    inst.start(str(bin_dir / "mentorflow"), "beat", "--loglevel", "WARNING")
    steady = open_loop(host, inst.port, rate, seconds, factory)
    wait_drained(inst, time.monotonic() + 60)
    return lag_figures(inst, sink_url, sessions, steady, rate)


def lag_figures(
    inst: Any, sink_url: str, sessions: set[str], steady: LoadResult, target: float
) -> dict[str, Any]:
    from mentorflow.platform.extensions import db
    from mentorflow.platform.outbox import OutboxEvent

    arrivals = json.loads(urllib.request.urlopen(f"{sink_url}/arrivals").read())
    with inst.app.app_context():
        rows = db.session.execute(
            sa.select(
                OutboxEvent.id, OutboxEvent.session_id, OutboxEvent.payload, OutboxEvent.created_at
            ).where(OutboxEvent.type == "step.completed", OutboxEvent.session_id.in_(sessions))
        ).all()
        db.session.remove()
    lags = []
    for event_id, session_id, payload, created_at in rows:
        at_sinks = (
            arrivals["posthog"].get(str(event_id)),
            arrivals["memory"].get(f"{session_id}-{payload['seq']}"),
            arrivals["webhook"].get(str(event_id)),
        )
        if all(at_sinks):
            lags.append(max(at_sinks) - created_at.timestamp())
    lags.sort()

    def pct(p: float) -> float:
        return round(lags[min(len(lags) - 1, int(p / 100 * len(lags)))] * 1000, 1) if lags else -1

    return {
        "target_per_second": round(target, 1),
        "commits_per_second": round(steady.rate(200), 1),
        "events": len(rows),
        "delivered_all": len(lags),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "max_ms": pct(100),
    }


def delivery_lines(delivery: dict[str, Any], lag: dict[str, Any]) -> list[str]:
    """Return the bench table's rows of the delivery figures."""
    rest = ""
    if delivery["left_pending"]:
        rest = f"; the {delivery['left_pending']} left drained after, unmeasured"
        if delivery["cleared_before_lag"]:
            rest += f" (or cleared: {delivery['cleared_before_lag']})"
    return [
        f"deliveries, one worker process:   {delivery['per_second']:.0f}/s "
        f"({delivery['delivered']} of {delivery['backlog']} in {delivery['seconds']} s{rest})"
        f"  goal ≥ 1000: {'met' if delivery['per_second'] >= 1000 else 'NOT met'}",
        f"lag commit → sinks at {lag['commits_per_second']:.0f} commits/s "
        f"(target {lag['target_per_second']:.0f}, no backlog): p50 {lag['p50_ms']} ms, "
        f"p95 {lag['p95_ms']} ms, max {lag['max_ms']} ms ({lag['delivered_all']}/{lag['events']} "
        f"events at all three sinks)  goal p95 < 1000 ms: "
        f"{'met' if 0 <= lag['p95_ms'] < 1000 else 'NOT met'}",
    ]
