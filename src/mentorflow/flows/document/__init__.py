"""Parse, validate and dump flow documents: the YAML or JSON that staff author."""

from mentorflow.flows.document.checks import MISSING
from mentorflow.flows.document.dump import checksum, dump_document
from mentorflow.flows.document.errors import DocumentError, FieldError
from mentorflow.flows.document.parse import MAX_DOCUMENT_CHARS, load_document, parse_document
from mentorflow.flows.document.steps import (
    ANSWER_TYPES,
    CHOICE_TYPES,
    COMPARISON_OPERATORS,
    CONTACT_FIELDS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SCALE,
    NO_ANSWER_TYPES,
    OPERATORS,
    STEP_TYPES,
    is_number,
    takes_answer,
)
from mentorflow.flows.document.validate import validate_document

__all__ = [
    "ANSWER_TYPES",
    "CHOICE_TYPES",
    "COMPARISON_OPERATORS",
    "CONTACT_FIELDS",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_SCALE",
    "MAX_DOCUMENT_CHARS",
    "MISSING",
    "NO_ANSWER_TYPES",
    "OPERATORS",
    "STEP_TYPES",
    "DocumentError",
    "FieldError",
    "checksum",
    "dump_document",
    "is_number",
    "load_document",
    "parse_document",
    "takes_answer",
    "validate_document",
]
