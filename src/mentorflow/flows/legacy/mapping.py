"""How an old session row maps onto a flow version (position, answers, contact): no queries."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mentorflow.flows.document import takes_answer
from mentorflow.flows.engine import AnswerError, CompiledFlow
from mentorflow.flows.models import SessionStatus

#: Fields of ``context.progress`` that the position mapping consumes.
POSITION_FIELDS = ("progress.currentPhase", "progress.currentStep", "progress.completedPhases")
#: Fields of the context that become the session's messages (see :func:`map_messages`).
CONVERSATION_FIELDS = ("conversation", "memory", "progress.videosWatched")
#: Roles of the old app's conversation entries, as message roles.
_ROLES = {
    "user": "user",
    "human": "user",
    "learner": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "mentor": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
}
#: The longest message content (flows.conversations.CONTENT_MAX).
MESSAGE_CONTENT_MAX = 32_000
CONTACT_LIMITS = {"name": 200, "email": 320, "phone": 40}
ID_MAX_LENGTH = 200

_STEP_ID = re.compile(r"phase-(\d+)-step-(\d+)")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_BOOLEAN_TEXT = {"true": True, "yes": True, "false": False, "no": False}
_STATUSES = {status.value: status for status in SessionStatus}


class RowSkipped(ValueError):
    """One line of the file cannot be imported; ``reason`` groups it in the report."""

    def __init__(self, reason: str, message: str, legacy_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.legacy_id = legacy_id


def kebab_case(name: str) -> str:
    """Return ``name`` in kebab case: ``bookingStatus`` → ``booking-status``."""
    return _CAMEL_BOUNDARY.sub("-", name).replace("_", "-").lower()


class LegacyMap:
    """What the import needs to know about a flow version: where answers and steps are."""

    def __init__(self, flow: CompiledFlow) -> None:
        self.flow = flow
        self.steps = {step_id: flow.step(step_id) for step_id in flow.step_ids}
        #: legacy path → step id, for steps that declare ``legacy_key``
        self.declared: dict[str, str] = {}
        #: answer key → step id, for answer steps that declare none
        self.undeclared_keys: dict[str, str] = {}
        self.contact_keys: list[str] = []
        positions: list[tuple[tuple[int, int], str]] = []
        for step_id, step in self.steps.items():
            match = _STEP_ID.fullmatch(step_id)
            if match:
                positions.append(((int(match[1]), int(match[2])), step_id))
            if not takes_answer(step["type"]):
                continue
            if step.get("legacy_key"):
                self.declared[step["legacy_key"]] = step_id
            else:
                self.undeclared_keys[step["key"]] = step_id
            if step["type"] == "contact":
                self.contact_keys.append(step["key"])
        self.positions = sorted(positions)

    def video_step(self, video: Any) -> str | None:
        """Return the video step an old ``videosWatched`` entry names: by step id, legacy key,
        or a name its ``video_url`` carries (``content-that-books``)."""
        if not isinstance(video, str) or not video.strip():
            return None
        name = video.strip()
        for step_id, step in self.steps.items():
            if step["type"] != "video":
                continue
            url = step.get("video_url") or ""
            if name in (step_id, step.get("legacy_key")) or (
                name in url or kebab_case(name) in url
            ):
                return step_id
        return None

    def step_at(self, phase: int, step: int) -> str | None:
        """Return the step at (phase, step), else the nearest earlier one, else None."""
        target = f"phase-{phase}-step-{step}"
        if self.flow.has_step(target):
            return target
        earlier = [step_id for position, step_id in self.positions if position <= (phase, step)]
        return earlier[-1] if earlier else None


@dataclass
class MappedSession:
    """One old row as a mentorflow session, with what the mapping had to say about it."""

    legacy_id: str
    status: SessionStatus
    current_step_id: str | None
    answers: dict[str, Any]
    name: str | None
    email: str | None
    phone: str | None
    external_user_id: str | None
    memory_container: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    fingerprint: str
    context: Any
    row: dict[str, Any]
    position_note: str | None = None
    left_out: list[str] = field(default_factory=list)
    not_mapped: list[str] = field(default_factory=list)
    #: The session's messages: the conversation, the videos watched, what was remembered.
    messages: list[LegacyMessage] = field(default_factory=list)


@dataclass(frozen=True)
class LegacyMessage:
    """A message the import adds to a session; ``source`` and ``index`` make it unique, so a
    re-import adds only what is new."""

    source: str  # legacy-conversation | legacy-video | legacy-memory
    index: int
    role: str
    content: str
    step_id: str | None
    created_at: datetime | None

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.index)


def map_row(row: dict[str, Any], legacy_map: LegacyMap) -> MappedSession:
    """Map an old row onto the flow version; raise RowSkipped if it cannot be imported."""
    legacy_id = _row_id(row)
    if legacy_id is None:
        raise RowSkipped("no id", "has no 'id' (a non-empty string or number)")
    if len(legacy_id) > ID_MAX_LENGTH:
        raise RowSkipped(
            "no id", f"'id' is longer than {ID_MAX_LENGTH} characters", legacy_id[:40] + "…"
        )
    created_at, updated_at = _timestamps(row, legacy_id)
    raw_context = row.get("context")
    context = _context_object(raw_context)
    left_out: list[str] = []
    answers, not_mapped = map_answers(context, legacy_map, left_out)
    status_text = row.get("status")
    status = _STATUSES.get(status_text.strip().lower()) if isinstance(status_text, str) else None
    if status is None:
        status = SessionStatus.ACTIVE
        if status_text is not None:
            shown = json.dumps(status_text, ensure_ascii=False)
            left_out.append(f"status {shown} is not active, completed or abandoned; now active")
    position_note = None
    if status == SessionStatus.COMPLETED:
        current_step_id = None
    else:
        current_step_id, position_note = map_position(context.get("progress"), legacy_map)
    _answer_contact_steps(row, legacy_map, answers, current_step_id, left_out)
    contact = {
        name: _text_field(row, name, limit, left_out) for name, limit in CONTACT_LIMITS.items()
    }
    # As when a learner answers a contact step: the answer fills what the row lacks.
    for key in legacy_map.contact_keys:
        for name, value in (answers.get(key) or {}).items():
            contact[name] = contact[name] or value
    messages = map_messages(context, legacy_map, left_out)
    return MappedSession(
        legacy_id=legacy_id,
        status=status,
        current_step_id=current_step_id,
        answers=answers,
        name=contact["name"],
        email=contact["email"],
        phone=contact["phone"],
        external_user_id=_text_field(row, "clerk_user_id", ID_MAX_LENGTH, left_out),
        memory_container=_text_field(row, "supermemory_container", ID_MAX_LENGTH, left_out),
        created_at=created_at,
        updated_at=updated_at,
        completed_at=updated_at if status == SessionStatus.COMPLETED else None,
        fingerprint=fingerprint(row),
        context=raw_context,
        row={name: value for name, value in row.items() if name != "context"},
        position_note=position_note,
        left_out=left_out,
        not_mapped=not_mapped,
        messages=messages,
    )


def map_messages(
    context: dict[str, Any], legacy_map: LegacyMap, left_out: list[str]
) -> list[LegacyMessage]:
    """Return the messages of an old context, in order: its ``conversation`` (roles and order
    kept), a note on each video step of ``progress.videosWatched``, each ``memory`` entry.

    Entries that can't be messages are appended to ``left_out``.
    """
    messages: list[LegacyMessage] = []
    conversation = context.get("conversation")
    for index, entry in enumerate(conversation if isinstance(conversation, list) else []):
        message = _conversation_message(index, entry, left_out)
        if message is not None:
            messages.append(message)
    progress = context.get("progress")
    watched = progress.get("videosWatched") if isinstance(progress, dict) else None
    for index, video in enumerate(watched if isinstance(watched, list) else []):
        step_id = legacy_map.video_step(video)
        if step_id is None:
            shown = json.dumps(video, ensure_ascii=False)[:80]
            left_out.append(f"progress.videosWatched[{index}]: {shown} matches no video step")
            continue
        title = legacy_map.steps[step_id].get("prompt") or step_id
        messages.append(
            LegacyMessage(
                "legacy-video", index, "system", f"Watched the video: {title}", step_id, None
            )
        )
    memory = context.get("memory")
    for index, entry in enumerate(memory if isinstance(memory, list) else []):
        text = _memory_text(entry)
        if not text:
            continue
        if len(text) > MESSAGE_CONTENT_MAX:
            left_out.append(f"memory[{index}]: longer than {MESSAGE_CONTENT_MAX} characters")
            continue
        messages.append(LegacyMessage("legacy-memory", index, "system", text, None, None))
    return messages


def _conversation_message(index: int, entry: Any, left_out: list[str]) -> LegacyMessage | None:
    where = f"conversation[{index}]"
    if not isinstance(entry, dict):
        left_out.append(f"{where}: a JSON {_json_type(entry)}, not an object")
        return None
    role_text = entry.get("role")
    role = _ROLES.get(role_text.strip().lower()) if isinstance(role_text, str) else None
    if role is None:
        shown = json.dumps(role_text, ensure_ascii=False)[:40]
        left_out.append(f"{where}: role {shown} is not user, assistant, system or tool")
        return None
    content = next(
        (
            entry[name]
            for name in ("content", "text", "message")
            if isinstance(entry.get(name), str)
        ),
        None,
    )
    if content is None or not content.strip():
        left_out.append(f"{where}: has no text (content, text or message)")
        return None
    if len(content) > MESSAGE_CONTENT_MAX:
        left_out.append(f"{where}: longer than {MESSAGE_CONTENT_MAX} characters")
        return None
    at = next(
        (
            _timestamp(entry[name])
            for name in ("timestamp", "created_at", "at")
            if entry.get(name) is not None
        ),
        None,
    )
    return LegacyMessage("legacy-conversation", index, role, content, None, at)


def _memory_text(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry.strip() or None
    if isinstance(entry, dict) and len(entry) == 1:
        (value,) = entry.values()
        if isinstance(value, str):
            return value.strip() or None
    if _blank(entry):
        return None
    return json.dumps(entry, ensure_ascii=False, sort_keys=True)


def map_position(progress: Any, legacy_map: LegacyMap) -> tuple[str, str | None]:
    """Return the current step for ``context.progress`` and a note when it had to be adjusted."""
    first = legacy_map.flow.first_step_id
    phase = _whole_number(progress.get("currentPhase")) if isinstance(progress, dict) else None
    step = _whole_number(progress.get("currentStep")) if isinstance(progress, dict) else None
    if phase is None or step is None:
        return first, f"has no position (progress.currentPhase/currentStep); placed at {first}"
    target = f"phase-{phase}-step-{step}"
    found = legacy_map.step_at(phase, step)
    if found == target:
        return found, None
    if found is None:
        return first, f"{target} does not exist and no step comes before it; placed at {first}"
    return found, f"{target} does not exist; placed at {found}, the nearest earlier step"


def map_answers(
    context: dict[str, Any], legacy_map: LegacyMap, left_out: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """Return the flat answers found in a nested context and the paths that map to nothing.

    Invalid answers are appended to ``left_out`` as messages.
    """
    answers: dict[str, Any] = {}
    for path, step_id in legacy_map.declared.items():
        value = _at_path(context, path)
        if not _blank(value):
            _add_answer(legacy_map, step_id, path, value, answers, left_out)
    not_mapped: list[str] = []
    for path, value in _leaves(context, set(legacy_map.declared)):
        if _blank(value) or path in POSITION_FIELDS or path in CONVERSATION_FIELDS:
            continue
        key = kebab_case(path.rpartition(".")[2])
        step_id = legacy_map.undeclared_keys.get(key)
        if step_id is None or key in answers:
            not_mapped.append(path)
            continue
        _add_answer(legacy_map, step_id, path, value, answers, left_out)
    return answers, not_mapped


def fingerprint(row: dict[str, Any]) -> str:
    """Return the SHA-256 of a row's canonical JSON: equal rows, equal fingerprints."""
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _add_answer(
    legacy_map: LegacyMap,
    step_id: str,
    path: str,
    value: Any,
    answers: dict[str, Any],
    left_out: list[str],
) -> None:
    step = legacy_map.steps[step_id]
    try:
        answers[step["key"]] = legacy_map.flow.validate_answer(
            step_id, _read_as(step["type"], value)
        )
    except AnswerError as exc:
        problems = "; ".join(
            f"{name.removeprefix('answer').lstrip('.')} {message}".lstrip()
            for name, messages in exc.errors.items()
            for message in messages
        )
        left_out.append(f"{path} → {step['key']}: {problems}")


def _read_as(step_type: str, value: Any) -> Any:
    # The old app kept form input as text; numbers and yes/no read as what they say.
    if not isinstance(value, str):
        return value
    text = value.strip()
    if step_type in ("number", "scale") and _NUMBER.fullmatch(text):
        number = float(text)
        if not math.isfinite(number):
            return value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if step_type == "boolean" and text.lower() in _BOOLEAN_TEXT:
        return _BOOLEAN_TEXT[text.lower()]
    return value


def _answer_contact_steps(
    row: dict[str, Any],
    legacy_map: LegacyMap,
    answers: dict[str, Any],
    current_step_id: str | None,
    left_out: list[str],
) -> None:
    steps = [
        step_id
        for key, step_id in legacy_map.undeclared_keys.items()
        if legacy_map.steps[step_id]["type"] == "contact" and key not in answers
    ]
    if not steps:
        return
    passed = set(legacy_map.flow.position(answers, current_step_id).completed_step_ids)
    for step_id in steps:
        if step_id not in passed:
            continue
        fields = legacy_map.steps[step_id]["fields"]
        value = {name: row.get(name) for name in fields if not _blank(row.get(name))}
        _add_answer(legacy_map, step_id, "/".join(fields), value, answers, left_out)


def _text_field(row: dict[str, Any], name: str, limit: int, left_out: list[str]) -> str | None:
    value = row.get(name)
    if _blank(value):
        return None
    if not isinstance(value, str):
        left_out.append(f"{name}: must be text, not a JSON {_json_type(value)}")
        return None
    value = value.strip()
    if len(value) > limit:
        left_out.append(f"{name}: longer than {limit} characters")
        return None
    return value


def _row_id(row: dict[str, Any]) -> str | None:
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def _timestamps(row: dict[str, Any], legacy_id: str) -> tuple[datetime, datetime]:
    parsed: dict[str, datetime | None] = {}
    for name in ("created_at", "updated_at"):
        value = row.get(name)
        parsed[name] = None if value in (None, "") else _timestamp(value)
        if value not in (None, "") and parsed[name] is None:
            raise RowSkipped(
                "bad timestamp", f"'{name}' is not an ISO 8601 timestamp: {value!r}", legacy_id
            )
    created, updated = parsed["created_at"], parsed["updated_at"]
    if created is None and updated is None:
        raise RowSkipped("bad timestamp", "has neither 'created_at' nor 'updated_at'", legacy_id)
    return created or updated, updated or created  # type: ignore[return-value]


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _context_object(value: Any) -> dict[str, Any]:
    # Some exports hold the context as a JSON string rather than an object.
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_reject_constant, parse_float=_finite_float)
        except (ValueError, RecursionError):
            return {"context": value}
    if value is None:
        return {}
    return value if isinstance(value, dict) else {"context": value}


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _at_path(context: dict[str, Any], path: str) -> Any:
    value: Any = context
    for name in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _leaves(value: dict[str, Any], stop: set[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, item in value.items():
        path = f"{prefix}{name}"
        if path in stop:
            continue
        if isinstance(item, dict) and item:
            yield from _leaves(item, stop, path + ".")
        else:
            yield path, item


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, list | dict) and not value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number
