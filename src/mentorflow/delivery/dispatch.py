"""Sink calls side by side, fair between orgs: one slow org never holds another's turn.

A worker process makes up to ``DELIVERY_CONCURRENCY`` sink calls at once, and at most
``DELIVERY_ORG_CONCURRENCY`` of them (always fewer than all) for one org. An org's further
calls wait in its own line, so another org's call always finds a free slot, and each
finished call's outcome is handed back at once, not at the end of a batch.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    """One sink call waiting or running for an org: ``run()`` returns its outcomes."""

    org_id: int
    run: Callable[[], Any]
    payload: Any
    queued_at: float = field(default_factory=time.monotonic)


class Dispatcher:
    """Runs calls on a thread pool, round-robin between orgs, each org capped."""

    def __init__(self, concurrency: int, per_org: int) -> None:
        self.concurrency = max(1, concurrency)
        # Always leave a slot to the other orgs (unless there is only one slot).
        self.per_org = max(1, min(per_org, self.concurrency - 1))
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sink-call")
        self._running: dict[Future[Any], Call] = {}
        self._waiting: dict[int, deque[Call]] = {}
        self._active: Counter[int] = Counter()

    def add(self, call: Call) -> None:
        """Queue ``call`` in its org's line."""
        self._waiting.setdefault(call.org_id, deque()).append(call)

    def busy_orgs(self) -> set[int]:
        """Return the orgs that should not be given more calls now: at their cap, or with
        calls still waiting."""
        waiting = {org for org, line in self._waiting.items() if line}
        return waiting | {org for org, count in self._active.items() if count >= self.per_org}

    def has_room(self) -> bool:
        """Return whether a slot is free."""
        return len(self._running) < self.concurrency

    def idle(self) -> bool:
        """Return whether nothing runs or waits."""
        return not self._running and not any(self._waiting.values())

    def start_ready(self, still_worth_it: Callable[[Call], bool]) -> list[Call]:
        """Start waiting calls while slots are free, one org after the other; return the
        calls dropped instead because ``still_worth_it`` says they waited too long."""
        dropped: list[Call] = []
        started = True
        while started and self.has_room():
            started = False
            for org, line in list(self._waiting.items()):
                if not self.has_room():
                    break
                if not line or self._active[org] >= self.per_org:
                    continue
                call = line.popleft()
                # The org just served goes to the back of the round.
                del self._waiting[org]
                if line:
                    self._waiting[org] = line
                started = True
                if not still_worth_it(call):
                    dropped.append(call)
                    continue
                self._active[org] += 1
                self._running[self._pool.submit(call.run)] = call
        return dropped

    def wait(self, timeout: float) -> list[tuple[Call, Any]]:
        """Wait up to ``timeout`` seconds for calls to finish; return each finished call
        with its result."""
        if not self._running:
            return []
        done, _ = wait(self._running, timeout=timeout, return_when=FIRST_COMPLETED)
        finished = []
        for future in done:
            call = self._running.pop(future)
            self._active[call.org_id] -= 1
            finished.append((call, future.result()))
        return finished

    def close(self) -> list[Call]:
        """Stop: return the calls that never started; running calls end on their own
        (each within its deadline), their outcomes dropped."""
        left = [call for line in self._waiting.values() for call in line]
        self._waiting.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return left
