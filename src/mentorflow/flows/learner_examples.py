"""Examples of the learner endpoints' requests and responses, for the OpenAPI document."""

from __future__ import annotations

from mentorflow.flows.examples import ANSWERED, COMPLETED, SESSION_ID

EXTERNAL_USER_ID = "user-4711"

MINT_REQUEST = {"ttl_seconds": 86400}
LEARNER_TOKEN = {
    "token": "lt_Zr7Yb8Jc2kq0pL4tNw9sVd3hGf6aQm1x",
    "expires_at": "2026-12-01T10:00:00+00:00",
}
LEARNER = {
    "external_user_id": EXTERNAL_USER_ID,
    "first_seen_at": "2026-11-30T10:00:00+00:00",
    "last_active_at": "2026-11-30T10:06:40+00:00",
    "sessions": {"active": 1, "completed": 1, "abandoned": 0},
}
_FIRST = {**COMPLETED["session"], "external_user_id": EXTERNAL_USER_ID}
_SECOND = {
    **ANSWERED["session"],
    "id": SESSION_ID[::-1],
    "flow": "client-intake",
    "external_user_id": EXTERNAL_USER_ID,
    "updated_at": "2026-11-30T11:20:00+00:00",
}
SESSION_PAGE = {
    "items": [_FIRST, _SECOND],
    "next_cursor": "WyIyMDI2LTExLTMwVDExOjIwOjAwKzAwOjAwIiwiM2YwZSJd",
}
SESSION_TOKEN = {"token": "st_pL4tNw9sVd3hGf6aQm1xZr7Yb8Jc2kq0"}
RESUMED = {**ANSWERED, "session": {**ANSWERED["session"], "external_user_id": EXTERNAL_USER_ID}}
START_AS_LEARNER = {"resume": True}
