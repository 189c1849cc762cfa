"""Importing sessions from the old nested-context app: mapping, idempotency, conflicts."""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mentorflow.cli.demo import example_answer
from mentorflow.cli.legacy import legacy as legacy_command
from mentorflow.flows import authoring, learner_sessions, legacy
from mentorflow.flows.document import load_document
from mentorflow.flows.engine import CompiledFlow
from mentorflow.flows.legacy import (
    ImportReport,
    LegacyImportError,
    LegacyMap,
    RowSkipped,
    import_legacy_sessions,
    kebab_case,
    map_answers,
    map_position,
    map_row,
    parse_line,
)
from mentorflow.flows.models import LearnerSession, StepEvent
from mentorflow.jobs import runner as jobs
from mentorflow.jobs.models import Job
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import OutboxEvent
from mentorflow.tenants import services as tenant_services
from support import (
    DEMO_FLOW,
    POSTGRES_URL,
    make_app,
    recreate_postgres_database,
    service_missing,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "legacy-sessions.jsonl"
SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"
FLOW = "rafael-tats"
STEPS_PER_PHASE = {1: 5, 2: 4, 3: 3, 4: 4}
BOOKED_AHEAD = "booked-3-months"  # the demo flow skips phase 2 for these learners


@pytest.fixture(scope="module")
def demo_map() -> LegacyMap:
    return LegacyMap(CompiledFlow(load_document(DEMO_FLOW.read_text())))


def expected_step(phase: int, step: int) -> str:
    """The step a legacy position lands on in the demo flow, worked out by hand."""
    if phase in STEPS_PER_PHASE and step >= 1:
        return f"phase-{phase}-step-{min(step, STEPS_PER_PHASE[phase])}"
    if phase > 4:
        return "phase-4-step-4"
    if phase - 1 in STEPS_PER_PHASE:
        return f"phase-{phase - 1}-step-{STEPS_PER_PHASE[phase - 1]}"
    return "phase-1-step-1"


# Per legacy path: (flat key, valid raw values with what they become, invalid raw values).
ANSWERS: dict[str, tuple[str, list[tuple[Any, Any]], list[Any]]] = {
    "situation.bookingStatus": (
        "booking-status",
        [(v, v) for v in ("booked-3-months", "booked-1-month", "booked-2-weeks", "open-books")],
        ["fully-booked"],
    ),
    "situation.dayRate": ("day-rate", [(450, 450), ("650", 650), (" 80.5 ", 80.5)], ["lots", -5]),
    "situation.goal": ("goal", [("A waitlist.", "A waitlist."), ("  Travel  ", "Travel")], [42]),
    "situation.blocker": ("blocker", [("Time.", "Time.")], ["x" * 281]),
    "situation.confession": ("confession", [("I undercharge.", "I undercharge.")], [["a"]]),
    "phase2.checkFirst": ("check-first", [("dms", "dms"), ("likes", "likes")], ["tiktok"]),
    "phase2.hundredKFollowers": (
        "hundred-k-followers",
        [(True, True), (False, False), ("yes", True), ("False", False)],
        ["maybe"],
    ),
    "phase2.postWorked": ("post-worked", [("A healed carousel.", "A healed carousel.")], [7]),
    "phase3.timeOnContent": ("time-on-content", [(3, 3), ("7", 7), (10, 10)], [11, "often"]),
    "phase3.hardestPart": ("hardest-part", [("Ideas.", "Ideas.")], [{"a": 1}]),
    "phase3.contentCreatorIdentity": (
        "content-creator-identity",
        [("no-artist", "no-artist"), ("not-sure", "not-sure")],
        ["influencer"],
    ),
    "phase4.lastPriceRaise": ("last-price-raise", [("never", "never")], ["last week"]),
    "phase4.tooExpensiveResponse": ("too-expensive-response", [("I explain.", "I explain.")], []),
    "phase4.pricingFear": ("pricing-fear", [("Losing regulars.", "Losing regulars.")], [False]),
}
POSITIONS: list[tuple[int, int] | None] = [
    (phase, step) for phase in range(6) for step in range(7)
] + [None]
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Expected:
    legacy_id: str
    line: int
    row: dict[str, Any]
    status: str
    step: str | None
    answers: dict[str, Any]
    old_completed_phases: list[int] | None  # None: the position had to be adjusted
    created_at: datetime
    updated_at: datetime


@dataclass
class LegacyFile:
    """A generated file of old sessions and everything the import should make of it."""

    lines: list[bytes] = field(default_factory=list)
    sessions: dict[str, Expected] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # line → reason
    left_out: int = 0
    adjusted: int = 0
    not_mapped: Counter[str] = field(default_factory=Counter)
    videos: int = 0
    memories: int = 0

    def write(self, path: Path) -> Path:
        path.write_bytes(b"".join(line + b"\n" for line in self.lines))
        return path

    def add_row(self, row: dict[str, Any]) -> int:
        self.lines.append(json.dumps(row, ensure_ascii=False).encode())
        return len(self.lines)

    def add_bad(self, raw: bytes, reason: str) -> None:
        self.lines.append(raw)
        self.skipped[len(self.lines)] = reason


def old_session(rng: random.Random, index: int, data: LegacyFile) -> None:
    """Add one old-shape session, recording what it should import as."""
    legacy_id = f"legacy-{index:05d}"
    context: dict[str, Any] = {}
    valid: dict[str, Any] = {}
    invalid: set[str] = set()
    for path, (_, good, bad) in ANSWERS.items():
        section, name = path.split(".")
        draw = rng.random()
        if draw < 0.7:
            raw, valid[path] = rng.choice(good)
        elif draw < 0.8 and bad:
            raw = rng.choice(bad)
            invalid.add(path)
        elif draw < 0.88:
            raw = rng.choice(["", None, "   "])  # unanswered
        else:
            continue
        context.setdefault(section, {})[name] = raw
    for section in list(context):
        if rng.random() < 0.08:
            del context[section]  # a missing section
    answers = {ANSWERS[p][0]: v for p, v in valid.items() if p.split(".")[0] in context}
    left_out = sum(p.split(".")[0] in context for p in invalid)
    booked_ahead = answers.get("booking-status") == BOOKED_AHEAD
    draw = rng.random()
    status = "completed" if draw < 0.15 else "abandoned" if draw < 0.25 else "active"
    if draw > 0.99:
        status = "paused"  # unknown: imported as active, reported
        left_out += 1
    position = POSITIONS[index % len(POSITIONS)]
    name = f"Learner {index}" if rng.random() < 0.9 else None
    email = f"learner{index}@example.com" if rng.random() < 0.9 else None
    if status == "completed":
        step = None
        exact = True
        phases = [1, 3, 4] if booked_ahead else [1, 2, 3, 4]
        if name and email:
            answers["contact"] = {"name": name, "email": email}
        else:
            left_out += 1  # the learner passed the contact step, but the row lacks a field
    else:
        step = expected_step(*position) if position else "phase-1-step-1"
        exact = position is not None and step == f"phase-{position[0]}-step-{position[1]}"
        data.adjusted += not exact
        current = position[0] if position else 1
        phases = [p for p in range(1, current) if not (p == 2 and booked_ahead)]
    if position is not None:
        context["progress"] = {
            "currentScreen": "level-flow",
            "currentPhase": position[0],
            "currentStep": position[1],
            "completedPhases": phases,
            "videosWatched": ["content-that-books"] if rng.random() < 0.3 else [],
        }
        data.not_mapped["progress.currentScreen"] += 1
        data.videos += len(context["progress"]["videosWatched"])
    context["memory"] = [{"fact": "prefers email"}] if rng.random() < 0.1 else []
    context["conversation"] = []
    data.memories += len(context["memory"])
    for path, value, reported in (
        ("situation.favoriteStyle", "fine line", "situation.favoriteStyle"),  # unknown
        ("phase4.checkFirst", "dms", "phase4.checkFirst"),  # check-first declares another path
        ("phase5.extra", {"deep": True}, "phase5.extra.deep"),
        ("notes", "call back", "notes"),
    ):
        if rng.random() < 0.05:
            section, _, key = path.rpartition(".")
            (context.setdefault(section, {}) if section else context)[key] = value
            data.not_mapped[reported] += 1
    created = EPOCH + timedelta(minutes=index)
    updated = created + timedelta(minutes=rng.randint(0, 600))
    row = {
        "id": legacy_id,
        "clerk_user_id": f"user_{index}",
        "clerk_org_id": "org_old",
        "email": email,
        "phone": None,
        "name": name,
        "supermemory_container": f"old-container-{index}" if index % 3 else None,
        "status": status,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "updated_at": updated.isoformat(),
        "context": context,
    }
    line = data.add_row(row)
    data.left_out += left_out
    data.sessions[legacy_id] = Expected(
        legacy_id=legacy_id,
        line=line,
        row=row,
        status="active" if status == "paused" else status,
        step=step,
        answers=answers,
        old_completed_phases=phases if exact else None,
        created_at=created,
        updated_at=updated,
    )


BAD_LINES: list[tuple[bytes, str]] = [
    (b'{"id": "cut-short", "context": {"progress": {"currentPhase": 2,', "malformed line"),
    (b"this is not json", "malformed line"),
    (b"[1, 2, 3]", "malformed line"),
    (b'{"id": "nan", "created_at": "2024-01-01", "context": {"x": NaN}}', "malformed line"),
    (b'{"id": "huge", "created_at": "2024-01-01", "context": {"x": 1e400}}', "malformed line"),
    (b'{"id": "latin1-\xe9", "created_at": "2024-01-01"}', "malformed line"),
    (b'{"id": "", "created_at": "2024-01-01T00:00:00Z"}', "no id"),
    (b'{"name": "no id at all", "created_at": "2024-01-01T00:00:00Z"}', "no id"),
    (b'{"id": "when", "created_at": "yesterday"}', "bad timestamp"),
    (b'{"id": "never"}', "bad timestamp"),
    (b'{"id": "nul", "created_at": "2024-01-01", "name": "a\\u0000b"}', "unstorable text"),
    (b'{"id": "half", "created_at": "2024-01-01", "context": {"a": "\\ud800"}}', "unstorable text"),
]


def generate(count: int, *, seed: int, bad_lines: bool = True) -> LegacyFile:
    """Build a file of ``count`` old sessions, with malformed lines and blank lines mixed in."""
    rng = random.Random(seed)
    data = LegacyFile()
    for index in range(count):
        old_session(rng, index, data)
        if bad_lines and index % 125 == 60:
            raw, reason = BAD_LINES[(index // 125) % len(BAD_LINES)]
            data.add_bad(raw, reason)
        if bad_lines and index % 1000 == 500:
            data.lines.append(b"   ")
        if bad_lines and index % 997 == 3 and index > 3:
            earlier = data.sessions[f"legacy-{index - 2:05d}"]
            data.add_bad(data.lines[earlier.line - 1], "duplicate id")
    return data


def snapshot() -> dict[str, tuple[Any, ...]]:
    db.session.expire_all()
    return {
        s.legacy_id: (
            s.id,
            s.version,
            s.status,
            s.current_step_id,
            s.updated_at,
            json.dumps(s.answers, sort_keys=True),
            s.flow_version_id,
            s.legacy_context["import"]["imported_at"],
        )
        for s in db.session.scalars(sa.select(LearnerSession))
    }


def run_import(org_slug: str, path: Path, *, apply: bool, flow: str = FLOW) -> ImportReport:
    from mentorflow.tenants.services import get_org

    org = get_org(org_slug)
    db.session.commit()
    return import_legacy_sessions(org, flow, path, apply=apply)


# --- the mapping, without a database ---------------------------------------------------------


def test_kebab_case():
    assert kebab_case("bookingStatus") == "booking-status"
    assert kebab_case("hundredKFollowers") == "hundred-k-followers"
    assert kebab_case("postURLShared") == "post-url-shared"
    assert kebab_case("day_rate") == "day-rate"
    assert kebab_case("phase2") == "phase2"


@pytest.mark.parametrize("position", [p for p in POSITIONS if p is not None])
def test_every_position_maps_to_its_step_or_the_nearest_earlier_one(demo_map, position):
    step, note = map_position({"currentPhase": position[0], "currentStep": position[1]}, demo_map)
    assert step == expected_step(*position)
    assert (note is None) == (step == f"phase-{position[0]}-step-{position[1]}")


@pytest.mark.parametrize(
    "progress", [None, {}, {"currentPhase": 2}, {"currentPhase": "two", "currentStep": 1}]
)
def test_no_position_starts_at_the_first_step(demo_map, progress):
    step, note = map_position(progress, demo_map)
    assert step == "phase-1-step-1" and "no position" in note


def test_position_numbers_given_as_text_are_read(demo_map):
    assert map_position({"currentPhase": "3", "currentStep": "2"}, demo_map) == (
        "phase-3-step-2",
        None,
    )


def test_undeclared_keys_fall_back_to_kebab_case_only_for_answer_keys():
    definition = load_document(DEMO_FLOW.read_text())
    for phase in definition["phases"]:
        for step in phase["steps"]:
            if step["id"] in ("phase-1-step-2", "phase-2-step-2"):
                del step["legacy_key"]
    legacy_map = LegacyMap(CompiledFlow(definition))
    context = {
        "situation": {"dayRate": "450", "goal": "Waitlist", "favoriteStyle": "dotwork"},
        "phase2": {"checkFirst": "dms"},
        "later": {"checkFirst": "likes", "goal": "declared elsewhere"},
        "progress": {"currentPhase": 1, "currentStep": 1, "videosWatched": ["a"]},
    }
    left_out: list[str] = []
    answers, not_mapped = map_answers(context, legacy_map, left_out)
    assert answers == {"day-rate": 450, "check-first": "dms", "goal": "Waitlist"}
    assert not_mapped == [
        "situation.favoriteStyle",
        "later.checkFirst",  # check-first is taken by phase2.checkFirst, first in the context
        "later.goal",  # goal declares situation.goal
    ]
    assert left_out == []


def test_invalid_answers_are_left_out_and_reported(demo_map):
    left_out: list[str] = []
    answers, _ = map_answers(
        {"situation": {"bookingStatus": "fully-booked", "dayRate": "lots", "goal": "Ok"}},
        demo_map,
        left_out,
    )
    assert answers == {"goal": "Ok"}
    assert left_out[0].startswith("situation.bookingStatus → booking-status: must be one of:")
    assert left_out[1] == "situation.dayRate → day-rate: must be a number"


def test_a_row_keeps_everything_and_carries_its_fields_over(demo_map):
    row = json.loads(EXAMPLE.read_text().splitlines()[2])  # the completed session
    mapped = map_row(copy.deepcopy(row), demo_map)
    assert mapped.legacy_id == "sess_0003" and mapped.status == "completed"
    assert mapped.current_step_id is None
    assert (
        mapped.completed_at == mapped.updated_at == datetime(2024, 10, 20, 11, 42, 55, tzinfo=UTC)
    )
    assert mapped.answers["contact"] == {"name": "Ines Duarte", "email": "ines@example.com"}
    assert mapped.answers["day-rate"] == 900 and "check-first" not in mapped.answers
    assert (mapped.external_user_id, mapped.memory_container) == ("user_2N0003", "tattoo-0003")
    assert mapped.phone == "+351 912 345 678"
    assert mapped.context == row["context"]
    assert mapped.row == {k: v for k, v in row.items() if k != "context"}


def test_a_context_stored_as_a_json_string_is_read(demo_map):
    row = {
        "id": "s1",
        "created_at": "2024-05-01T10:00:00",
        "context": json.dumps({"situation": {"goal": "More"}}),
    }
    mapped = map_row(row, demo_map)
    assert mapped.answers == {"goal": "More"} and mapped.context == row["context"]
    assert mapped.updated_at == mapped.created_at == datetime(2024, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "reason"), BAD_LINES)
def test_lines_that_cannot_be_imported_say_why(demo_map, raw, reason):
    with pytest.raises(RowSkipped) as caught:
        map_row(parse_line(raw), demo_map)
    assert caught.value.reason == reason


# --- the round trip through the database ------------------------------------------------------


@pytest.fixture(scope="module")
def five_thousand(tmp_path_factory) -> tuple[LegacyFile, Path]:
    data = generate(5000, seed=20240601)
    return data, data.write(tmp_path_factory.mktemp("legacy") / "sessions.jsonl")


def test_round_trip_of_5000_old_sessions(
    create_org, publish_flow, client, five_thousand, monkeypatch
):
    monkeypatch.setattr(legacy.report, "EXAMPLES_KEPT", 100_000)
    data, path = five_thousand
    keys = create_org()
    publish_flow(keys.org)
    started = time.monotonic()

    dry = run_import(keys.slug, path, apply=False)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LearnerSession)) == 0
    report = run_import(keys.slug, path, apply=True)
    elapsed = time.monotonic() - started

    assert report.to_dict() | {"applied": True} == dry.to_dict() | {"applied": True}
    assert report.read == len(data.sessions) + len(data.skipped)
    assert (report.created, report.updated, report.unchanged) == (len(data.sessions), 0, 0)
    assert report.conflicts.count == 0
    assert {f.line: f.message for f in report.skipped.examples}.keys() == data.skipped.keys()
    assert report.skipped_reasons == Counter(data.skipped.values())
    assert report.left_out.count == data.left_out
    assert report.positions_adjusted.count == data.adjusted
    assert report.keys_not_mapped == +data.not_mapped

    sessions = {s.legacy_id: s for s in db.session.scalars(sa.select(LearnerSession))}
    assert sessions.keys() == data.sessions.keys()
    assert report.answers_mapped == sum(len(s.answers) for s in sessions.values())
    version = authoring.get_flow(keys.org, FLOW).published_version_id
    for legacy_id, expected in data.sessions.items():
        session = sessions[legacy_id]
        row = expected.row
        assert session.answers == expected.answers, legacy_id
        assert session.current_step_id == expected.step, legacy_id
        assert (session.status, session.flow_version_id) == (expected.status, version)
        assert (session.name, session.email) == (row["name"], row["email"])
        assert session.external_user_id == row["clerk_user_id"]
        assert session.memory_container == (
            row["supermemory_container"] or f"mentorflow-{keys.slug}-{session.id}"
        )
        assert (session.created_at, session.updated_at) == (
            expected.created_at,
            expected.updated_at,
        )
        assert session.completed_at == (
            expected.updated_at if expected.status == "completed" else None
        )
        assert session.legacy_context["context"] == row["context"]
        assert session.legacy_context["row"] == {k: v for k, v in row.items() if k != "context"}
        assert session.version == 1 and len(session.token_hash) == 64
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StepEvent)) == 0
    # Videos watched and memories became messages; each is a message.created event.
    assert (report.videos_mapped, report.memories_imported) == (data.videos, data.memories)
    assert data.videos > 100 and data.memories > 50
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)) == (
        data.videos + data.memories
    )

    sample = [e for e in data.sessions.values() if e.old_completed_phases is not None][::40]
    assert len(sample) > 50
    for expected in sample:
        response = client.get(
            f"/v1/orgs/{keys.slug}/sessions/{sessions[expected.legacy_id].id}/context",
            headers={"Authorization": f"Bearer {keys.sk}"},
        )
        assert response.status_code == 200
        phases = [f"phase-{n}" for n in expected.old_completed_phases]
        assert response.json["completed_phases"] == phases, expected.legacy_id

    before = snapshot()
    again = run_import(keys.slug, path, apply=True)
    assert (again.created, again.updated, again.conflicts.count) == (0, 0, 0)
    assert again.unchanged == len(data.sessions)
    assert again.skipped_reasons == report.skipped_reasons
    assert again.answers_mapped == 0 and not again.keys_not_mapped
    assert (again.videos_mapped, again.memories_imported) == (0, 0)
    assert snapshot() == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)) == (
        data.videos + data.memories
    )
    assert elapsed < 30, f"the dry run and the import took {elapsed:.1f} s"


def test_a_changed_row_updates_only_sessions_that_have_not_advanced(
    ctx, create_org, publish_flow, tmp_path
):
    data = generate(60, seed=7, bad_lines=False)
    keys = create_org()
    publish_flow(keys.org)
    path = data.write(tmp_path / "first.jsonl")
    assert run_import(keys.slug, path, apply=True).created == 60

    sessions = {s.legacy_id: s for s in db.session.scalars(sa.select(LearnerSession))}
    active = sorted(k for k, s in sessions.items() if s.status == "active")
    advanced, changed, older, quiet = active[:4], active[4:8], active[8:10], active[10:14]
    begin_write(db.session)
    for legacy_id in advanced + quiet:
        session = learner_sessions.lock_session(keys.org.id, sessions[legacy_id].id)
        step = authoring.compiled_flow(session.flow_version).step(session.current_step_id)
        learner_sessions.commit_step(keys.org, session, step["id"], example_answer(step))
    db.session.commit()
    # The abandonment sweep changes imported sessions too, but it is not an advance.
    begin_write(db.session)
    assert learner_sessions.abandon_inactive_sessions(3600) > 0
    db.session.commit()
    before = snapshot()

    rows = {legacy_id: expected.row for legacy_id, expected in data.sessions.items()}
    for legacy_id in advanced + changed + older:
        rows[legacy_id]["context"].setdefault("situation", {})["goal"] = f"New goal {legacy_id}"
        shift = timedelta(days=-1 if legacy_id in older else 1)
        stamp = datetime.fromisoformat(rows[legacy_id]["updated_at"]) + shift
        rows[legacy_id]["updated_at"] = stamp.isoformat()
    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps(row) + "\n" for row in rows.values()))

    report = run_import(keys.slug, second, apply=True)
    assert (report.created, report.updated, report.unchanged) == (0, 4, 60 - 10)
    conflicts = {f.legacy_id: f.message for f in report.conflicts.examples}
    assert conflicts.keys() == set(advanced + older)
    assert all("advanced in mentorflow" in conflicts[k] for k in advanced)
    assert all("is older than the one imported" in conflicts[k] for k in older)
    after = snapshot()
    for legacy_id in set(before) - set(changed):
        assert after[legacy_id] == before[legacy_id], legacy_id
    for legacy_id in changed:
        session = db.session.scalars(
            sa.select(LearnerSession).where(LearnerSession.legacy_id == legacy_id)
        ).one()
        assert session.answers["goal"] == f"New goal {legacy_id}"
        assert session.version == before[legacy_id][1] + 1
        assert session.status == data.sessions[legacy_id].status  # the sweep's status is undone

    # Another published version: sessions that have not advanced are mapped onto it again.
    definition = load_document(DEMO_FLOW.read_text())
    definition["title"] += " (v2)"
    assert publish_flow(keys.org, definition) == 2
    republished = run_import(keys.slug, second, apply=True)
    assert republished.updated == 60 - len(advanced + quiet + older)
    assert republished.unchanged == len(quiet)  # their learners moved on
    assert republished.conflicts.count == len(advanced + older)  # changed rows stay conflicts

    begin_write(db.session)
    flow, _ = authoring.save_draft(keys.org, load_document(SMALL_FLOW.read_text()))
    authoring.publish_version(flow)
    db.session.commit()
    elsewhere = run_import(keys.slug, second, apply=False, flow="onboarding")
    assert elsewhere.conflicts.count == 60
    assert "already imported into flow 'rafael-tats'" in elsewhere.conflicts.examples[0].message


def test_cli_dry_run_then_apply_on_the_example_file(ctx, create_org, publish_flow):
    keys = create_org()
    publish_flow(keys.org)
    runner = ctx.test_cli_runner()

    dry = runner.invoke(legacy_command, ["import", keys.slug, FLOW, str(EXAMPLE)])
    assert dry.exit_code == 0, dry.output
    assert "(dry run: nothing written; --apply writes)" in dry.stdout
    assert "would create                      10" in dry.stdout
    assert "line 6: not valid JSON" in dry.stdout
    assert "line 7 (sess_0007): situation.dayRate → day-rate: must be a number" in dry.stdout
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LearnerSession)) == 0

    applied = runner.invoke(legacy_command, ["import", keys.slug, FLOW, str(EXAMPLE), "--apply"])
    assert applied.exit_code == 0, applied.output
    assert "created                           10" in applied.stdout
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LearnerSession)) == 10

    missing = runner.invoke(legacy_command, ["import", keys.slug, "nope", str(EXAMPLE)])
    assert missing.exit_code == 1 and f"no flow 'nope' in '{keys.slug}'" in missing.output
    nobody = runner.invoke(legacy_command, ["import", "ghost", FLOW, str(EXAMPLE)])
    assert nobody.exit_code == 1 and "no organization 'ghost'" in nobody.output


def test_unpublished_flow_is_refused(ctx, create_org):
    keys = create_org()
    begin_write(db.session)
    authoring.save_draft(keys.org, load_document(DEMO_FLOW.read_text()))
    db.session.commit()
    with pytest.raises(LegacyImportError, match="has no published version"):
        run_import(keys.slug, EXAMPLE, apply=False)


def test_import_job_reports_progress_and_its_result(ctx, create_org, publish_flow, tmp_path):
    data = generate(1200, seed=3)
    path = data.write(tmp_path / "job.jsonl")
    keys = create_org()
    publish_flow(keys.org)
    begin_write(db.session)
    job = jobs.create_job(
        keys.org,
        legacy.LEGACY_IMPORT,
        {"flow": FLOW, "path": str(path), "apply": True},
        by="tests",
    )
    db.session.commit()
    jobs.run_job(job.id)

    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert (job.status, job.progress, job.error) == ("completed", 100, None)
    report = ImportReport.from_dict(job.result)
    assert report.created == 1200 and report.skipped.count == len(data.skipped)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LearnerSession)) == 1200


def test_background_import_runs_on_a_real_worker(backend, tmp_path):
    import redis

    from test_worker import REDIS_URL, Processes, redis_reachable

    # A database of its own: a worker of test_worker.py must never take this job.
    broker_url = REDIS_URL.rpartition("/")[0] + "/13"
    if not redis_reachable(broker_url):
        service_missing(f"Redis is not reachable at {broker_url}")
    redis.Redis.from_url(broker_url).flushdb()
    if backend == "postgresql":
        database_url = recreate_postgres_database(POSTGRES_URL + "_legacy")
    else:
        database_url = f"sqlite:///{tmp_path / 'legacy.db'}"
    app = make_app(database_url, tmp_path, BROKER_URL=broker_url)
    processes = Processes(
        {
            **os.environ,
            "MENTORFLOW_DATABASE_URL": database_url,
            "MENTORFLOW_INSTANCE_PATH": str(tmp_path),
            "MENTORFLOW_SECRET_KEY": "test-secret",
            "MENTORFLOW_BROKER_URL": broker_url,
        },
        tmp_path,
    )
    try:
        with app.app_context():
            org = tenant_services.create_org("acme", "Acme")
            flow, _ = authoring.save_draft(org, load_document(DEMO_FLOW.read_text()))
            authoring.publish_version(flow)
            db.session.commit()
            worker = processes.worker()
            args = ["import", "acme", FLOW, str(EXAMPLE), "--apply", "--background"]
            result = app.test_cli_runner().invoke(legacy_command, [*args, "--timeout", "60"])
            exited = worker.poll()
            log = (tmp_path / "worker-0.log").read_text()[-3000:] if exited is not None else ""
            assert result.exit_code == 0, f"{result.output}\nworker exit {exited}: {log}"
            assert "created                           10" in result.stdout
            assert db.session.scalar(sa.select(sa.func.count()).select_from(LearnerSession)) == 10
            db.session.remove()
    finally:
        processes.stop_all()
        with app.app_context():
            db.engine.dispose()
