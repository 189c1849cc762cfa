"""Walk a flow: check answers, choose the next step and measure progress (no Flask, no db)."""

from __future__ import annotations

import copy
import functools
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email

from mentorflow.flows.document import is_number, takes_answer, validate_document

CONTACT_NAME_MAX_LENGTH = 200
#: The step field for the legacy import's mapping: the org's own, never shown to learners.
PRIVATE_STEP_FIELD = "legacy_key"
PHONE_LENGTH = (7, 20)

_PHONE = re.compile(r"\+?[0-9][0-9 -]*[0-9]")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


class AnswerError(ValueError):
    """An answer that a step does not accept, with messages per field."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__(
            "; ".join(
                f"{name}: {message}" for name, messages in errors.items() for message in messages
            )
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


class _Invalid(ValueError):
    """A value rejected with one message; the caller knows which field it was."""


@dataclass(frozen=True)
class Progress:
    """How far a learner is along the path their answers lead to."""

    completed: int
    total: int
    percent: int


@dataclass(frozen=True)
class Position:
    """Where a learner stands in a flow, derived from their answers and current step."""

    completed_step_ids: list[str]
    completed_phases: list[str]
    current_phase: str | None
    progress: Progress


@dataclass(frozen=True)
class _Rule:
    goto: str
    key: str | None = None  # None: the rule has no 'when' and always applies
    operator: str = ""
    value: Any = None

    def matches(self, answers: Mapping[str, Any]) -> bool:
        if self.key is None:
            return True
        return _condition_holds(self.operator, self.value, answers.get(self.key))


class CompiledFlow:
    """A compiled, immutable flow version: the engine's view of one definition."""

    def __init__(self, definition: dict) -> None:
        self._definition = validate_document(definition)
        self._steps: dict[str, dict[str, Any]] = {}
        self._phase_by_step: dict[str, dict[str, Any]] = {}
        self._rules: dict[str, tuple[_Rule, ...]] = {}
        self._step_views: dict[str, dict[str, Any]] = {}
        for phase in self._definition["phases"]:
            for step in phase["steps"]:
                self._steps[step["id"]] = step
                self._phase_by_step[step["id"]] = phase
                self._rules[step["id"]] = tuple(
                    _compile_rule(rule) for rule in step.get("next", ())
                )
        self._step_ids = tuple(self._steps)
        self._order = {step_id: index for index, step_id in enumerate(self._step_ids)}
        self._phase_ids = tuple(phase["id"] for phase in self._definition["phases"])
        self._phase_order = {phase_id: index for index, phase_id in enumerate(self._phase_ids)}

    @property
    def definition(self) -> dict:
        """Return a copy of the normalized definition."""
        return copy.deepcopy(self._definition)

    @property
    def first_step_id(self) -> str:
        """Return the id of the step every session starts at."""
        return self._step_ids[0]

    @property
    def step_ids(self) -> tuple[str, ...]:
        """Return every step id in document order."""
        return self._step_ids

    @property
    def phase_ids(self) -> tuple[str, ...]:
        """Return every phase id in document order."""
        return self._phase_ids

    def has_step(self, step_id: str) -> bool:
        """Tell whether the flow has a step with this id."""
        return step_id in self._steps

    def step(self, step_id: str) -> dict[str, Any]:
        """Return a copy of the step's definition with its phase id and title."""
        phase = self._phase_by_step[step_id]
        return {
            **copy.deepcopy(self._steps[step_id]),
            "phase_id": phase["id"],
            "phase_title": phase["title"],
        }

    def step_view(self, step_id: str) -> dict[str, Any]:
        """Return the step as learners see it (its phase id and title, no ``legacy_key``),
        shared: never mutate it.

        Built once per step of this (immutable) flow, for the hot path that only reads it or
        turns it into JSON.
        """
        view = self._step_views.get(step_id)
        if view is None:
            view = self.step(step_id)
            view.pop(PRIVATE_STEP_FIELD, None)
            self._step_views[step_id] = view
        return view

    def phase_of(self, step_id: str) -> str:
        """Return the id of the phase the step belongs to."""
        return self._phase_by_step[step_id]["id"]

    def validate_answer(self, step_id: str, answer: Any) -> Any:
        """Return the normalized answer for the step, or raise AnswerError."""
        step = self._steps[step_id]
        if not takes_answer(step["type"]):
            if answer is not None:
                raise AnswerError({"answer": ["this step takes no answer"]})
            return None
        if answer is None:
            if step["required"]:
                raise AnswerError({"answer": ["is required"]})
            return None
        if step["type"] == "contact":
            return _contact_answer(step, answer)
        try:
            value = _ANSWER_CHECKS[step["type"]](step, answer)
        except _Invalid as exc:
            raise AnswerError({"answer": [str(exc)]}) from None
        if value is None and step["required"]:
            raise AnswerError({"answer": ["is required"]})
        return value

    def next_step_id(self, step_id: str, answers: Mapping[str, Any]) -> str | None:
        """Return the goto of the first matching rule, else the next step in order, else None."""
        for rule in self._rules[step_id]:
            if rule.matches(answers):
                return rule.goto
        index = self._order[step_id] + 1
        return self._step_ids[index] if index < len(self._step_ids) else None

    def position(self, answers: Mapping[str, Any], current_step_id: str | None) -> Position:
        """Return the completed steps and phases and the progress that the answers lead to."""
        stop = len(self._step_ids) if current_step_id is None else self._order[current_step_id]
        completed: list[str] = []
        step_id: str | None = self.first_step_id
        # Every jump goes forward, so a walk that passes the current step can never reach it.
        while step_id is not None and self._order[step_id] < stop:
            completed.append(step_id)
            step_id = self.next_step_id(step_id, answers)
        remaining = 0
        step_id = current_step_id
        while step_id is not None:
            remaining += 1
            step_id = self.next_step_id(step_id, answers)
        total = len(completed) + remaining
        percent = 100 if remaining == 0 else 100 * len(completed) // total
        visited = {self.phase_of(step_id) for step_id in completed}
        if current_step_id is None:
            current_phase = None
            before = self._phase_ids
        else:
            current_phase = self.phase_of(current_step_id)
            before = self._phase_ids[: self._phase_order[current_phase]]
        return Position(
            completed_step_ids=completed,
            completed_phases=[phase_id for phase_id in before if phase_id in visited],
            current_phase=current_phase,
            progress=Progress(completed=len(completed), total=total, percent=percent),
        )

    def steps_on_path(self, answers: Mapping[str, Any], current_step_id: str | None) -> list[str]:
        """Return the ids of the steps completed on the way to the current step."""
        return self.position(answers, current_step_id).completed_step_ids


def compile_flow(definition: dict) -> CompiledFlow:
    """Return the compiled flow of a definition, cached by its canonical JSON."""
    return _compile_canonical(json.dumps(definition, sort_keys=True, separators=(",", ":")))


@functools.lru_cache(maxsize=128)
def _compile_canonical(canonical: str) -> CompiledFlow:
    return CompiledFlow(json.loads(canonical))


def _compile_rule(rule: dict[str, Any]) -> _Rule:
    when = rule.get("when")
    if when is None:
        return _Rule(goto=rule["goto"])
    name, value = next((name, value) for name, value in when.items() if name != "key")
    if isinstance(value, list):
        value = tuple(value)
    return _Rule(key=when["key"], operator=name, value=value, goto=rule["goto"])


def _condition_holds(name: str, expected: Any, value: Any) -> bool:
    if name == "answered":
        return _is_answered(value) is expected
    # A missing answer matches no comparison, not even not_equals.
    if value is None:
        return False
    if name in _COMPARE:
        return is_number(value) and is_number(expected) and _COMPARE[name](value, expected)
    if name == "equals":
        return _includes(value, expected)
    if name == "not_equals":
        return not _includes(value, expected)
    if name == "in":
        return any(_includes(value, item) for item in expected)
    return False


def _is_answered(value: Any) -> bool:
    return not (value is None or (isinstance(value, str | list) and len(value) == 0))


def _includes(value: Any, expected: Any) -> bool:
    # A multi_choice answer is a list: it "equals" a value when it includes it.
    if isinstance(value, list):
        return any(_same(item, expected) for item in value)
    return _same(value, expected)


def _same(left: Any, right: Any) -> bool:
    # True == 1 in Python; a boolean answer must never match a number.
    return isinstance(left, bool) == isinstance(right, bool) and left == right


def _show_number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _option_values(step: dict[str, Any]) -> list[str]:
    return [option["value"] for option in step["options"]]


def _single_choice_answer(step: dict[str, Any], answer: Any) -> str:
    values = _option_values(step)
    if not isinstance(answer, str) or answer not in values:
        raise _Invalid("must be one of: " + ", ".join(values))
    return answer


def _multi_choice_answer(step: dict[str, Any], answer: Any) -> list[str]:
    values = _option_values(step)
    if not isinstance(answer, list):
        raise _Invalid("must be a list of options from: " + ", ".join(values))
    if not all(isinstance(item, str) and item in values for item in answer):
        raise _Invalid("must only contain options from: " + ", ".join(values))
    chosen = set(answer)
    if len(chosen) != len(answer):
        raise _Invalid("must not list the same option twice")
    low, high = step["min_selected"], step["max_selected"]
    if low == high and len(chosen) != low:
        raise _Invalid(f"choose exactly {_options(low)}")
    if len(chosen) < low:
        raise _Invalid(f"choose at least {_options(low)}")
    if len(chosen) > high:
        raise _Invalid(f"choose at most {_options(high)}")
    # Stored in the order the options are listed, so equal choices compare equal.
    return [value for value in values if value in chosen]


def _options(count: int) -> str:
    return f"{count} option" if count == 1 else f"{count} options"


def _text_answer(step: dict[str, Any], answer: Any) -> str | None:
    value = _text(answer, step["max_length"])
    return value or None


def _text(answer: Any, max_length: int) -> str:
    if not isinstance(answer, str):
        raise _Invalid("must be text")
    value = answer.strip()
    # PostgreSQL cannot store NUL in JSON, and no person types one.
    if "\x00" in value:
        raise _Invalid("must not contain NUL characters")
    if len(value) > max_length:
        raise _Invalid(f"must be at most {max_length} characters")
    return value


def _number_answer(step: dict[str, Any], answer: Any) -> int | float:
    if not is_number(answer):
        raise _Invalid("must be a number")
    low, high = step.get("min"), step.get("max")
    if low is not None and answer < low:
        raise _Invalid(f"must be at least {_show_number(low)}")
    if high is not None and answer > high:
        raise _Invalid(f"must be at most {_show_number(high)}")
    return answer


def _scale_answer(step: dict[str, Any], answer: Any) -> int:
    low, high = step["min"], step["max"]
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise _Invalid(f"must be a whole number from {low} to {high}")
    if not low <= answer <= high:
        raise _Invalid(f"must be between {low} and {high}")
    return answer


def _boolean_answer(step: dict[str, Any], answer: Any) -> bool:
    if not isinstance(answer, bool):
        raise _Invalid("must be true or false")
    return answer


def _email_answer(step: dict[str, Any], answer: Any) -> str:
    return _email(answer)


def _email(answer: Any) -> str:
    if not isinstance(answer, str) or not answer.strip():
        raise _Invalid("must be an email address")
    try:
        return validate_email(answer.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        raise _Invalid("must be a valid email address") from None


def _phone_answer(step: dict[str, Any], answer: Any) -> str:
    return _phone(answer)


def _phone(answer: Any) -> str:
    value = answer.strip() if isinstance(answer, str) else None
    low, high = PHONE_LENGTH
    if value is None or not low <= len(value) <= high or not _PHONE.fullmatch(value):
        raise _Invalid(
            f"must be a phone number of {low} to {high} characters: digits, spaces, dashes "
            "and an optional leading +"
        )
    return value


def _name(answer: Any) -> str:
    value = _text(answer, CONTACT_NAME_MAX_LENGTH)
    if not value:
        raise _Invalid("is required")
    return value


_CONTACT_CHECKS: dict[str, Callable[[Any], str]] = {
    "name": _name,
    "email": _email,
    "phone": _phone,
}


def _contact_answer(step: dict[str, Any], answer: Any) -> dict[str, str]:
    fields = step["fields"]
    if not isinstance(answer, dict):
        raise AnswerError({"answer": ["must be an object with " + ", ".join(fields)]})
    errors: dict[str, list[str]] = {}
    value: dict[str, str] = {}
    for name in fields:
        if answer.get(name) is None:
            errors[f"answer.{name}"] = ["is required"]
            continue
        try:
            value[name] = _CONTACT_CHECKS[name](answer[name])
        except _Invalid as exc:
            errors[f"answer.{name}"] = [str(exc)]
    for name in answer:
        if name not in fields:
            errors[f"answer.{name}"] = ["is not a field of this step"]
    if errors:
        raise AnswerError(errors)
    return value


_ANSWER_CHECKS: dict[str, Callable[[dict[str, Any], Any], Any]] = {
    "single_choice": _single_choice_answer,
    "multi_choice": _multi_choice_answer,
    "text": _text_answer,
    "long_text": _text_answer,
    "number": _number_answer,
    "scale": _scale_answer,
    "boolean": _boolean_answer,
    "email": _email_answer,
    "phone": _phone_answer,
}
