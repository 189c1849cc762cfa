"""Messages reach the session's memory container through a real worker, even one killed with
SIGKILL mid-delivery: every message once, under its stable document id."""

from __future__ import annotations

import pytest
import redis

from support import Learner
from test_worker import REDIS_URL, Stack, redis_reachable, service_missing, settled

SESSIONS, MESSAGES = 60, 4


@pytest.fixture
def stack(backend, recorder, tmp_path):
    if not redis_reachable(REDIS_URL):
        service_missing(f"Redis is not reachable at {REDIS_URL}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    stack = Stack(backend, recorder, tmp_path, REDIS_URL)
    yield stack
    stack.close()


def talk(stack: Stack) -> dict[str, str]:
    """Start SESSIONS sessions with MESSAGES messages each; return each container by session."""
    client = stack.app.test_client()
    containers = {}
    for index in range(SESSIONS):
        learner = Learner(client, "workers", stack.pk)
        started = learner.start("onboarding")
        containers[learner.session_id] = started.json["session"]["memory_container"]
        for seq in range(1, MESSAGES + 1):
            response = client.post(
                f"/v1/orgs/workers/sessions/{learner.session_id}/messages",
                json={"role": "user" if seq % 2 else "assistant", "content": f"{index}:{seq}"},
                headers={"Authorization": f"Bearer {learner.token}"},
            )
            assert response.status_code == 201
    return containers


def message_documents(recorder) -> list[dict]:
    return [
        d for d in recorder.memory_documents() if d.get("metadata", {}).get("kind") == "message"
    ]


def test_messages_reach_the_memory_container_with_stable_ids_after_a_sigkill(stack, recorder):
    containers = talk(stack)
    total = SESSIONS * MESSAGES
    worker = stack.processes.worker()
    recorder.wait_for(lambda r: len(message_documents(r)) >= 10, timeout=60)
    stack.processes.kill(worker)
    assert len({d["id"] for d in message_documents(recorder)}) < total, (
        "the worker finished before it could be killed"
    )
    stack.processes.worker()
    stack.processes.beat()
    recorder.wait_for(lambda r: len({d["id"] for d in message_documents(r)}) >= total, timeout=120)
    documents = message_documents(recorder)
    expected = {
        f"{session_id}-message-{seq}" for session_id in containers for seq in range(1, MESSAGES + 1)
    }
    assert {d["id"] for d in documents} == expected
    for document in documents:
        session_id, _, seq = document["id"].rpartition("-message-")
        assert document["namespace"] == containers[session_id]
        assert document["metadata"]["seq"] == int(seq)
        # A redelivery writes the same document again, never another one.
        index = list(containers).index(session_id)
        label = "Learner" if int(seq) % 2 else "Mentor"
        assert document["content"] == f"{label}: {index}:{seq}"
    counts = settled(stack)
    assert counts == {"delivered": (SESSIONS + total) * 2}
    # PostHog got each message event once by uuid, without its content.
    events = [e for e in recorder.posthog_events() if e["event"] == "message.created"]
    assert len({e["uuid"] for e in events}) == total
    assert all("content" not in e["properties"] for e in events)
