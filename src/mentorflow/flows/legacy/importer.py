"""Read a file of old sessions and write them into a flow; the ``legacy_import`` job."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mentorflow.flows import conversations
from mentorflow.flows.authoring import FlowError, compiled_flow, get_flow, get_version

# parse_line reads ids and JSON values exactly as the mapping does, so it shares its helpers.
from mentorflow.flows.legacy.mapping import (
    LegacyMap,
    LegacyMessage,
    MappedSession,
    RowSkipped,
    _finite_float,
    _json_type,
    _reject_constant,
    _row_id,
    _timestamp,
    map_row,
)
from mentorflow.flows.legacy.report import ImportReport
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession, StepEvent
from mentorflow.jobs.models import Job
from mentorflow.jobs.runner import JobError, JobKind
from mentorflow.platform.crypto import generate_secret, hash_secret
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.credentials import SESSION_TOKEN_PREFIX
from mentorflow.tenants.models import Org

LEGACY_IMPORT = "legacy_import"
BATCH_SIZE = 500

Progress = Callable[[int, int], None]

_SURROGATE = re.compile(r"[\ud800-\udfff]")


class LegacyImportError(Exception):
    """The import cannot start or go on; the message says why, for people."""


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
        self.flow_slug = flow.slug
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
        imported = self._imported_messages([session.id for session in existing.values()])
        #: The sessions written in this batch, with the messages each of them gets.
        talks: list[tuple[LearnerSession, MappedSession, list[LegacyMessage]]] = []
        for line, mapped in batch:
            session = existing.get(mapped.legacy_id)
            if session is None:
                self._count_written(line, mapped)
                self._count_messages(mapped.messages)
                self.report.created += 1
                if self.apply:
                    session = self._new_session(line, mapped)
                    db.session.add(session)
                    talks.append((session, mapped, mapped.messages))
                continue
            conflict = self._conflict(session, mapped, advanced)
            if conflict == "unchanged":
                self.report.unchanged += 1
            elif conflict:
                self.report.conflicts.add(line, mapped.legacy_id, conflict)
            else:
                self._count_written(line, mapped)
                # A re-import adds only the messages not imported before, after the others.
                known = imported.get(session.id, set())
                new = [m for m in mapped.messages if m.key not in known]
                self._count_messages(new)
                self.report.updated += 1
                if self.apply:
                    self._update_session(session, line, mapped)
                    talks.append((session, mapped, new))
        if not self.apply:
            db.session.rollback()
            return
        try:
            db.session.flush()
            for session, mapped, messages in talks:
                self._add_messages(session, mapped, messages)
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

    def _imported_messages(self, session_ids: list[str]) -> dict[str, set[tuple[str, int]]]:
        """Return the (source, index) of each message an earlier import added, by session."""
        found = conversations.message_metadata(session_ids)
        return {
            session_id: {
                (meta["source"], meta["legacy_index"])
                for meta in metadata
                if str(meta.get("source", "")).startswith("legacy-") and "legacy_index" in meta
            }
            for session_id, metadata in found.items()
        }

    def _count_messages(self, messages: list[LegacyMessage]) -> None:
        for message in messages:
            if message.source == "legacy-conversation":
                self.report.messages_imported += 1
            elif message.source == "legacy-video":
                self.report.videos_mapped += 1
            else:
                self.report.memories_imported += 1

    def _add_messages(
        self, session: LearnerSession, mapped: MappedSession, messages: list[LegacyMessage]
    ) -> None:
        items = [
            {
                "role": message.role,
                "content": message.content,
                "step_id": message.step_id,
                "metadata": {"source": message.source, "legacy_index": message.index},
                "created_at": message.created_at or mapped.updated_at,
            }
            for message in messages
        ]
        conversations.import_messages(
            self.org_id, self.org_slug, session, self.flow_slug, self.version_number, items
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
    org = db.session.get(Org, job.org_id)
    params = job.params
    try:
        report = import_legacy_sessions(
            org, params["flow"], Path(params["path"]), apply=params["apply"], progress=progress
        )
    except LegacyImportError as exc:
        raise JobError(str(exc)) from None
    return report.to_dict()


LEGACY_IMPORT_JOB = JobKind(LEGACY_IMPORT, run_import_job)
