"""Validate a parsed flow document into a definition with its defaults filled in."""

from __future__ import annotations

import datetime
import difflib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mentorflow.flows.document.errors import DocumentError, FieldError
from mentorflow.flows.document.steps import (
    _ALL_STEP_FIELDS,
    _COMMON_STEP_FIELDS,
    _OPTION_FIELDS,
    _PHASE_FIELDS,
    _ROOT_FIELDS,
    _RULE_FIELDS,
    _STEP_FIELD_ORDER,
    _TYPE_FIELDS,
    ANSWER_TYPES,
    CHOICE_TYPES,
    COMPARISON_OPERATORS,
    CONTACT_FIELDS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SCALE,
    NO_ANSWER_TYPES,
    OPERATORS,
    STEP_TYPES,
    _ordered,
)

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_LEGACY_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_STEP_PATH = re.compile(r"phases\[(\d+)\](?:\.steps\[(\d+)\])?")


class _Missing:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def validate_document(doc: Any) -> dict:
    """Return the normalized definition with defaults filled in, or raise DocumentError."""
    validator = _Validator()
    definition = validator.document(doc)
    if validator.errors:
        raise DocumentError(_in_document_order(validator.errors))
    return definition


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _is_scalar_value(value: Any) -> bool:
    return (
        (isinstance(value, str) and "\x00" not in value)
        or isinstance(value, bool)
        or (_is_number(value))
    )


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


class _Validator:
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
        if not _is_number(value):
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

    def document(self, doc: Any) -> dict:
        if not isinstance(doc, dict):
            self.error("", "the document must be a mapping with slug, title and phases")
            return {}
        self.unknown_fields(doc, "", _ROOT_FIELDS)
        out: dict[str, Any] = {}
        slug = self.take(doc, "", "slug")
        if slug is not MISSING and self.string(slug, "slug") is not MISSING:
            if _SLUG.fullmatch(slug):
                out["slug"] = slug
            else:
                self.error(
                    "slug",
                    "must be 1 to 80 lowercase letters, digits and dashes, "
                    "starting with a letter or digit",
                )
        title = self.take(doc, "", "title")
        if title is not MISSING and self.string(title, "title") is not MISSING:
            out["title"] = title
        description = self.take(doc, "", "description", required=False)
        if description is not MISSING and (
            self.string(description, "description", allow_empty=True) is not MISSING
        ):
            out["description"] = description
        phases = self.take(doc, "", "phases")
        if phases is not MISSING and self.non_empty_list(phases, "phases", "phases"):
            out["phases"] = [self.phase(phase, f"phases[{i}]") for i, phase in enumerate(phases)]
        self.rules()
        self.graph()
        for step in self.steps:
            ordered = _ordered(step.out, _STEP_FIELD_ORDER)
            step.out.clear()
            step.out.update(ordered)
        return out

    def phase(self, phase: Any, path: str) -> dict:
        if not isinstance(phase, dict):
            self.error(path, "must be a mapping with id, title and steps")
            return {}
        self.unknown_fields(phase, path, _PHASE_FIELDS)
        out: dict[str, Any] = {}
        phase_id = self.take(phase, path, "id")
        if phase_id is not MISSING and (phase_id := self.identifier(phase_id, f"{path}.id")):
            if phase_id in self.phase_paths:
                where = self.phase_paths[phase_id]
                self.error(f"{path}.id", f"phase id '{phase_id}' is already used at {where}")
            else:
                self.phase_paths[phase_id] = path
            out["id"] = phase_id
        title = self.take(phase, path, "title")
        if title is not MISSING and self.string(title, f"{path}.title") is not MISSING:
            out["title"] = title
        steps = self.take(phase, path, "steps")
        if steps is not MISSING and self.non_empty_list(steps, f"{path}.steps", "steps"):
            out["steps"] = [self.step(step, f"{path}.steps[{j}]") for j, step in enumerate(steps)]
        return out

    def step(self, raw: Any, path: str) -> dict:
        step = _Step(index=len(self.steps), path=path)
        self.steps.append(step)
        if not isinstance(raw, dict):
            self.error(path, "must be a mapping with id, type, key and prompt")
            return step.out
        out = step.out
        step_id = self.take(raw, path, "id")
        if step_id is not MISSING and (step_id := self.identifier(step_id, f"{path}.id")):
            if step_id in self.step_paths:
                where = self.step_paths[step_id]
                self.error(f"{path}.id", f"step id '{step_id}' is already used at {where}")
            else:
                self.step_paths[step_id] = path
                self.step_index[step_id] = step.index
                step.id = step_id
            out["id"] = step_id

        step_type = self.take(raw, path, "type")
        if step_type is not MISSING:
            if isinstance(step_type, str) and step_type in STEP_TYPES:
                out["type"] = step.type = step_type
            else:
                self.error(
                    f"{path}.type",
                    f"unknown step type '{_show(step_type)}'; expected one of: "
                    + ", ".join(STEP_TYPES),
                )
        self.step_fields(raw, path, step.type)
        takes_answer = step.type in ANSWER_TYPES

        key = self.take(raw, path, "key", required=takes_answer)
        if key is not MISSING and (key := self.identifier(key, f"{path}.key")):
            owner = self.key_owners.get(key)
            if owner is not None:
                self.error(f"{path}.key", f"key '{key}' is already used by step '{owner}'")
            else:
                self.key_owners[key] = step.id or path
                step.key = key
            out["key"] = key

        legacy_key = self.take(raw, path, "legacy_key", required=False)
        if legacy_key is not MISSING and self.string(legacy_key, f"{path}.legacy_key"):
            owner = self.legacy_owners.get(legacy_key)
            if not _LEGACY_KEY.fullmatch(legacy_key):
                self.error(
                    f"{path}.legacy_key", "must be a dotted path like 'situation.bookingStatus'"
                )
            elif owner is not None:
                message = f"legacy_key '{legacy_key}' is already used by step '{owner}'"
                self.error(f"{path}.legacy_key", message)
            else:
                self.legacy_owners[legacy_key] = step.id or path
                out["legacy_key"] = legacy_key

        prompt = self.take(raw, path, "prompt", required=takes_answer)
        if prompt is not MISSING and self.string(prompt, f"{path}.prompt") is not MISSING:
            out["prompt"] = prompt
        body = self.take(raw, path, "body", required=False)
        if body is not MISSING and self.string(body, f"{path}.body") is not MISSING:
            out["body"] = body

        required = self.take(raw, path, "required", required=False)
        if required is not MISSING:
            required = self.boolean(required, f"{path}.required")
        if step.type in NO_ANSWER_TYPES:
            if required is True:
                message = f"a '{step.type}' step takes no answer, so it cannot be required"
                self.error(f"{path}.required", message)
            out["required"] = step.required = False
        elif takes_answer:
            out["required"] = step.required = True if required is MISSING else required
        elif required is not MISSING:
            out["required"] = step.required = required

        if step.type is not None:
            getattr(self, f"extras_{step.type}")(raw, path, step)
        step.raw_next = raw.get("next")
        return out

    def step_fields(self, raw: dict, path: str, step_type: str | None) -> None:
        allowed = (
            _ALL_STEP_FIELDS
            if step_type is None
            else frozenset(_COMMON_STEP_FIELDS + _TYPE_FIELDS[step_type])
        )
        for name in raw:
            if name in allowed:
                continue
            if name in _ALL_STEP_FIELDS:
                message = f"field '{name}' is not allowed on a '{step_type}' step"
            else:
                message = _unknown_field(name, _STEP_FIELD_ORDER)
            self.error(_join(path, str(name)), message)

    def extras_info(self, raw: dict, path: str, step: _Step) -> None:
        pass

    def extras_video(self, raw: dict, path: str, step: _Step) -> None:
        url = self.take(raw, path, "video_url")
        if url is not MISSING and self.string(url, f"{path}.video_url") is not MISSING:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.netloc and url == url.strip():
                step.out["video_url"] = url
            else:
                self.error(f"{path}.video_url", "must be an http:// or https:// URL")

    def extras_single_choice(self, raw: dict, path: str, step: _Step) -> None:
        options = self.take(raw, path, "options")
        if options is MISSING or not self.non_empty_list(options, f"{path}.options", "options"):
            return
        out_options = []
        first_use: dict[str, str] = {}
        for i, option in enumerate(options):
            option_path = f"{path}.options[{i}]"
            if not isinstance(option, dict):
                self.error(option_path, "must be a mapping with value and label")
                continue
            self.unknown_fields(option, option_path, _OPTION_FIELDS)
            value = self.take(option, option_path, "value")
            if value is not MISSING:
                value = self.string(value, f"{option_path}.value")
            label = self.take(option, option_path, "label")
            if label is not MISSING:
                label = self.string(label, f"{option_path}.label")
            if value is not MISSING and value in first_use:
                where = first_use[value]
                message = f"option value '{value}' is already used at {where}"
                self.error(f"{option_path}.value", message)
            elif value is not MISSING:
                first_use[value] = f"options[{i}]"
            out_options.append({"value": value, "label": label})
        step.options = tuple(first_use)
        step.out["options"] = out_options

    def extras_multi_choice(self, raw: dict, path: str, step: _Step) -> None:
        self.extras_single_choice(raw, path, step)
        count = len(step.options) if step.options else None
        low = self.take(raw, path, "min_selected", required=False)
        if low is MISSING:
            low = 1 if step.required else 0
        elif (low := self.integer(low, f"{path}.min_selected")) is not MISSING and low < 0:
            self.error(f"{path}.min_selected", "must be at least 0")
            low = MISSING
        high = self.take(raw, path, "max_selected", required=False)
        if high is MISSING:
            high = count if count is not None else MISSING
        elif (high := self.integer(high, f"{path}.max_selected")) is not MISSING:
            if high < 1:
                self.error(f"{path}.max_selected", "must be at least 1")
                high = MISSING
            elif count is not None and high > count:
                message = f"must be at most {count}, the number of options"
                self.error(f"{path}.max_selected", message)
                high = MISSING
        if low is not MISSING and high is not MISSING and low > high:
            message = f"must not be more than max_selected ({high})"
            self.error(f"{path}.min_selected", message)
        if low is not MISSING and high is not MISSING:
            step.out["min_selected"] = low
            step.out["max_selected"] = high

    def extras_text(self, raw: dict, path: str, step: _Step) -> None:
        length = self.take(raw, path, "max_length", required=False)
        if length is MISSING:
            step.out["max_length"] = DEFAULT_MAX_LENGTH[step.type or "text"]
        elif (length := self.integer(length, f"{path}.max_length")) is not MISSING:
            if length < 1:
                self.error(f"{path}.max_length", "must be at least 1")
            else:
                step.out["max_length"] = length

    extras_long_text = extras_text

    def extras_number(self, raw: dict, path: str, step: _Step) -> None:
        low = self.take(raw, path, "min", required=False)
        if low is not MISSING and (low := self.number(low, f"{path}.min")) is not MISSING:
            step.out["min"] = low
        high = self.take(raw, path, "max", required=False)
        if high is not MISSING and (high := self.number(high, f"{path}.max")) is not MISSING:
            step.out["max"] = high
        if low is not MISSING and high is not MISSING and low > high:
            self.error(f"{path}.min", f"must not be more than max ({high})")

    def extras_scale(self, raw: dict, path: str, step: _Step) -> None:
        low = self.take(raw, path, "min", required=False)
        low = DEFAULT_SCALE[0] if low is MISSING else self.integer(low, f"{path}.min")
        high = self.take(raw, path, "max", required=False)
        high = DEFAULT_SCALE[1] if high is MISSING else self.integer(high, f"{path}.max")
        if low is not MISSING and high is not MISSING:
            if low < high:
                step.out["min"], step.out["max"] = low, high
            else:
                self.error(f"{path}.min", f"must be less than max ({high})")

    def extras_boolean(self, raw: dict, path: str, step: _Step) -> None:
        pass

    extras_email = extras_phone = extras_boolean

    def extras_contact(self, raw: dict, path: str, step: _Step) -> None:
        fields = self.take(raw, path, "fields")
        what = "contact fields (name, email, phone)"
        if fields is MISSING or not self.non_empty_list(fields, f"{path}.fields", what):
            return
        seen: list[str] = []
        for i, name in enumerate(fields):
            if not isinstance(name, str) or name not in CONTACT_FIELDS:
                message = f"unknown contact field '{_show(name)}'; expected name, email or phone"
                self.error(f"{path}.fields[{i}]", message)
            elif name in seen:
                self.error(f"{path}.fields[{i}]", f"'{name}' is listed twice")
            else:
                seen.append(name)
        step.out["fields"] = seen

    def rules(self) -> None:
        answered_keys = {
            step.key: step for step in self.steps if step.key and step.type in ANSWER_TYPES
        }
        for step in self.steps:
            raw = step.raw_next
            if raw is None:
                continue
            path = f"{step.path}.next"
            if not isinstance(raw, list):
                self.error(path, "must be a list of rules, each with when and goto")
                continue
            always_at: int | None = None
            for r, raw_rule in enumerate(raw):
                rule_path = f"{path}[{r}]"
                if always_at is not None:
                    self.error(
                        rule_path,
                        f"this rule is never used: next[{always_at}] has no 'when', "
                        "so it always applies",
                    )
                    continue
                rule = self.rule(raw_rule, rule_path, step, answered_keys)
                if rule is not None:
                    step.rules.append(rule)
                    if "when" not in rule:
                        always_at = r
            if step.rules:
                step.out["next"] = step.rules

    def rule(
        self, raw: Any, path: str, step: _Step, answered_keys: dict[str, _Step]
    ) -> dict | None:
        if not isinstance(raw, dict):
            self.error(path, "must be a mapping with when and goto")
            return None
        errors_before = len(self.errors)
        self.unknown_fields(raw, path, _RULE_FIELDS)
        out: dict[str, Any] = {}
        if "when" in raw:
            when = self.condition(raw["when"], f"{path}.when", step, answered_keys)
            if when is not MISSING:
                out["when"] = when
        goto = self.take(raw, path, "goto")
        if goto is not MISSING and self.string(goto, f"{path}.goto") is not MISSING:
            target = self.step_index.get(goto)
            if target is None:
                self.error(f"{path}.goto", f"unknown step '{goto}'")
            elif target <= step.index:
                # Every step falls through to the next one, so any backward jump loops.
                if target == step.index:
                    message = f"goto '{goto}' jumps back to this same step, which makes a cycle"
                else:
                    message = (
                        f"goto '{goto}' jumps back from step '{step.id}' to an earlier step, "
                        "which makes a cycle"
                    )
                self.error(f"{path}.goto", message)
                self.cycle_errors += 1
            out["goto"] = goto
        if len(self.errors) > errors_before:
            return None
        return out

    def condition(self, when: Any, path: str, step: _Step, answered_keys: dict[str, _Step]) -> Any:
        if not isinstance(when, dict):
            self.error(
                path,
                "must be a mapping with key and one operator "
                "(leave 'when' out for a rule that always applies)",
            )
            return MISSING
        errors_before = len(self.errors)
        operators = [name for name in when if name in OPERATORS]
        unknown = [name for name in when if name != "key" and name not in OPERATORS]
        for name in unknown:
            self.error(
                _join(path, str(name)),
                f"unknown operator '{name}'; expected one of: " + ", ".join(OPERATORS),
            )
        source: _Step | None = None
        key = self.take(when, path, "key")
        if key is not MISSING and self.string(key, f"{path}.key") is not MISSING:
            source = answered_keys.get(key)
            if source is None or source.index > step.index:
                self.error(f"{path}.key", f"key '{key}' is not answered before this step")
                source = None
        if not operators and not unknown:
            self.error(path, "needs one operator: " + ", ".join(OPERATORS))
        elif len(operators) > 1:
            self.error(
                path, f"has {len(operators)} operators ({', '.join(operators)}); use exactly one"
            )
        elif len(operators) == 1:
            operator = operators[0]
            self.operand(operator, when[operator], f"{path}.{operator}", source)
        if len(self.errors) > errors_before:
            return MISSING
        operator = operators[0]
        value = when[operator]
        return {"key": key, operator: list(value) if isinstance(value, list) else value}

    def operand(self, operator: str, value: Any, path: str, source: _Step | None) -> None:
        if operator == "answered":
            self.boolean(value, path)
            return
        if source is not None and source.type == "contact":
            message = f"only 'answered' applies to a contact step ('{source.id}')"
            self.error(path, message)
            return
        if operator in COMPARISON_OPERATORS:
            number = self.number(value, path)
            if number is not MISSING and source and source.type not in ("number", "scale"):
                self.error(
                    path,
                    f"'{operator}' only applies to number and scale steps; "
                    f"step '{source.id}' is a {source.type} step",
                )
            return
        if operator == "in":
            if not isinstance(value, list) or not value:
                self.error(path, "must be a non-empty list of values")
                return
            for i, item in enumerate(value):
                self.operand_value(item, f"{path}[{i}]", source)
            return
        self.operand_value(value, path, source)

    def operand_value(self, value: Any, path: str, source: _Step | None) -> None:
        if not _is_scalar_value(value):
            self.error(path, "must be a string, a number or true/false")
            return
        if source is None:
            return
        if source.type in CHOICE_TYPES:
            if source.options and (not isinstance(value, str) or value not in source.options):
                self.error(
                    path,
                    f"'{_show(value)}' is not an option of step '{source.id}'; expected one of: "
                    + ", ".join(source.options),
                )
        elif source.type == "boolean":
            if not isinstance(value, bool):
                self.error(path, f"must be true or false, because step '{source.id}' is boolean")
        elif source.type in ("number", "scale"):
            if not _is_number(value):
                message = f"must be a number, because step '{source.id}' is a {source.type} step"
                self.error(path, message)
        elif not isinstance(value, str):
            message = f"must be a string, because step '{source.id}' is a {source.type} step"
            self.error(path, message)

    def graph(self) -> None:
        # Reachability is only meaningful once ids, rules and types are all sound.
        if len(self.errors) != self.cycle_errors or not self.steps:
            return
        count = len(self.steps)
        edges: list[set[int]] = []
        for step in self.steps:
            targets = {self.step_index[rule["goto"]] for rule in step.rules}
            targets = {target for target in targets if target > step.index}
            if step.index + 1 < count and not _always_jumps(step):
                targets.add(step.index + 1)
            edges.append(targets)
        reached = {0}
        pending = [0]
        while pending:
            for target in edges[pending.pop()]:
                if target not in reached:
                    reached.add(target)
                    pending.append(target)
        for step in self.steps:
            if step.index not in reached:
                self.error(step.path, f"step '{step.id}' is unreachable")


def _always_jumps(step: _Step) -> bool:
    """Tell whether some rule of the step always matches, so it never falls through."""
    domain: set[Any] | None = None
    if step.required and step.key:
        # A required answer is always present when the step is left, drawn from a known set.
        if step.type == "single_choice" and step.options:
            domain = set(step.options)
        elif step.type == "boolean":
            domain = {True, False}
    answered: dict[str, set[bool]] = defaultdict(set)
    covered: set[Any] = set()
    for rule in step.rules:
        when = rule.get("when")
        if when is None:
            return True
        key = when["key"]
        operator, value = next((name, v) for name, v in when.items() if name != "key")
        if operator == "answered":
            answered[key].add(value)
            if len(answered[key]) == 2:
                return True
        if domain is not None and key == step.key:
            covered |= _matching(operator, value, domain)
            if covered >= domain:
                return True
    return False


def _matching(operator: str, value: Any, domain: set[Any]) -> set[Any]:
    if operator == "equals":
        return {item for item in domain if _same(item, value)}
    if operator == "not_equals":
        return {item for item in domain if not _same(item, value)}
    if operator == "in":
        return {item for item in domain if any(_same(item, v) for v in value)}
    if operator == "answered":
        return set(domain) if value else set()
    return set()


def _same(left: Any, right: Any) -> bool:
    return isinstance(left, bool) == isinstance(right, bool) and left == right


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _unknown_field(name: Any, allowed: tuple[str, ...]) -> str:
    message = f"unknown field '{_show(name)}'"
    close = difflib.get_close_matches(str(name), allowed, n=1)
    if close:
        message += f" (did you mean '{close[0]}'?)"
    return message


def _in_document_order(errors: list[FieldError]) -> list[FieldError]:
    def position(error: FieldError) -> tuple[int, int]:
        match = _STEP_PATH.match(error.path)
        if match is None:
            return (-1, -1)
        return (int(match.group(1)), int(match.group(2) or -1))

    return sorted(errors, key=position)
