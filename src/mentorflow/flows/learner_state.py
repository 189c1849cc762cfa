"""A learner's own state document: what an app keeps about a user between flows. They flush.

One JSON object per learner (at most ``MAX_STATE_BYTES`` as compact JSON), versioned: a learner
never written has ``{}`` at version 0. A write names the version it read (If-Match); the
learner's row is locked while the version is compared and the new state written, so of any
writers that read the same version exactly one wins and the others get the newer state back.
A write that changes nothing makes no new version. Every new version is a row of
``learner_state_changes`` (the console's history), a ``learner.state_changed`` outbox event
and a push to the learner's streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from mentorflow.flows.learners import enter_learner
from mentorflow.flows.models import Learner
from mentorflow.platform.db import JSONType, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import EventType, emit_event
from mentorflow.platform.push import Change, announce_after_commit

#: The largest state, as compact JSON (UTF-8 bytes).
MAX_STATE_BYTES = 64 * 1024
#: The push key of a learner's state (push changes are keyed by a session id otherwise).
STATE_KEY_PREFIX = "learner:"


class LearnerState(db.Model):
    """A learner's current state document and its version."""

    __tablename__ = "learner_states"

    learner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LearnerStateChange(db.Model):
    """One version of a learner's state: how it was written, by whom, and what it became."""

    __tablename__ = "learner_state_changes"
    __table_args__ = (sa.UniqueConstraint("learner_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    learner_id: Mapped[int] = mapped_column(sa.ForeignKey("learners.id", ondelete="CASCADE"))
    version: Mapped[int]
    #: put or patch
    kind: Mapped[str] = mapped_column(sa.String(10))
    #: The merge patch of a PATCH; for a PUT, the keys it set and removed.
    change: Mapped[Any] = mapped_column(JSONType)
    state: Mapped[dict[str, Any]]
    by: Mapped[str] = mapped_column(sa.String(320))
    at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class StateVersion:
    """A learner's state as the API shows it."""

    state: dict[str, Any]
    version: int

    def body(self) -> dict[str, Any]:
        return {"state": self.state, "version": self.version}


class VersionMismatch(Exception):
    """If-Match named another version; carries the current one."""

    def __init__(self, current: StateVersion) -> None:
        super().__init__(f"The state is at version {current.version}; If-Match did not match.")
        self.current = current


class StateTooLarge(ValueError):
    """The state would be larger than ``MAX_STATE_BYTES``."""


class StateNotAnObject(ValueError):
    """The state (or the result of a patch) is not a JSON object."""


def state_size(state: Any) -> int:
    """Return the size of ``state`` as compact JSON, in UTF-8 bytes."""
    return len(json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode())


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON Merge Patch (RFC 7396) to ``target``; return the result (new objects)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def read_state(org_id: int, learner_id: int | None) -> StateVersion:
    """Return a learner's state; ``{}`` at version 0 when never written (or not a learner yet)."""
    if learner_id is None:
        return StateVersion({}, 0)
    row = db.session.execute(
        sa.select(LearnerState.state, LearnerState.version).where(
            LearnerState.learner_id == learner_id, LearnerState.org_id == org_id
        )
    ).first()
    return StateVersion({}, 0) if row is None else StateVersion(dict(row.state), row.version)


def write_state(
    org_id: int,
    external_user_id: str,
    *,
    if_match: int | None,
    state: dict[str, Any] | None = None,
    patch: dict[str, Any] | None = None,
    by: str,
) -> tuple[StateVersion, bool]:
    """Replace (``state``) or merge-patch (``patch``) the learner's state if it is at version
    ``if_match`` (None: any); return the state and whether it changed.

    Raises VersionMismatch, StateNotAnObject or StateTooLarge. The learner is created if new.
    """
    learner = enter_learner(org_id, external_user_id)  # locked until the transaction ends
    row = db.session.scalars(
        sa.select(LearnerState)
        .where(LearnerState.learner_id == learner.id)
        .execution_options(populate_existing=True)
    ).first()
    current = StateVersion(dict(row.state), row.version) if row else StateVersion({}, 0)
    if if_match is not None and if_match != current.version:
        raise VersionMismatch(current)
    if patch is not None:
        new_state = merge_patch(current.state, patch)
        kind, change = "patch", patch
    else:
        new_state = state if state is not None else {}
        kind, change = "put", _put_summary(current.state, new_state)
    if not isinstance(new_state, dict):
        raise StateNotAnObject("the state must be a JSON object")
    if state_size(new_state) > MAX_STATE_BYTES:
        raise StateTooLarge(f"the state must be at most {MAX_STATE_BYTES} bytes as JSON")
    if new_state == current.state and row is not None:
        return current, False
    now = utcnow()
    version = current.version + 1
    if row is None:
        row = LearnerState(learner_id=learner.id, org_id=org_id)
        db.session.add(row)
    row.state, row.version, row.updated_at = new_state, version, now
    db.session.add(
        LearnerStateChange(
            org_id=org_id,
            learner_id=learner.id,
            version=version,
            kind=kind,
            change=change,
            state=new_state,
            by=by[:320],
            at=now,
        )
    )
    db.session.flush()
    emit_event(
        org_id,
        EventType.LEARNER_STATE_CHANGED,
        {
            "external_user_id": external_user_id,
            "distinct_id": external_user_id,
            "occurred_at": now.isoformat(),
            "version": version,
            "kind": kind,
            "changed_keys": sorted(_changed_keys(current.state, new_state)),
            "state": new_state,
        },
    )
    announce_state(org_id, learner.id, version)
    return StateVersion(new_state, version), True


def announce_state(org_id: int, learner_id: int, version: int) -> None:
    """Push the learner's new state version to their streams once the transaction commits."""
    announce_after_commit(
        Change(org_id, 0, f"{STATE_KEY_PREFIX}{learner_id}", version, learner_id=learner_id)
    )


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def _put_summary(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "set": sorted(name for name in after if before.get(name) != after[name]),
        "removed": sorted(name for name in before if name not in after),
    }


def state_history(learner: Learner, limit: int = 50) -> list[LearnerStateChange]:
    """Return the learner's latest state versions, newest first."""
    return list(
        db.session.scalars(
            sa.select(LearnerStateChange)
            .where(
                LearnerStateChange.org_id == learner.org_id,
                LearnerStateChange.learner_id == learner.id,
            )
            .order_by(LearnerStateChange.version.desc())
            .limit(limit)
        )
    )


def read_state_versions(learner_ids: set[int]) -> list[tuple[int, int, int]]:
    """Return (org id, learner id, version) of the learners' states (the push poll)."""
    if not learner_ids:
        return []
    rows = db.session.execute(
        sa.select(LearnerState.org_id, LearnerState.learner_id, LearnerState.version).where(
            LearnerState.learner_id.in_(sorted(learner_ids))
        )
    ).all()
    return [(row.org_id, row.learner_id, row.version) for row in rows]
