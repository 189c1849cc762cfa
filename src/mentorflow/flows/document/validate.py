"""Validate a parsed flow document into a definition with its defaults filled in."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from mentorflow.flows.document.checks import MISSING, _join, _show, _Step, _unknown_field
from mentorflow.flows.document.errors import DocumentError, FieldError
from mentorflow.flows.document.rules import _RuleChecker
from mentorflow.flows.document.steps import (
    _ALL_STEP_FIELDS,
    _COMMON_STEP_FIELDS,
    _OPTION_FIELDS,
    _PHASE_FIELDS,
    _ROOT_FIELDS,
    _STEP_FIELD_ORDER,
    _TYPE_FIELDS,
    CONTACT_FIELDS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SCALE,
    STEP_TYPES,
    _ordered,
)

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")
_LEGACY_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_STEP_PATH = re.compile(r"phases\[(\d+)\](?:\.steps\[(\d+)\])?")


def validate_document(doc: Any) -> dict:
    """Return the normalized definition with defaults filled in, or raise DocumentError."""
    validator = _Validator()
    definition = validator.document(doc)
    if validator.errors:
        raise DocumentError(_in_document_order(validator.errors))
    return definition


class _Validator(_RuleChecker):
    """Walk a document top-down, normalizing each field and filling in defaults."""

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

        key = self.take(raw, path, "key", required=step.answerable)
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

        prompt = self.take(raw, path, "prompt", required=step.answerable)
        if prompt is not MISSING and self.string(prompt, f"{path}.prompt") is not MISSING:
            out["prompt"] = prompt
        body = self.take(raw, path, "body", required=False)
        if body is not MISSING and self.string(body, f"{path}.body") is not MISSING:
            out["body"] = body

        required = self.take(raw, path, "required", required=False)
        if required is not MISSING:
            required = self.boolean(required, f"{path}.required")
        if step.answerable:
            out["required"] = step.required = True if required is MISSING else required
        elif step.type is not None:  # a known type that takes no answer
            if required is True:
                message = f"a '{step.type}' step takes no answer, so it cannot be required"
                self.error(f"{path}.required", message)
            out["required"] = step.required = False
        elif required is not MISSING:
            out["required"] = step.required = required

        # The player offers a conversation box under a step that sets chat: true.
        chat = self.take(raw, path, "chat", required=False)
        if chat is not MISSING and self.boolean(chat, f"{path}.chat") is not MISSING:
            out["chat"] = chat

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
        for name in ("min_label", "max_label"):
            label = self.take(raw, path, name, required=False)
            if label is not MISSING and self.string(label, f"{path}.{name}") is not MISSING:
                step.out[name] = label

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


def _in_document_order(errors: list[FieldError]) -> list[FieldError]:
    def position(error: FieldError) -> tuple[int, int]:
        match = _STEP_PATH.match(error.path)
        if match is None:
            return (-1, -1)
        return (int(match.group(1)), int(match.group(2) or -1))

    return sorted(errors, key=position)
