"""The step types a flow document knows and the fields each of its parts takes, in order."""

from __future__ import annotations

import math
from typing import Any

STEP_TYPES: tuple[str, ...] = (
    "info",
    "video",
    "single_choice",
    "multi_choice",
    "text",
    "long_text",
    "number",
    "scale",
    "boolean",
    "email",
    "phone",
    "contact",
)
NO_ANSWER_TYPES: frozenset[str] = frozenset({"info", "video"})
ANSWER_TYPES: frozenset[str] = frozenset(STEP_TYPES) - NO_ANSWER_TYPES
CHOICE_TYPES: frozenset[str] = frozenset({"single_choice", "multi_choice"})
CONTACT_FIELDS: tuple[str, ...] = ("name", "email", "phone")
OPERATORS: tuple[str, ...] = ("equals", "not_equals", "in", "gt", "gte", "lt", "lte", "answered")
COMPARISON_OPERATORS: frozenset[str] = frozenset({"gt", "gte", "lt", "lte"})
DEFAULT_MAX_LENGTH: dict[str, int] = {"text": 2000, "long_text": 20000}
DEFAULT_SCALE: tuple[int, int] = (1, 10)

_ROOT_FIELDS = ("slug", "title", "description", "phases")
_PHASE_FIELDS = ("id", "title", "steps")
_COMMON_STEP_FIELDS = (
    "id",
    "type",
    "key",
    "legacy_key",
    "prompt",
    "body",
    "required",
    "chat",
    "next",
)
_TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "info": (),
    "video": ("video_url",),
    "single_choice": ("options",),
    "multi_choice": ("options", "min_selected", "max_selected"),
    "text": ("max_length",),
    "long_text": ("max_length",),
    "number": ("min", "max"),
    "scale": ("min", "max", "min_label", "max_label"),
    "boolean": (),
    "email": (),
    "phone": (),
    "contact": ("fields",),
}
_STEP_FIELD_ORDER = (
    "id",
    "type",
    "key",
    "legacy_key",
    "prompt",
    "body",
    "video_url",
    "required",
    "options",
    "min_selected",
    "max_selected",
    "max_length",
    "min",
    "max",
    "min_label",
    "max_label",
    "fields",
    "chat",
    "next",
)
_ALL_STEP_FIELDS = frozenset(_STEP_FIELD_ORDER)
_OPTION_FIELDS = ("value", "label")
_RULE_FIELDS = ("when", "goto")


def is_number(value: Any) -> bool:
    """Return whether ``value`` is a finite JSON number (booleans are not numbers here)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def takes_answer(step_type: str) -> bool:
    """Tell whether a step of this type collects an answer ("info" and "video" do not)."""
    return step_type not in NO_ANSWER_TYPES


def _ordered(mapping: dict, order: tuple[str, ...]) -> dict:
    first = {name: mapping[name] for name in order if name in mapping}
    return first | {name: value for name, value in mapping.items() if name not in first}
