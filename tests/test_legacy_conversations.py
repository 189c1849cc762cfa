"""The legacy import brings old conversations, videos watched and memories over as messages."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from mentorflow.delivery.sinks import OutboundEvent
from mentorflow.delivery.sinks.memory import memory_document
from mentorflow.flows.conversation_models import Message
from mentorflow.flows.legacy import import_legacy_sessions
from mentorflow.flows.models import LearnerSession
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent
from mentorflow.tenants.services import get_org

FLOW = "rafael-tats"


def row(**context_changes) -> dict:
    context = {
        "progress": {
            "currentPhase": 2,
            "currentStep": 2,
            "completedPhases": [1],
            "videosWatched": ["content-that-books", "a-video-we-lost"],
        },
        "situation": {"bookingStatus": "booked-1-month", "dayRate": "450"},
        "memory": [{"note": "prefers email"}, "works weekends"],
        "conversation": [
            {"role": "user", "text": "hi", "timestamp": "2024-11-09T12:01:00Z"},
            {"role": "ai", "content": "Hello! How far out are you booked?"},
            {"role": "narrator", "text": "not a role"},
            {"role": "user", "message": "About a month."},
        ],
        **context_changes,
    }
    return {
        "id": "sess_0042",
        "clerk_user_id": "user_42",
        "email": "noor@example.com",
        "name": "Noor",
        "supermemory_container": "tattoo-0042",
        "status": "active",
        "created_at": "2024-11-09T12:00:00Z",
        "updated_at": "2024-11-09T12:40:00Z",
        "context": context,
    }


def write(path: Path, *rows: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(slug: str, path: Path, apply: bool = True):
    org = get_org(slug)
    db.session.commit()
    return import_legacy_sessions(org, FLOW, path, apply=apply)


def conversation(client, keys) -> list[dict]:
    db.session.rollback()
    session_id = db.session.scalar(sa.select(LearnerSession.id))
    response = client.get(
        f"/v1/orgs/{keys.slug}/sessions/{session_id}/messages",
        headers={"Authorization": f"Bearer {keys.sk}"},
    )
    assert response.status_code == 200
    return response.json["items"]


def count(model) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_conversations_videos_and_memories_become_messages_once(
    ctx, client, create_org, publish_flow, tmp_path
):
    keys = create_org()
    publish_flow(keys.org)
    path = write(tmp_path / "old.jsonl", row())

    dry = run(keys.slug, path, apply=False)
    assert (dry.messages_imported, dry.videos_mapped, dry.memories_imported) == (3, 1, 2)
    assert count(Message) == 0
    left_out = [finding.message for finding in dry.left_out.examples]
    assert 'conversation[2]: role "narrator" is not user, assistant, system or tool' in left_out
    assert any("a-video-we-lost" in message for message in left_out)
    assert "conversation" not in dry.keys_not_mapped and "memory" not in dry.keys_not_mapped
    assert "conversation messages" in dry.render()

    report = run(keys.slug, path)
    assert report.to_dict() | {"applied": True} == dry.to_dict() | {"applied": True}
    items = conversation(client, keys)
    assert [(m["seq"], m["role"], m["content"]) for m in items] == [
        (1, "user", "hi"),
        (2, "assistant", "Hello! How far out are you booked?"),
        (3, "user", "About a month."),
        (4, "system", "Watched the video: Content that books vs. content that gets likes"),
        (5, "system", "prefers email"),
        (6, "system", "works weekends"),
    ]
    assert items[0]["created_at"].startswith("2024-11-09T12:01:00")
    assert items[3]["step_id"] == "phase-2-step-1"
    assert [m["metadata"]["source"] for m in items] == [
        "legacy-conversation",
        "legacy-conversation",
        "legacy-conversation",
        "legacy-video",
        "legacy-memory",
        "legacy-memory",
    ]
    # Each message goes to the session's memory container as one document.
    events = db.session.scalars(
        sa.select(OutboxEvent).where(OutboxEvent.type == "message.created")
    ).all()
    assert len(events) == 6
    documents = [
        memory_document(OutboundEvent(e.id, keys.slug, e.type, e.payload, e.created_at))
        for e in events
    ]
    assert {d["namespace"] for d in documents} == {"tattoo-0042"}
    assert "Note: prefers email" in {d["content"] for d in documents}

    again = run(keys.slug, path)
    assert again.unchanged == 1 and again.messages_imported == 0
    assert conversation(client, keys) == items
    assert count(OutboxEvent) == 6

    # The old app kept talking: a changed row adds only the new entries, after the others.
    changed = row()
    changed["context"]["conversation"].append({"role": "assistant", "text": "Good. Next?"})
    changed["updated_at"] = "2024-11-09T13:00:00Z"
    updated = run(keys.slug, write(tmp_path / "later.jsonl", changed))
    assert updated.updated == 1
    assert (updated.messages_imported, updated.videos_mapped, updated.memories_imported) == (
        1,
        0,
        0,
    )
    later = conversation(client, keys)
    assert later[:6] == items
    assert (later[6]["seq"], later[6]["role"], later[6]["content"]) == (
        7,
        "assistant",
        "Good. Next?",
    )
    assert count(OutboxEvent) == 7


def test_the_example_file_imports_its_conversation_and_memory(ctx, create_org, publish_flow):
    keys = create_org()
    publish_flow(keys.org)
    example = Path(__file__).resolve().parents[1] / "examples" / "legacy-sessions.jsonl"
    report = run(keys.slug, example)
    assert report.created == 10
    assert (report.messages_imported, report.videos_mapped, report.memories_imported) == (1, 1, 1)
    assert count(Message) == 3
