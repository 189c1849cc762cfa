"""Import learner sessions from the old client-synced app; see docs/legacy-import.md."""

from mentorflow.flows.legacy.importer import (
    LEGACY_IMPORT,
    ImportReport,
    LegacyImportError,
    LegacyMap,
    RowSkipped,
    import_legacy_sessions,
    import_target,
    kebab_case,
    map_answers,
    map_position,
    map_row,
    parse_line,
    run_import_job,
)

__all__ = [
    "LEGACY_IMPORT",
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
