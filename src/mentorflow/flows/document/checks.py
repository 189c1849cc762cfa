"""Check single values of a flow document, recording a FieldError at each bad path."""

from __future__ import annotations

import datetime
import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mentorflow.flows.document.errors import FieldError
from mentorflow.flows.document.steps import is_number, takes_answer

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class _Missing:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _looks_unquoted(value: Any) -> bool:
    # YAML turns unquoted yes/no, numbers and dates into non-strings.
    return isinstance(value, bool | int | float | datetime.date)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


@dataclass(eq=False)
class _Step:
    index: int
    path: str
    out: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    type: str | None = None
    key: str | None = None
    required: bool = False
    options: tuple[str, ...] | None = None
    raw_next: Any = None
    rules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def answerable(self) -> bool:
        # type is None when it is missing or unknown, an error reported where it was read.
        return self.type is not None and takes_answer(self.type)


class _Checker:
    """The validator's state and checks of single values; rules.py and validate.py extend it."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.steps: list[_Step] = []
        self.phase_paths: dict[str, str] = {}
        self.step_paths: dict[str, str] = {}
        self.step_index: dict[str, int] = {}
        self.key_owners: dict[str, str] = {}
        self.legacy_owners: dict[str, str] = {}
        self.cycle_errors = 0

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def take(self, mapping: dict, path: str, name: str, *, required: bool = True) -> Any:
        value = mapping.get(name)
        if value is None:
            if required:
                self.error(_join(path, name), "is required")
            return MISSING
        return value

    def string(self, value: Any, path: str, *, allow_empty: bool = False) -> Any:
        if not isinstance(value, str):
            hint = " (put it in quotes)" if _looks_unquoted(value) else ""
            self.error(path, f"must be a string{hint}")
            return MISSING
        if not allow_empty and not value.strip():
            self.error(path, "must not be empty")
            return MISSING
        if "\x00" in value:
            self.error(path, "must not contain NUL characters")
            return MISSING
        return value

    def identifier(self, value: Any, path: str) -> Any:
        value = self.string(value, path)
        if value is not MISSING and not _IDENTIFIER.fullmatch(value):
            self.error(
                path,
                "must start with a letter or digit and use only letters, digits, '-', '_' "
                "and '.' (at most 100 characters)",
            )
            return MISSING
        return value

    def boolean(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            self.error(path, "must be true or false")
            return MISSING
        return value

    def integer(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, "must be a whole number")
            return MISSING
        return value

    def number(self, value: Any, path: str) -> Any:
        if not is_number(value):
            self.error(path, "must be a number")
            return MISSING
        return value

    def non_empty_list(self, value: Any, path: str, what: str) -> bool:
        if not isinstance(value, list):
            self.error(path, f"must be a list of {what}")
            return False
        if not value:
            self.error(path, f"must list at least one of {what}")
            return False
        return True

    def unknown_fields(self, mapping: dict, path: str, allowed: tuple[str, ...]) -> None:
        for name in mapping:
            if name not in allowed:
                self.error(_join(path, str(name)), _unknown_field(name, allowed))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _unknown_field(name: Any, allowed: tuple[str, ...]) -> str:
    message = f"unknown field '{_show(name)}'"
    close = difflib.get_close_matches(str(name), allowed, n=1)
    if close:
        message += f" (did you mean '{close[0]}'?)"
    return message
