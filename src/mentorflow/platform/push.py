"""Push: tell open streams, in any process, that a learner session changed.

A change is (org, flow, session, version). Writers announce it in their transaction
(:func:`announce_after_commit`); it is published once the transaction commits, never on
rollback. A stream subscribes to sessions or flows and waits for changes.

Two backends, chosen as the rate limiter chooses its storage:

- with a Redis broker, one pub/sub channel: each process publishes its commits and one listener
  thread per process hands what it hears to that process's subscribers;
- on the embedded default (no Redis), one poller thread per process reads the versions of the
  sessions and flows its streams watch, in one query per tick. It needs no writer's
  cooperation, so a change made by any process (another web worker, the CLI, the beat's
  abandonment sweep) reaches the stream within a tick.

Either way a change committed in this process reaches this process's streams at once.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from flask import Flask, current_app

from mentorflow.platform.db import utcnow
from mentorflow.platform.outbox import WriteTransaction, call_after_commit

log = logging.getLogger(__name__)

CHANNEL = "mentorflow:push"
_EXTENSION = "mentorflow.push"
#: A Redis that stops answering must not hold a publisher or listener for the OS's timeout.
REDIS_TIMEOUT_SECONDS = 2.0
#: How far back the flow poll looks, past its last tick: commits land out of order.
FLOW_POLL_OVERLAP = timedelta(seconds=5)


@dataclass(frozen=True)
class Change:
    """A session's new version, committed."""

    org_id: int
    flow_id: int
    session_id: str
    version: int
    #: The learner whose session (or, keyed ``learner:<id>``, whose own state) changed.
    learner_id: int | None = None


#: Reads the current versions of ``session_ids``, of the sessions of ``flows`` ((org id,
#: flow id) pairs) updated since the given time, and of ``learner_ids``' states and sessions
#: updated since then. The flows package provides it.
VersionReader = Callable[[set[str], set[tuple[int, int]], datetime, set[int]], list[Change]]


@dataclass(eq=False)
class Subscription:
    """What one stream watches, and the changes that arrived for it since it last looked."""

    session_ids: frozenset[str]
    flows: frozenset[tuple[int, int]]
    learner_ids: frozenset[int] = frozenset()
    _latest: dict[str, Change] = field(default_factory=dict)
    _resync: bool = False
    _ready: threading.Condition = field(default_factory=threading.Condition)

    def wants(self, change: Change) -> bool:
        return (
            change.session_id in self.session_ids
            or (change.org_id, change.flow_id) in self.flows
            or (change.learner_id is not None and change.learner_id in self.learner_ids)
        )

    def offer(self, change: Change) -> None:
        with self._ready:
            known = self._latest.get(change.session_id)
            if known is None or known.version < change.version:
                self._latest[change.session_id] = change
                self._ready.notify_all()

    def resync(self) -> None:
        """Tell the subscriber changes may have been missed (the backend reconnected)."""
        with self._ready:
            self._resync = True
            self._ready.notify_all()

    def wait(self, timeout: float) -> tuple[list[Change], bool]:
        """Return the changes that arrived (the newest per session), waiting up to ``timeout``,
        and whether some may have been missed (re-read what is watched)."""
        with self._ready:
            if not self._latest and not self._resync:
                self._ready.wait(timeout)
            changes, self._latest = list(self._latest.values()), {}
            resync, self._resync = self._resync, False
        return changes, resync


class Hub:
    """One process's subscribers, and the backend that carries changes between processes."""

    def __init__(self, app: Flask, reader: VersionReader, redis_url: str | None) -> None:
        self._app = app
        self._reader = reader
        self._redis_url = redis_url
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        # The threads this process runs: a listener (or poller) once a stream subscribes, a
        # publisher once a change is published; a process that only writes never listens.
        self._started: set[str] = set()
        self._outgoing: queue.SimpleQueue[Change] = queue.SimpleQueue()

    @property
    def backend(self) -> str:
        return "redis" if self._redis_url else "poll"

    def subscribe(
        self,
        session_ids: Iterable[str] = (),
        flows: Iterable[tuple[int, int]] = (),
        learner_ids: Iterable[int] = (),
    ) -> Subscription:
        subscription = Subscription(
            frozenset(session_ids), frozenset(flows), frozenset(learner_ids)
        )
        with self._lock:
            self._subscriptions.add(subscription)
            self._start("listen" if self._redis_url else "poll")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def dispatch(self, changes: Iterable[Change]) -> None:
        """Hand ``changes`` to this process's subscribers that watch them."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for change in changes:
            for subscription in subscriptions:
                if subscription.wants(change):
                    subscription.offer(change)

    def publish(self, changes: list[Change]) -> None:
        """Announce committed ``changes``: to this process at once, to the others by the backend."""
        self.dispatch(changes)
        if self._redis_url:
            for change in changes:
                self._outgoing.put(change)
            with self._lock:
                self._start("publish")

    def _start(self, name: str) -> None:
        # Called with the lock held.
        if name in self._started:
            return
        self._started.add(name)
        target = {"listen": self._listen_redis, "publish": self._publish_redis, "poll": self._poll}
        threading.Thread(target=target[name], name=f"mentorflow-push-{name}", daemon=True).start()

    def _redis(self) -> Any:
        return redis.Redis.from_url(
            self._redis_url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            health_check_interval=30,
        )

    def _publish_redis(self) -> None:
        client = self._redis()
        while True:
            changes = [self._outgoing.get()]
            while not self._outgoing.empty() and len(changes) < 500:
                changes.append(self._outgoing.get_nowait())
            try:
                with client.pipeline(transaction=False) as pipe:
                    for change in changes:
                        pipe.publish(CHANNEL, _encode(change))
                    pipe.execute()
            except Exception as exc:
                # Streams re-read their session at each heartbeat: a lost message delays a
                # push by at most that long.
                log.warning("could not publish %d session changes: %s", len(changes), exc)

    def _listen_redis(self) -> None:
        lost = False
        while True:
            try:
                pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                if lost:
                    log.warning("push listener reached Redis again")
                    lost = False
                # Whatever was published while not subscribed is lost: have every stream
                # re-read what it watches.
                with self._lock:
                    subscriptions = list(self._subscriptions)
                for subscription in subscriptions:
                    subscription.resync()
                for message in pubsub.listen():
                    change = _decode(message.get("data"))
                    if change is not None:
                        self.dispatch([change])
            except Exception as exc:
                if not lost:  # once an outage, not every second of it
                    log.warning("push listener lost Redis (%s); reconnecting", exc)
                    lost = True
                time.sleep(1)

    def _poll(self) -> None:
        interval = float(self._app.config["STREAM_POLL_INTERVAL"])
        since = utcnow()
        while True:
            time.sleep(interval)
            with self._lock:
                subscriptions = list(self._subscriptions)
            if not subscriptions:
                continue
            session_ids = set().union(*(s.session_ids for s in subscriptions))
            flows = set().union(*(s.flows for s in subscriptions))
            learner_ids = set().union(*(s.learner_ids for s in subscriptions))
            started = utcnow()
            try:
                with self._app.app_context():
                    changes = self._reader(
                        session_ids, flows, since - FLOW_POLL_OVERLAP, learner_ids
                    )
            except Exception:
                log.exception("push poll failed; retrying next tick")
                continue
            since = started
            self.dispatch(changes)


def _encode(change: Change) -> str:
    fields = [change.org_id, change.flow_id, change.session_id, change.version]
    if change.learner_id is not None:
        fields.append(change.learner_id)
    return json.dumps(fields)


def _decode(data: Any) -> Change | None:
    try:
        org_id, flow_id, session_id, version, *rest = json.loads(data)
        learner_id = int(rest[0]) if rest and rest[0] is not None else None
        return Change(int(org_id), int(flow_id), str(session_id), int(version), learner_id)
    except (TypeError, ValueError, IndexError):
        return None


def redis_url(config: Any) -> str | None:
    """Return the Redis that carries changes between processes: the broker's, if it is Redis."""
    broker = str(config.get("BROKER_URL") or "")
    return broker if broker.startswith(("redis://", "rediss://")) else None


def init_push(app: Flask, reader: VersionReader) -> Hub:
    """Give ``app`` its hub; ``reader`` serves the embedded backend's poll."""
    hub = Hub(app, reader, redis_url(app.config))
    app.extensions[_EXTENSION] = hub
    return hub


def current_hub() -> Hub:
    return current_app.extensions[_EXTENSION]


def announce_after_commit(change: Change, transaction: WriteTransaction | None = None) -> None:
    """Publish ``change`` once ``transaction`` (else the ORM session's) commits."""
    hub = current_app.extensions.get(_EXTENSION)
    if hub is not None:
        call_after_commit(lambda: hub.publish([change]), transaction)
