"""Import learner sessions from the old client-synced app; see docs/legacy-import.md."""

from mentorflow.flows.legacy.importer import (
    LEGACY_IMPORT,
    LEGACY_IMPORT_JOB,
    LegacyImportError,
    import_legacy_sessions,
    import_target,
    parse_line,
    run_import_job,
)
from mentorflow.flows.legacy.mapping import (
    LegacyMap,
    RowSkipped,
    kebab_case,
    map_answers,
    map_position,
    map_row,
)
from mentorflow.flows.legacy.report import ImportReport

__all__ = [
    "LEGACY_IMPORT",
    "LEGACY_IMPORT_JOB",
    "ImportReport",
    "LegacyImportError",
    "LegacyMap",
    "RowSkipped",
    "import_legacy_sessions",
    "import_target",
    "kebab_case",
    "map_answers",
    "map_position",
    "map_row",
    "parse_line",
    "run_import_job",
]
