"""Examples of the conversation endpoints' requests and responses, for the OpenAPI document."""

from __future__ import annotations

from mentorflow.flows.examples import CONTEXT, SESSION_ID
from mentorflow.platform.openapi import problem_example

POST_MESSAGE = {
    "role": "assistant",
    "content": "A month out is healthy. What would you charge for a full day today?",
    "metadata": {"model": "mentor-2"},
}
MESSAGE = {
    "id": "0c3b7e1a-5d2f-4f6a-9b8e-2a1c4d7e9f30",
    "session_id": SESSION_ID,
    "seq": 2,
    "step_id": "phase-1-step-2",
    "role": "assistant",
    "content": "A month out is healthy. What would you charge for a full day today?",
    "metadata": {"model": "mentor-2"},
    "created_at": "2026-11-30T10:04:12+00:00",
}
_FIRST = {
    **MESSAGE,
    "id": "5e9d2c14-7a3b-4c8e-8f1d-6b2a9c0e4d51",
    "seq": 1,
    "role": "user",
    "content": "I'm booked about a month out.",
    "metadata": {},
    "created_at": "2026-11-30T10:03:58+00:00",
}
MESSAGE_CREATED = {"message": MESSAGE}
MESSAGE_PAGE = {"items": [_FIRST, MESSAGE], "next_cursor": None}
SESSION_CONTEXT = {**CONTEXT, "messages": [_FIRST, MESSAGE], "messages_truncated": False}
LEARNER_CONTEXT = {
    "external_user_id": "user-4711",
    "sessions": [
        {
            "session_id": SESSION_ID,
            "flow": "pricing-workshop",
            "flow_version": 3,
            "status": "active",
            "answers": {"booking-status": "booked-1-month"},
            "completed_phases": [],
            "progress": {"completed": 1, "total": 4, "percent": 25},
            "updated_at": "2026-11-30T10:04:12+00:00",
        }
    ],
    "messages": [
        {**MESSAGE, "flow": "pricing-workshop", "content_truncated": False},
        {**_FIRST, "flow": "pricing-workshop", "content_truncated": False},
    ],
    "truncated": {"sessions": False, "messages": False, "content": False},
    "limits": {"sessions": 20, "messages": 50, "content_chars": 2000},
}
MESSAGE_INVALID = problem_example(
    422,
    problem="validation",
    detail="The request has invalid fields: content.",
    errors={"content": ["Length must be between 1 and 32000."]},
)
SESSION_ERASED = problem_example(
    409,
    problem="session-erased",
    detail="This session was erased; it takes no more messages.",
)
