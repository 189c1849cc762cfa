"""Examples of the learner API's requests and responses, for its OpenAPI document.

tests/test_openapi.py checks each against the schema it illustrates.
"""

from __future__ import annotations

from typing import Any

from mentorflow.platform.openapi import problem_example

ORG = "demo"
SESSION_ID = "3f0e6c2d8b417f1c2a9e5b1d4c1e9a57"

_PHASE = {"phase_id": "phase-1", "phase_title": "Your situation"}
BOOKING_STEP = {
    "id": "phase-1-step-1",
    "type": "single_choice",
    "key": "booking-status",
    "prompt": "How far out are you booked right now?",
    "required": True,
    "options": [
        {"value": "booked-3-months", "label": "3+ months out"},
        {"value": "booked-1-month", "label": "About a month"},
    ],
}
DAY_RATE_STEP = {
    "id": "phase-1-step-2",
    "type": "number",
    "key": "day-rate",
    "prompt": "What do you charge for a full-day session?",
    "body": "Just the number, in your own currency.",
    "required": True,
    "min": 0,
    "next": [{"when": {"key": "day-rate", "gte": 1500}, "goto": "phase-2-step-1"}],
}
VIDEO_STEP = {
    "id": "phase-2-step-1",
    "type": "video",
    "prompt": "Content that books vs. content that gets likes",
    "video_url": "https://videos.example.com/content-that-books.mp4",
    "required": False,
}
CONTACT_STEP = {
    "id": "phase-2-step-2",
    "type": "contact",
    "key": "contact",
    "prompt": "Where should we send your pricing plan?",
    "required": True,
    "fields": ["name", "email"],
}

DEFINITION = {
    "slug": "rafael-tats",
    "title": "Pricing for tattoo artists",
    "description": "Find out what is holding your prices back.",
    "phases": [
        {"id": "phase-1", "title": "Your situation", "steps": [BOOKING_STEP, DAY_RATE_STEP]},
        {"id": "phase-2", "title": "Content", "steps": [VIDEO_STEP, CONTACT_STEP]},
    ],
}

PUBLISHED_FLOW = {
    "org": ORG,
    "slug": "rafael-tats",
    "title": "Pricing for tattoo artists",
    "version": 2,
    "checksum": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "published_at": "2026-11-02T09:30:00+00:00",
    "definition": DEFINITION,
}


def _session(version: int, current_step_id: str | None, **changes: Any) -> dict[str, Any]:
    return {
        "id": SESSION_ID,
        "org": ORG,
        "flow": "rafael-tats",
        "flow_version": 2,
        "status": "active",
        "current_step_id": current_step_id,
        "answers": {},
        "completed_step_ids": [],
        "progress": {"completed": 0, "total": 4, "percent": 0},
        "name": "Ada",
        "email": "ada@example.com",
        "phone": None,
        "external_user_id": None,
        "memory_container": f"mentorflow-{ORG}-{SESSION_ID}",
        "version": version,
        "created_at": "2026-11-30T10:00:00+00:00",
        "updated_at": "2026-11-30T10:00:00+00:00",
        "completed_at": None,
        **changes,
    }


STARTED = {"session": _session(1, "phase-1-step-1"), "step": {**BOOKING_STEP, **_PHASE}}
SESSION_CREATED = {**STARTED, "token": "st_Qm1xZr7Yb8Jc2kq0pL4tNw9sVd3hGf6a"}
ANSWERED = {
    "session": _session(
        2,
        "phase-1-step-2",
        answers={"booking-status": "booked-1-month"},
        completed_step_ids=["phase-1-step-1"],
        progress={"completed": 1, "total": 4, "percent": 25},
        updated_at="2026-11-30T10:01:10+00:00",
    ),
    "step": {**DAY_RATE_STEP, **_PHASE},
}
COMPLETED = {
    "session": _session(
        5,
        None,
        status="completed",
        answers={
            "booking-status": "booked-1-month",
            "day-rate": 900,
            "contact": {"name": "Ada", "email": "ada@example.com"},
        },
        completed_step_ids=["phase-1-step-1", "phase-1-step-2", "phase-2-step-1", "phase-2-step-2"],
        progress={"completed": 4, "total": 4, "percent": 100},
        updated_at="2026-11-30T10:06:40+00:00",
        completed_at="2026-11-30T10:06:40+00:00",
    ),
    "step": None,
}
CONTEXT = {
    "answers": {"booking-status": "booked-1-month"},
    "completed_step_ids": ["phase-1-step-1"],
    "completed_phases": [],
    "current_phase": "phase-1",
    "progress": {"completed": 1, "total": 4, "percent": 25},
    "contact": {"name": "Ada", "email": "ada@example.com", "phone": None},
}

START_REQUEST = {"name": "Ada", "email": "ada@example.com", "external_user_id": "user-4711"}
ANSWER_REQUESTS = {
    "single_choice": {
        "summary": "A single_choice step: one option's value",
        "value": {"step_id": "phase-1-step-1", "answer": "booked-1-month"},
    },
    "number": {"summary": "A number step", "value": {"step_id": "phase-1-step-2", "answer": 900}},
    "multi_choice": {
        "summary": "A multi_choice step: distinct option values",
        "value": {"step_id": "phase-3-step-1", "answer": ["instagram", "referrals"]},
    },
    "contact": {
        "summary": "A contact step: exactly its fields",
        "value": {
            "step_id": "phase-2-step-2",
            "answer": {"name": "Ada", "email": "ada@example.com"},
        },
    },
    "no_answer": {
        "summary": "An info or video step (or skipping an optional one)",
        "value": {"step_id": "phase-2-step-1", "answer": None},
    },
}
BACK_REQUEST = {"step_id": "phase-1-step-1"}
BATCH_REQUEST = {
    "items": [
        {
            "step_id": "phase-1-step-1",
            "answer": "booked-1-month",
            "idempotency_key": "0b8f7e52-6c1d-4a53-9f0e-2d1c5b7a9e01",
        },
        {
            "step_id": "phase-1-step-2",
            "answer": 900,
            "idempotency_key": "0b8f7e52-6c1d-4a53-9f0e-2d1c5b7a9e02",
        },
    ]
}
_BATCH_DONE = {
    "session": _session(
        3,
        "phase-2-step-1",
        answers={"booking-status": "booked-1-month", "day-rate": 900},
        completed_step_ids=["phase-1-step-1", "phase-1-step-2"],
        progress={"completed": 2, "total": 4, "percent": 50},
        updated_at="2026-11-30T10:04:00+00:00",
    ),
    "step": {**VIDEO_STEP, "phase_id": "phase-2", "phase_title": "Content"},
}
BATCH_APPLIED = {
    **_BATCH_DONE,
    "results": [
        {"index": 0, "outcome": "applied", "status": 200},
        {"index": 1, "outcome": "applied", "status": 200},
    ],
}
BATCH_STOPPED = {
    **ANSWERED,
    "results": [
        {"index": 0, "outcome": "applied", "status": 200},
        {
            "index": 1,
            "outcome": "invalid",
            "status": 422,
            "errors": {"answer": ["must be at least 0"]},
        },
        {"index": 2, "outcome": "skipped", "status": 424},
    ],
}
BATCH_INVALID = problem_example(
    422,
    problem="validation",
    detail="The request has invalid fields: items.1.idempotency_key.",
    errors={"items.1.idempotency_key": ["Missing data for required field."]},
)
BACK_RESPONSE = {
    "session": {**ANSWERED["session"], "current_step_id": "phase-1-step-1", "version": 3},
    "step": {**BOOKING_STEP, **_PHASE},
}

STEP_CONFLICT = {
    **problem_example(
        409,
        problem="step-conflict",
        detail="Step 'phase-1-step-1' is not the current step; the session is at 'phase-1-step-2'.",
    ),
    **ANSWERED,
}
SESSION_CLOSED = {
    **problem_example(
        409,
        problem="session-closed",
        detail="This session is completed and takes no more answers.",
    ),
    **COMPLETED,
}
BACK_CONFLICT = {
    **problem_example(
        409,
        problem="step-conflict",
        detail="Step 'phase-2-step-1' has not been completed in this session.",
    ),
    **ANSWERED,
}
ANSWER_INVALID = problem_example(
    422,
    problem="validation",
    detail="The answer is not valid for this step.",
    errors={"answer": ["must be one of: booked-3-months, booked-1-month"]},
)
CONTACT_INVALID = problem_example(
    422,
    problem="validation",
    detail="The answer is not valid for this step.",
    errors={"answer.email": ["must be a valid email address"]},
)
KEY_REUSED = problem_example(
    422,
    problem="idempotency-key-reused",
    detail="This Idempotency-Key was used with a different request body.",
    errors={"headers.Idempotency-Key": ["was used with another body"]},
)
VERSION_MISMATCH = problem_example(412)

STREAM_TICKET = {
    "ticket": "gAAAAABnQ2x0c3RyZWFtLXRpY2tldC1leGFtcGxlLW9ubHktbm90LXJlYWw=",
    "expires_at": "2026-11-30T10:01:00+00:00",
}
STREAM_EVENT = {
    "event": "state",
    "id": "1",
    "data": '{"session":{"id":"' + SESSION_ID + '","version":1,"current_step_id":'
    '"phase-1-step-1","…":"…"},"step":{"id":"phase-1-step-1","…":"…"}}',
}
