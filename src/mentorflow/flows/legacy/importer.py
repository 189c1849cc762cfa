"""Import learner sessions from the old client-synced app: one JSON object a line, nested context.

Each line of the file is an old session row (``id``, contact fields, ``clerk_user_id``,
``supermemory_container``, ``status``, ``created_at``, ``updated_at`` and a nested ``context``).
The import targets the flow's published version and pins every imported session to it.

Mapping (the pure functions below; no Flask, no database):

- Position: ``context.progress`` ``phase-{currentPhase}-step-{currentStep}`` when that step
  exists, else the nearest earlier one that does, comparing ``phase-N-step-M`` ids as (N, M);
  with no earlier step, or no position at all, the flow's first step. Every adjustment is
  reported. A ``completed`` row has no current step; ``active`` and ``abandoned`` carry over;
  any other status imports as active and is reported.
- Answers: a step that declares ``legacy_key`` (``situation.bookingStatus``) takes the value at
  that dotted path. Any other leaf of the context whose last name, in kebab case
  (``bookingStatus`` → ``booking-status``), is the key of an answer step that declares no
  ``legacy_key`` fills that step. Numeric text for number and scale steps and ``true``/``false``
  text for boolean steps are read as such; then the engine validates every answer, and an
  invalid one is reported and left out. Empty values (null, "", [], {}) are unanswered. A
  ``contact`` step without ``legacy_key`` that the learner has passed is answered from the row's
  own name, email and phone. Every other non-empty leaf is reported as not mapped, except the
  position fields (``progress.currentPhase``, ``currentStep``, ``completedPhases``: mentorflow
  derives completed phases from the path).
- Contact fields, ``clerk_user_id`` → external user id, ``supermemory_container`` → memory
  container (else ``mentorflow-{org}-{session id}``), ``created_at``/``updated_at`` (and
  ``completed_at`` = ``updated_at`` for completed rows) carry over.
- Nothing is lost: ``legacy_context`` keeps the row verbatim (``context`` and ``row``, the other
  fields) with the import's bookkeeping under ``import``.

Idempotency and conflicts: a session is found again by (org, legacy id); its
``legacy_context.import.fingerprint`` is the SHA-256 of the imported row's canonical JSON. A row
whose fingerprint matches is unchanged and left alone, unless the flow has published another
version since and the session has not advanced: then it is mapped again onto that version. A
*changed* row updates the session (every field above, version + 1) unless one of these holds,
which is a conflict, reported and left untouched:

- the session has advanced in mentorflow since its import, meaning it has at least one step
  event. The import never writes step events, and every learner move (an answer, a back)
  appends one in the transaction that changes the session; the abandonment sweep is not an
  advance, so a re-import overwrites what it did;
- the row is older (``updated_at``) than the one imported (an older export run again);
- the session was imported into another flow.

Imports write no outbox events: they are history that the old app already reported to PostHog
and Supermemory, not new learner activity. New sessions get a fresh random token whose hash is
stored and which is never shown.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mentorflow.flows.document import NO_ANSWER_TYPES
from mentorflow.flows.engine import AnswerError
from mentorflow.flows.engine import Flow as CompiledFlow
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession, SessionStatus, StepEvent
from mentorflow.flows.services import FlowError, compiled_flow, get_flow, get_version
from mentorflow.platform.auth import SESSION_TOKEN_PREFIX, generate_secret, hash_secret
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

if TYPE_CHECKING:
    from mentorflow.worker.models import Job

LEGACY_IMPORT = "legacy_import"
BATCH_SIZE = 500
#: How many lines a report lists per finding; the counts are always complete.
EXAMPLES_KEPT = 20
#: Fields of ``context.progress`` that the position mapping consumes.
POSITION_FIELDS = ("progress.currentPhase", "progress.currentStep", "progress.completedPhases")
CONTACT_LIMITS = {"name": 200, "email": 320, "phone": 40}
ID_MAX_LENGTH = 200

Progress = Callable[[int, int], None]

_STEP_ID = re.compile(r"phase-(\d+)-step-(\d+)")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_BOOLEAN_TEXT = {"true": True, "yes": True, "false": False, "no": False}
_STATUSES = {status.value: status for status in SessionStatus}


class LegacyImportError(Exception):
    """The import cannot start or go on; the message says why, for people."""


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
            if step["type"] in NO_ANSWER_TYPES:
                continue
            if step.get("legacy_key"):
                self.declared[step["legacy_key"]] = step_id
            else:
                self.undeclared_keys[step["key"]] = step_id
            if step["type"] == "contact":
                self.contact_keys.append(step["key"])
        self.positions = sorted(positions)

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


def parse_line(raw: bytes) -> dict[str, Any]:
    """Return the JSON object on one line of the file, or raise RowSkipped."""
    try:
        text = raw.rstrip(b"\r\n").decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise RowSkipped("malformed line", f"not UTF-8 text (byte {exc.start + 1})") from None
    try:
        row = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (column {exc.colno})"
        raise RowSkipped("malformed line", message) from None
    except (ValueError, RecursionError) as exc:
        raise RowSkipped("malformed line", f"not valid JSON: {exc}") from None
    if not isinstance(row, dict):
        raise RowSkipped("malformed line", f"a JSON {_json_type(row)}, not an object")
    # PostgreSQL stores neither NUL nor unpaired surrogates, in JSON or in text.
    if "\\u" in text:
        problem = _unstorable(row)
        if problem:
            raise RowSkipped("unstorable text", problem, _row_id(row))
    return row


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
    )


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
        if _blank(value) or path in POSITION_FIELDS:
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


def _unstorable(value: Any, path: str = "") -> str | None:
    if isinstance(value, str):
        if "\x00" in value:
            return f"{path or 'a value'} contains a NUL character, which PostgreSQL cannot store"
        if _SURROGATE.search(value):
            return f"{path or 'a value'} contains an unpaired UTF-16 surrogate"
        return None
    items: Any = ()
    if isinstance(value, dict):
        for name in value:
            problem = _unstorable(name, f"{path}.{name}".lstrip("."))
            if problem:
                return problem
        items = ((f"{path}.{name}".lstrip("."), item) for name, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    for item_path, item in items:
        problem = _unstorable(item, item_path)
        if problem:
            return problem
    return None


@dataclass
class Finding:
    """One line's outcome that a person should read."""

    line: int
    legacy_id: str | None
    message: str

    def __str__(self) -> str:
        who = f" ({self.legacy_id})" if self.legacy_id else ""
        return f"line {self.line}{who}: {self.message}"


@dataclass
class Findings:
    """A count of findings and the first few of them."""

    count: int = 0
    examples: list[Finding] = field(default_factory=list)

    def add(self, line: int, legacy_id: str | None, message: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(Finding(line, legacy_id, message))

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": [vars(f) for f in self.examples]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Findings:
        return cls(data["count"], [Finding(**f) for f in data["examples"]])


@dataclass
class ImportReport:
    """What an import did, or would do on a dry run.

    ``read`` = ``created + updated + unchanged + conflicts + skipped`` (blank lines are not
    read). Answers mapped, values left out, adjusted positions and keys not mapped count the
    sessions created or updated only: the figures describe what lands in the database.
    """

    org: str
    flow: str
    flow_version: int
    file: str
    applied: bool
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: Findings = field(default_factory=Findings)
    skipped: Findings = field(default_factory=Findings)
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    answers_mapped: int = 0
    left_out: Findings = field(default_factory=Findings)
    positions_adjusted: Findings = field(default_factory=Findings)
    keys_not_mapped: Counter[str] = field(default_factory=Counter)

    def skip(self, line: int, exc: RowSkipped) -> None:
        self.skipped.add(line, exc.legacy_id, exc.message)
        self.skipped_reasons[exc.reason] += 1

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (a job's result)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in data.items():
            if isinstance(value, Findings):
                data[name] = value.to_dict()
            elif isinstance(value, Counter):
                data[name] = dict(value.most_common())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportReport:
        """Rebuild a report from ``to_dict`` data."""
        values = dict(data)
        for name in ("conflicts", "skipped", "left_out", "positions_adjusted"):
            values[name] = Findings.from_dict(values[name])
        for name in ("skipped_reasons", "keys_not_mapped"):
            values[name] = Counter(values[name])
        return cls(**values)

    def render(self) -> str:
        """Return the report as people read it."""
        mode = "applied" if self.applied else "dry run: nothing written; --apply writes"
        lines = [
            f"Legacy import of {self.file} into {self.org}/{self.flow} version "
            f"{self.flow_version} ({mode})",
            _figure("sessions read", self.read),
            _figure("created" if self.applied else "would create", self.created),
            _figure("updated" if self.applied else "would update", self.updated),
            _figure("unchanged", self.unchanged),
            _figure("conflicts (left untouched)", self.conflicts.count),
            *_examples(self.conflicts),
            _figure("skipped", self.skipped.count),
        ]
        for reason, count in self.skipped_reasons.most_common():
            lines.append(_figure(f"  {reason}", count))
        lines += [
            *_examples(self.skipped),
            _figure("answers mapped", self.answers_mapped),
            _figure("values left out (invalid)", self.left_out.count),
            *_examples(self.left_out),
            _figure("positions adjusted", self.positions_adjusted.count),
            *_examples(self.positions_adjusted),
            _figure("keys not mapped", len(self.keys_not_mapped)),
        ]
        for path, count in self.keys_not_mapped.most_common():
            lines.append(f"    {path} ({count} session{'' if count == 1 else 's'})")
        if self.keys_not_mapped:
            lines.append("    (kept only in each session's legacy_context)")
        return "\n".join(lines)


def _figure(label: str, value: int) -> str:
    return f"  {label:<28}{value:>8}"


def _examples(findings: Findings) -> list[str]:
    lines = [f"    {finding}" for finding in findings.examples]
    if findings.count > len(findings.examples):
        lines.append(f"    … and {findings.count - len(findings.examples)} more")
    return lines


def import_target(org: Org, flow_slug: str) -> tuple[Flow, FlowVersion]:
    """Return the flow and the published version an import writes to, or raise."""
    try:
        flow = get_flow(org, flow_slug)
        if flow.archived_at is not None:
            raise FlowError(f"flow '{flow_slug}' is archived")
        return flow, get_version(flow)
    except FlowError as exc:
        raise LegacyImportError(str(exc)) from None


def import_legacy_sessions(
    org: Org,
    flow_slug: str,
    path: Path,
    *,
    apply: bool,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Stream a file of old sessions into the flow's published version; commit per batch.

    A dry run (``apply=False``) reads the same way and writes nothing. The caller must not
    hold uncommitted changes: every batch is its own transaction.
    """
    flow, version = import_target(org, flow_slug)
    importer = _Importer(org, flow, version, path, apply=apply)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise LegacyImportError(f"{path}: {exc.strerror}") from None
    with handle:
        total = os.fstat(handle.fileno()).st_size
        batch: list[tuple[int, MappedSession]] = []
        for number, raw in enumerate(handle, start=1):
            mapped = importer.read_line(number, raw)
            if mapped is not None:
                batch.append((number, mapped))
            if len(batch) >= batch_size:
                importer.write_batch(batch)
                batch = []
                if progress:
                    progress(handle.tell(), total)
        importer.write_batch(batch)
        if progress:
            progress(total, total)
    return importer.report


class _Importer:
    def __init__(
        self, org: Org, flow: Flow, version: FlowVersion, path: Path, *, apply: bool
    ) -> None:
        # Plain values: every batch commits, which expires the ORM objects.
        self.org_id, self.org_slug = org.id, org.slug
        self.flow_id, self.version_id = flow.id, version.id
        self.version_number = version.number
        self.legacy_map = LegacyMap(compiled_flow(version))
        self.apply = apply
        self.file = path.name
        self.first_line: dict[str, int] = {}
        self.report = ImportReport(
            org=org.slug,
            flow=flow.slug,
            flow_version=version.number,
            file=str(path),
            applied=apply,
        )

    def read_line(self, number: int, raw: bytes) -> MappedSession | None:
        if not raw.strip():
            return None
        self.report.read += 1
        try:
            mapped = map_row(parse_line(raw), self.legacy_map)
        except RowSkipped as exc:
            self.report.skip(number, exc)
            return None
        first = self.first_line.setdefault(mapped.legacy_id, number)
        if first != number:
            self.report.skip(
                number,
                RowSkipped("duplicate id", f"same id as line {first}; skipped", mapped.legacy_id),
            )
            return None
        return mapped

    def write_batch(self, batch: list[tuple[int, MappedSession]]) -> None:
        if not batch:
            return
        if self.apply:
            begin_write(db.session)
        existing = self._existing([mapped.legacy_id for _, mapped in batch])
        advanced = self._advanced([session.id for session in existing.values()])
        for line, mapped in batch:
            session = existing.get(mapped.legacy_id)
            if session is None:
                self._count_written(line, mapped)
                self.report.created += 1
                if self.apply:
                    db.session.add(self._new_session(line, mapped))
                continue
            conflict = self._conflict(session, mapped, advanced)
            if conflict == "unchanged":
                self.report.unchanged += 1
            elif conflict:
                self.report.conflicts.add(line, mapped.legacy_id, conflict)
            else:
                self._count_written(line, mapped)
                self.report.updated += 1
                if self.apply:
                    self._update_session(session, line, mapped)
        if not self.apply:
            db.session.rollback()
            return
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise LegacyImportError(
                "another import into this organization wrote some of the same sessions at the "
                "same time; run this import again (it skips what is already there)"
            ) from None

    def _existing(self, legacy_ids: list[str]) -> dict[str, LearnerSession]:
        query = sa.select(LearnerSession).where(
            LearnerSession.org_id == self.org_id, LearnerSession.legacy_id.in_(legacy_ids)
        )
        if self.apply:
            # A secret key may advance any session: hold them until this batch commits.
            query = query.with_for_update(of=LearnerSession)
        return {session.legacy_id: session for session in db.session.scalars(query)}

    def _advanced(self, session_ids: list[str]) -> set[str]:
        if not session_ids:
            return set()
        return set(
            db.session.scalars(
                sa.select(StepEvent.session_id)
                .where(StepEvent.session_id.in_(session_ids))
                .distinct()
            )
        )

    def _conflict(self, session: LearnerSession, mapped: MappedSession, advanced: set[str]) -> str:
        """Return "unchanged", a conflict message, or "" when the session may be updated."""
        meta = (session.legacy_context or {}).get("import") or {}
        if session.flow_id != self.flow_id:
            return f"already imported into flow '{session.flow.slug}'"
        same_row = meta.get("fingerprint") == mapped.fingerprint
        # An unchanged row has nothing new to say about a session its learner has moved on.
        if same_row and (session.flow_version_id == self.version_id or session.id in advanced):
            return "unchanged"
        if session.id in advanced:
            return f"session {session.id} has advanced in mentorflow since its import"
        imported = _timestamp(meta.get("updated_at"))
        if imported is not None and mapped.updated_at < imported:
            return (
                f"the file's row (updated {mapped.updated_at.isoformat()}) is older than the "
                f"one imported (updated {imported.isoformat()})"
            )
        return ""

    def _count_written(self, line: int, mapped: MappedSession) -> None:
        self.report.answers_mapped += len(mapped.answers)
        for message in mapped.left_out:
            self.report.left_out.add(line, mapped.legacy_id, message)
        if mapped.position_note:
            self.report.positions_adjusted.add(line, mapped.legacy_id, mapped.position_note)
        self.report.keys_not_mapped.update(mapped.not_mapped)

    def _new_session(self, line: int, mapped: MappedSession) -> LearnerSession:
        session_id = secrets.token_hex(16)
        session = LearnerSession(
            id=session_id,
            org_id=self.org_id,
            flow_id=self.flow_id,
            token_hash=hash_secret(generate_secret(SESSION_TOKEN_PREFIX)),
            legacy_id=mapped.legacy_id,
            version=1,
        )
        self._fill(session, line, mapped)
        return session

    def _update_session(self, session: LearnerSession, line: int, mapped: MappedSession) -> None:
        self._fill(session, line, mapped)
        session.version += 1

    def _fill(self, session: LearnerSession, line: int, mapped: MappedSession) -> None:
        session.flow_version_id = self.version_id
        session.current_step_id = mapped.current_step_id
        session.answers = mapped.answers
        session.status = mapped.status
        session.name, session.email, session.phone = mapped.name, mapped.email, mapped.phone
        session.external_user_id = mapped.external_user_id
        session.memory_container = (
            mapped.memory_container or f"mentorflow-{self.org_slug}-{session.id}"
        )
        session.created_at = mapped.created_at
        session.updated_at = mapped.updated_at
        session.last_activity_at = mapped.updated_at
        session.completed_at = mapped.completed_at
        session.legacy_context = {
            "context": mapped.context,
            "row": mapped.row,
            "import": {
                "fingerprint": mapped.fingerprint,
                "updated_at": mapped.updated_at.isoformat(),
                "imported_at": utcnow().isoformat(),
                "flow_version": self.version_number,
                "file": self.file,
                "line": line,
            },
        }


def run_import_job(job: Job, progress: Progress) -> dict[str, Any]:
    """Run a ``legacy_import`` job: its params name the flow, the file and whether to apply."""
    from mentorflow.worker.jobs import JobError  # the jobs module imports this one

    org = db.session.get(Org, job.org_id)
    params = job.params
    try:
        report = import_legacy_sessions(
            org, params["flow"], Path(params["path"]), apply=params["apply"], progress=progress
        )
    except LegacyImportError as exc:
        raise JobError(str(exc)) from None
    return report.to_dict()
