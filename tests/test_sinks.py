"""Delivery sinks, through the official posthog and supermemory clients, against a recorder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from mentorflow.delivery.sinks import DeliveryFailed, OutboundEvent, build_sink, close_clients
from mentorflow.delivery.sinks.jsonlines import JsonLinesSink
from mentorflow.delivery.sinks.memory import MemorySink, memory_document, render_answer
from mentorflow.delivery.sinks.posthog import PostHogSink, posthog_capture
from mentorflow.platform.crypto import decrypt_secret, encrypt_secret
from mentorflow.platform.outbound import OutboundPolicy
from recorder import Recorder

#: The recorder listens on 127.0.0.1: the tests lift the address rule for it.
LOCAL = OutboundPolicy(timeout=2, allow_private=True)
COMMITTED_AT = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
SESSION_ID = "5f1c0c7e9a2b4d6f8e0a1b2c3d4e5f60"


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "SECRET_KEY": "test-secret",
        "INSTANCE_PATH": str(tmp_path),
        "SINK_TIMEOUT": 2,
        # The recorder listens on 127.0.0.1.
        "ALLOW_PRIVATE_SINKS": True,
    }


def make_event(event_type: str = "step.completed", **payload: Any) -> OutboundEvent:
    base: dict[str, Any] = {
        "org": "acme",
        "session_id": SESSION_ID,
        "flow": "rafael-tats",
        "flow_version": 3,
        "status": "active",
        "distinct_id": "learner-42",
        "memory_container": f"mentorflow-acme-{SESSION_ID}",
        "occurred_at": COMMITTED_AT.isoformat(),
    }
    if event_type == "step.completed":
        base.update(
            seq=4,
            step_id="phase-1-step-2",
            phase="phase-1",
            prompt="How far out are you booked?",
            step_type="single_choice",
            key="booking-status",
            answer="booked-3-months",
        )
    base.update(payload)
    return OutboundEvent(
        id=uuid.uuid4(), org="acme", type=event_type, payload=base, created_at=COMMITTED_AT
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_posthog_event_carries_event_id_commit_time_and_org_group(recorder: Recorder) -> None:
    event = make_event()

    PostHogSink("phc_platform", recorder.url, policy=LOCAL).deliver(event)

    [request] = recorder.requests
    assert (request.method, request.path) == ("POST", "/batch/")
    assert request.body["api_key"] == "phc_platform"
    [sent] = recorder.posthog_events()
    assert sent["uuid"] == str(event.id)
    assert sent["timestamp"] == COMMITTED_AT.isoformat()
    assert sent["event"] == "step.completed"
    assert sent["distinct_id"] == "learner-42"
    properties = sent["properties"]
    assert properties["$groups"] == {"organization": "acme"}
    assert {name: properties[name] for name in ("flow", "flow_version", "step_id", "phase")} == {
        "flow": "rafael-tats",
        "flow_version": 3,
        "step_id": "phase-1-step-2",
        "phase": "phase-1",
    }
    assert properties["session_id"] == SESSION_ID
    assert "answer" not in properties
    assert "key" not in properties


def test_posthog_event_carries_the_answer_only_when_the_org_sends_answers(
    recorder: Recorder,
) -> None:
    PostHogSink("phc_platform", recorder.url, send_answers=True, policy=LOCAL).deliver(make_event())

    [sent] = recorder.posthog_events()
    assert sent["properties"]["key"] == "booking-status"
    assert sent["properties"]["answer"] == "booked-3-months"


def test_posthog_redelivery_sends_the_same_uuid(recorder: Recorder) -> None:
    event = make_event("session.completed", status="completed")
    sink = PostHogSink("phc_platform", recorder.url, policy=LOCAL)

    sink.deliver(event)
    sink.deliver(event)

    assert [e["uuid"] for e in recorder.posthog_events()] == [str(event.id)] * 2


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True)])
def test_posthog_transient_answer_is_retryable(
    recorder: Recorder, status: int, retryable: bool
) -> None:
    recorder.fail("/batch/", status, times=1)
    sink = PostHogSink("phc_platform", recorder.url, policy=LOCAL)
    event = make_event()

    with pytest.raises(DeliveryFailed) as failed:
        sink.deliver(event)

    assert failed.value.retryable is retryable
    assert f"PostHog answered {status}" in failed.value.message
    sink.deliver(event)  # the scripted failure is used up: the retry lands
    assert [e["uuid"] for e in recorder.posthog_events()] == [str(event.id)]


@pytest.mark.parametrize("status", [400, 401])
def test_posthog_rejection_is_not_retryable(recorder: Recorder, status: int) -> None:
    recorder.fail("/batch/", status)

    with pytest.raises(DeliveryFailed) as failed:
        PostHogSink("phc_platform", recorder.url, policy=LOCAL).deliver(make_event())

    assert failed.value.retryable is False
    assert recorder.posthog_events() == []


def test_posthog_unreachable_is_retryable() -> None:
    url = closed_port_url()

    with pytest.raises(DeliveryFailed) as failed:
        PostHogSink("phc_platform", url, policy=LOCAL).deliver(make_event())

    assert failed.value.retryable is True
    assert "unreachable" in failed.value.message


def test_memory_document_has_the_step_id_namespace_and_readable_content(
    recorder: Recorder,
) -> None:
    MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver(make_event())

    [request] = recorder.requests
    assert (request.method, request.path) == (
        "POST",
        f"/ns/mentorflow-acme-{SESSION_ID}/document",
    )
    assert request.headers["authorization"] == "Bearer sm_platform"
    [document] = recorder.memory_documents()
    assert document["namespace"] == f"mentorflow-acme-{SESSION_ID}"
    assert document["id"] == f"{SESSION_ID}-4"
    assert document["content"] == "Question: How far out are you booked?\nAnswer: booked-3-months"
    assert document["metadata"] == {
        "org": "acme",
        "session_id": SESSION_ID,
        "flow": "rafael-tats",
        "flow_version": 3,
        "step_id": "phase-1-step-2",
        "phase": "phase-1",
        "seq": 4,
    }
    assert document["date"] == COMMITTED_AT.isoformat()


def test_memory_redelivery_upserts_the_same_document(recorder: Recorder) -> None:
    event = make_event(answer={"name": "Ada Lovelace", "email": "ada@example.com"})
    sink = MemorySink("sm_platform", recorder.url, policy=LOCAL)

    sink.deliver(event)
    sink.deliver(event)

    first, second = recorder.memory_documents()
    assert first == second
    assert first["content"].endswith("Answer: Ada Lovelace, ada@example.com")


@pytest.mark.parametrize(
    "event",
    [make_event("session.started"), make_event("session.completed", status="completed")],
    ids=["session.started", "session.completed"],
)
def test_memory_remembers_steps_only(recorder: Recorder, event: OutboundEvent) -> None:
    MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver(event)

    assert recorder.requests == []


@pytest.mark.parametrize(
    ("step", "content"),
    [
        (
            {"step_type": "info", "prompt": "Welcome", "key": None, "answer": None},
            "Went through: Welcome",
        ),
        (
            {"step_type": "long_text", "prompt": "Anything else?", "answer": None},
            "Question: Anything else?\nAnswer: (skipped)",
        ),
    ],
    ids=["info step", "skipped optional question"],
)
def test_memory_remembers_steps_without_an_answer(recorder: Recorder, step, content) -> None:
    MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver(make_event(**step))

    (document,) = recorder.memory_documents()
    assert document["content"] == content


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (502, True), (429, True), (400, False), (401, False)]
)
def test_memory_failure_maps_status_to_retryable(
    recorder: Recorder, status: int, retryable: bool
) -> None:
    recorder.fail("/ns/", status, times=1)

    with pytest.raises(DeliveryFailed) as failed:
        MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver(make_event())

    assert failed.value.retryable is retryable
    assert f"Supermemory answered {status}" in failed.value.message
    assert len(recorder.requests) == 1  # the client's own retries are off


def test_memory_unreachable_is_retryable() -> None:
    with pytest.raises(DeliveryFailed) as failed:
        MemorySink("sm_platform", closed_port_url(), policy=LOCAL).deliver(make_event())

    assert failed.value.retryable is True
    assert "unreachable" in failed.value.message


@pytest.mark.parametrize(
    ("answer", "rendered"),
    [
        (["instagram", "word-of-mouth"], "instagram, word-of-mouth"),
        ({"name": "Ada", "email": "ada@example.com"}, "Ada, ada@example.com"),
        (
            {"email": "ada@example.com", "phone": "+44 20 7946 0958"},
            "ada@example.com, +44 20 7946 0958",
        ),
        (True, "Yes"),
        (7, "7"),
        ("Fine line work", "Fine line work"),
    ],
)
def test_render_answer_reads_like_a_person_wrote_it(answer: Any, rendered: str) -> None:
    assert render_answer(answer) == rendered


def test_without_credentials_sinks_write_what_they_would_send(config: dict[str, Any]) -> None:
    event = make_event()
    started = make_event("session.started")

    for name in ("posthog", "memory"):
        sink = build_sink(name, {}, config)
        assert isinstance(sink, JsonLinesSink)
        assert sink.name == name
        sink.deliver(event)
        sink.deliver(started)
        sink.close()

    posthog_lines = read_lines(Path(config["INSTANCE_PATH"]) / "outbox-posthog.jsonl")
    assert [line["event_id"] for line in posthog_lines] == [str(event.id), str(started.id)]
    assert posthog_lines[0] == {
        "sink": "posthog",
        "dry_run": True,
        "event_id": str(event.id),
        "type": "step.completed",
        "org": "acme",
        "request": {**posthog_capture(event), "timestamp": COMMITTED_AT.isoformat()},
    }
    assert "answer" not in posthog_lines[0]["request"]["properties"]
    [memory_line] = read_lines(Path(config["INSTANCE_PATH"]) / "outbox-memory.jsonl")
    assert memory_line["dry_run"] is True
    assert memory_line["request"] == memory_document(event)


def test_platform_credentials_are_used_without_an_org_override(
    recorder: Recorder, config: dict[str, Any]
) -> None:
    config.update(
        POSTHOG_API_KEY="phc_platform",
        POSTHOG_HOST=recorder.url,
        SUPERMEMORY_API_KEY="sm_platform",
        SUPERMEMORY_BASE_URL=recorder.url,
    )

    build_sink("posthog", {"integrations": {}}, config).deliver(make_event())
    build_sink("memory", {}, config).deliver(make_event())

    posthog_request, memory_request = recorder.requests
    assert posthog_request.body["api_key"] == "phc_platform"
    assert memory_request.headers["authorization"] == "Bearer sm_platform"


def test_an_orgs_encrypted_credentials_win_over_the_platforms(
    recorder: Recorder, config: dict[str, Any]
) -> None:
    platform_url = closed_port_url()
    config.update(
        POSTHOG_API_KEY="phc_platform",
        POSTHOG_HOST=platform_url,
        SUPERMEMORY_API_KEY="sm_platform",
        SUPERMEMORY_BASE_URL=platform_url,
    )
    org_settings = {
        "integrations": {
            "posthog": {
                "api_key_encrypted": encrypt_secret("phc_org", config),
                "host": recorder.url,
                "send_answers": True,
            },
            "memory": {
                "api_key_encrypted": encrypt_secret("sm_org", config),
                "base_url": recorder.url,
            },
        }
    }

    build_sink("posthog", org_settings, config).deliver(make_event())
    build_sink("memory", org_settings, config).deliver(make_event())

    posthog_request, memory_request = recorder.requests
    assert posthog_request.body["api_key"] == "phc_org"
    assert recorder.posthog_events()[0]["properties"]["answer"] == "booked-3-months"
    assert memory_request.headers["authorization"] == "Bearer sm_org"


def test_an_orgs_undecryptable_key_fails_instead_of_using_the_platforms(
    config: dict[str, Any],
) -> None:
    config["POSTHOG_API_KEY"] = "phc_platform"
    stale = encrypt_secret("phc_org", {"SECRET_KEY": "the-old-secret"})

    with pytest.raises(DeliveryFailed) as failed:
        build_sink("posthog", {"integrations": {"posthog": {"api_key_encrypted": stale}}}, config)

    assert failed.value.retryable is False
    assert "SECRET_KEY" in failed.value.message


def test_an_unknown_sink_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Unknown sink 'webhook'"):
        build_sink("webhook", {}, config)


def test_secret_round_trips_and_is_not_stored_in_clear() -> None:
    config = {"SECRET_KEY": "test-secret"}

    token = encrypt_secret("phc_org_secret", config)

    assert "phc_org_secret" not in token
    assert decrypt_secret(token, config) == "phc_org_secret"


def test_secret_from_another_key_fails_with_a_clear_error() -> None:
    token = encrypt_secret("phc_org_secret", {"SECRET_KEY": "test-secret"})

    with pytest.raises(ValueError, match=r"encrypted with another key.*SECRET_KEY"):
        decrypt_secret(token, {"SECRET_KEY": "a-rotated-secret"})


def test_encryption_key_takes_over_and_older_secrets_still_decrypt() -> None:
    before = {"SECRET_KEY": "test-secret"}
    after = {**before, "ENCRYPTION_KEY": Fernet.generate_key().decode()}
    older = encrypt_secret("phc_old", before)

    newer = encrypt_secret("phc_new", after)

    assert decrypt_secret(older, after) == "phc_old"
    assert decrypt_secret(newer, after) == "phc_new"
    with pytest.raises(ValueError, match="another key"):
        decrypt_secret(newer, before)


def test_a_malformed_encryption_key_is_named() -> None:
    with pytest.raises(ValueError, match="ENCRYPTION_KEY is not a Fernet key"):
        encrypt_secret("x", {"SECRET_KEY": "s", "ENCRYPTION_KEY": "not-a-key"})


def test_recorder_hears_a_sink_in_another_process(recorder: Recorder) -> None:
    # As a Celery worker will: a separate interpreter delivering through the official client.
    script = textwrap.dedent(
        f"""
        import uuid
        from datetime import UTC, datetime
        from mentorflow.delivery.sinks import OutboundEvent
        from mentorflow.delivery.sinks.posthog import PostHogSink
        from mentorflow.platform.outbound import OutboundPolicy

        event = OutboundEvent(
            id=uuid.UUID("{uuid.UUID(int=7)}"),
            org="acme",
            type="session.started",
            payload={{"distinct_id": "learner-42", "session_id": "s1"}},
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        policy = OutboundPolicy(timeout=2, allow_private=True)
        PostHogSink("phc_worker", "{recorder.url}", policy=policy).deliver(event)
        """
    )

    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

    recorder.wait_for(lambda r: len(r.posthog_events()) == 1, timeout=5)
    assert recorder.posthog_events()[0]["uuid"] == str(uuid.UUID(int=7))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_posthog_batch_sends_every_event_in_one_request(recorder: Recorder):
    events = [make_event(seq=seq) for seq in range(1, 31)]
    outcomes = PostHogSink("phc_platform", recorder.url, policy=LOCAL).deliver_batch(events)
    assert outcomes == [None] * 30
    batches = [r for r in recorder.requests if r.path == "/batch/"]
    assert len(batches) == 1
    sent = recorder.posthog_events()
    assert [e["uuid"] for e in sent] == [str(e.id) for e in events]
    # Built by the official client: its library marker and the event's own properties.
    assert sent[0]["properties"]["$lib"] == "posthog-python"
    assert sent[5]["properties"]["seq"] == 6
    assert batches[0].body["api_key"] == "phc_platform"


def test_posthog_batch_refused_for_good_delivers_all_but_the_event_at_fault(recorder: Recorder):
    # The batch is refused, then so is the first event sent alone: only that one is lost.
    recorder.fail("/batch/", 400, times=2)
    events = [make_event(seq=seq) for seq in range(1, 5)]
    outcomes = PostHogSink("phc_platform", recorder.url, policy=LOCAL).deliver_batch(events)
    assert outcomes[0] is not None and not outcomes[0].retryable
    assert "PostHog answered 400" in str(outcomes[0])
    assert outcomes[1:] == [None, None, None]
    assert sorted(e["uuid"] for e in recorder.posthog_events()) == sorted(
        str(e.id) for e in events[1:]
    )


def test_posthog_batch_failing_for_now_fails_every_event_retryably(recorder: Recorder):
    recorder.fail("/batch/", 503, times=1)
    outcomes = PostHogSink("phc_platform", recorder.url, policy=LOCAL).deliver_batch(
        [make_event(seq=1), make_event(seq=2)]
    )
    assert all(o is not None and o.retryable and "503" in str(o) for o in outcomes)
    assert recorder.posthog_events() == []


def test_memory_batch_writes_one_call_per_container(recorder: Recorder):
    other = "mentorflow-acme-" + "0" * 32
    events = [make_event(seq=seq) for seq in range(1, 4)] + [
        make_event(seq=seq, memory_container=other) for seq in range(1, 3)
    ]
    started = make_event("session.started")  # makes no document
    outcomes = MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver_batch(
        [*events, started]
    )
    assert outcomes == [None] * 6
    calls = sorted(r.path for r in recorder.requests if r.method == "POST")
    assert calls == [
        f"/ns/{other}/document/batch",
        f"/ns/mentorflow-acme-{SESSION_ID}/document/batch",
    ]
    documents = recorder.memory_documents()
    assert sorted((d["namespace"], d["id"]) for d in documents) == sorted(
        (e.payload["memory_container"], f"{SESSION_ID}-{e.payload['seq']}") for e in events
    )


def test_memory_batch_refused_for_good_tries_each_document_alone(recorder: Recorder):
    recorder.fail("/ns/", 400, times=2)  # the batch, then the first document alone
    events = [make_event(seq=seq) for seq in range(1, 4)]
    outcomes = MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver_batch(events)
    assert outcomes[0] is not None and not outcomes[0].retryable
    assert outcomes[1:] == [None, None]
    assert sorted(d["id"] for d in recorder.memory_documents()) == [
        f"{SESSION_ID}-2",
        f"{SESSION_ID}-3",
    ]


def test_memory_batch_failing_for_now_is_retried_whole(recorder: Recorder):
    recorder.fail("/ns/", 500, times=1)
    outcomes = MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver_batch(
        [make_event(seq=1), make_event(seq=2)]
    )
    assert all(o is not None and o.retryable and "500" in str(o) for o in outcomes)


def test_memory_batch_reports_the_documents_supermemory_refused(recorder: Recorder):
    recorder.refuse_documents({f"{SESSION_ID}-2"}, "content_too_large")
    events = [make_event(seq=seq) for seq in range(1, 4)]
    outcomes = MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver_batch(events)
    assert outcomes[0] is None and outcomes[2] is None
    assert outcomes[1] is not None and "refused the document" in str(outcomes[1])
    assert "content_too_large" not in str(outcomes[1])  # the host's words are never shown
    assert outcomes[1].retryable  # the outbox's attempts bound it


def test_the_memory_sink_knows_the_same_answerless_step_types_as_the_documents():
    # Sinks sit below flows/ and keep their own copy; a new step type must reach both.
    from mentorflow.delivery.sinks.memory import NO_ANSWER_STEP_TYPES
    from mentorflow.flows.document import NO_ANSWER_TYPES

    assert NO_ANSWER_STEP_TYPES == NO_ANSWER_TYPES


def test_memory_batch_sends_the_others_when_one_event_cannot_be_sent(recorder: Recorder):
    # An unpaired surrogate can't be encoded as UTF-8: that event fails alone, for good.
    events = [make_event(seq=1), make_event(seq=2, answer="half \ud800 a pair"), make_event(seq=3)]
    outcomes = MemorySink("sm_platform", recorder.url, policy=LOCAL).deliver_batch(events)
    assert outcomes[0] is None and outcomes[2] is None
    assert outcomes[1] is not None and not outcomes[1].retryable
    assert "can't be sent to Supermemory (UnicodeEncodeError)" in str(outcomes[1])
    assert sorted(d["id"] for d in recorder.memory_documents()) == [
        f"{SESSION_ID}-1",
        f"{SESSION_ID}-3",
    ]


def test_posthog_batch_sends_the_others_when_one_event_cannot_be_built(recorder: Recorder):
    broken = make_event(seq=2)
    del broken.payload["distinct_id"]
    events = [make_event(seq=1), broken, make_event(seq=3)]
    outcomes = PostHogSink("phc_platform", recorder.url, policy=LOCAL).deliver_batch(events)
    assert outcomes[0] is None and outcomes[2] is None
    assert outcomes[1] is not None and not outcomes[1].retryable
    assert "can't be sent to PostHog (KeyError)" in str(outcomes[1])
    assert sorted(e["uuid"] for e in recorder.posthog_events()) == sorted(
        str(e.id) for e in (events[0], events[2])
    )
