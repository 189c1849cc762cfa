"""The report of an import or a dry run: counts, examples, and how they print."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mentorflow.flows.legacy.mapping import RowSkipped

#: How many lines a report lists per finding; the counts are always complete.
EXAMPLES_KEPT = 20


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
    #: Messages added to sessions: the old ``conversation`` entries, a note per video step of
    #: ``progress.videosWatched``, each ``memory`` entry (written to the memory container).
    messages_imported: int = 0
    videos_mapped: int = 0
    memories_imported: int = 0

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
        for name in ("messages_imported", "videos_mapped", "memories_imported"):
            values.setdefault(name, 0)  # a report of an import before conversations
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
            _figure("conversation messages", self.messages_imported),
            _figure("videos watched (notes)", self.videos_mapped),
            _figure("memories", self.memories_imported),
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
