"""Hypothesis strategies: valid flow documents, and valid and invalid answers for their steps."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from mentorflow.flows.document import ANSWER_TYPES, CONTACT_FIELDS, STEP_TYPES

# Rules compare text answers against these words, so that they sometimes match.
WORDS = ("yes", "no", "maybe")
EMAIL_DOMAINS = ("example.com", "mail.example.org")

_printable = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
labels = st.text(_printable, min_size=1, max_size=12).filter(str.strip)
email_addresses = st.builds(
    "{}@{}".format,
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10),
    st.sampled_from(EMAIL_DOMAINS),
)
phone_numbers = st.one_of(
    st.just("+1 555-123-4567"),
    st.from_regex(r"\+?[0-9][0-9 -]{5,16}[0-9]", fullmatch=True),
)
# Built once: strategies made inside a composite are validated again on every draw.
_step_types = st.sampled_from(STEP_TYPES)
_required = st.sampled_from([None, True, False])
_bodies = st.text(_printable, min_size=1, max_size=40).filter(str.strip)
_descriptions = st.text(_printable, max_size=30)
_contact_fields = st.lists(st.sampled_from(CONTACT_FIELDS), min_size=1, unique=True)
_small_numbers = st.one_of(
    st.integers(-100, 100), st.floats(-100, 100, allow_nan=False, allow_infinity=False)
)
_operand_numbers = st.one_of(
    st.integers(-10, 10), st.floats(-10, 10, allow_nan=False, allow_infinity=False)
)


@st.composite
def flow_documents(draw: st.DrawFn, max_phases: int = 4, max_steps: int = 4) -> dict:
    """Draw a flow document that validate_document accepts, with forward rules on earlier keys."""
    shape = [draw(st.integers(1, max_steps)) for _ in range(draw(st.integers(1, max_phases)))]
    steps: list[dict[str, Any]] = []
    for p, size in enumerate(shape, start=1):
        for s in range(1, size + 1):
            steps.append(draw(_steps(f"phase-{p}-step-{s}", f"key-{len(steps)}")))
    for index, step in enumerate(steps[:-1]):
        sources = [i for i in range(index + 1) if steps[i]["type"] in ANSWER_TYPES]
        rules = []
        used_keys: set[str] = set()
        for _ in range(draw(st.integers(0, 3)) if sources else 0):
            source = draw(st.sampled_from(sources))
            key = steps[source]["key"]
            # One rule per key and no covering set on the step's own key: the rules then never
            # cover every answer, so each step still falls through and all steps stay reachable.
            if key in used_keys:
                continue
            when = draw(_conditions(steps[source], own=source == index))
            if when is None:
                continue
            used_keys.add(key)
            goto = steps[draw(st.integers(index + 1, len(steps) - 1))]["id"]
            rules.append({"when": when, "goto": goto})
        if rules:
            step["next"] = rules
    phases = []
    offset = 0
    for p, size in enumerate(shape, start=1):
        phases.append(
            {"id": f"phase-{p}", "title": draw(labels), "steps": steps[offset : offset + size]}
        )
        offset += size
    document: dict[str, Any] = {"slug": "generated", "title": draw(labels), "phases": phases}
    if draw(st.booleans()):
        document["description"] = draw(_descriptions)
    return document


@st.composite
def _steps(draw: st.DrawFn, step_id: str, key: str) -> dict[str, Any]:
    step_type = draw(_step_types)
    step: dict[str, Any] = {"id": step_id, "type": step_type}
    if step_type not in ANSWER_TYPES:
        if draw(st.booleans()):
            step["prompt"] = draw(labels)
        if step_type == "video":
            step["video_url"] = "https://example.com/videos/intro.mp4"
        if draw(st.booleans()):
            step["body"] = draw(_bodies)
        return step
    step["key"] = key
    step["prompt"] = draw(labels)
    required = draw(_required)
    if required is not None:
        step["required"] = required
    if step_type in ("single_choice", "multi_choice"):
        count = draw(st.integers(1, 4))
        step["options"] = [{"value": f"opt-{i}", "label": draw(labels)} for i in range(count)]
    if step_type == "multi_choice":
        high = draw(st.one_of(st.none(), st.integers(1, count)))
        low = draw(st.one_of(st.none(), st.integers(0, high if high is not None else count)))
        if high is not None:
            step["max_selected"] = high
        if low is not None:
            step["min_selected"] = low
    elif step_type in ("text", "long_text") and draw(st.booleans()):
        step["max_length"] = draw(st.integers(1, 30))
    elif step_type == "number":
        bounds = sorted([draw(_small_numbers), draw(_small_numbers)])
        if draw(st.booleans()):
            step["min"] = bounds[0]
        if draw(st.booleans()):
            step["max"] = bounds[1]
    elif step_type == "scale" and draw(st.booleans()):
        low = draw(st.integers(-5, 5))
        step["min"], step["max"] = low, draw(st.integers(low + 1, low + 10))
    elif step_type == "contact":
        step["fields"] = draw(_contact_fields)
    return step


@st.composite
def _conditions(draw: st.DrawFn, source: dict[str, Any], *, own: bool) -> dict[str, Any] | None:
    step_type = source["type"]
    key = source["key"]
    if step_type == "contact":
        return None if own else {"key": key, "answered": draw(st.booleans())}
    if step_type in ("single_choice", "multi_choice"):
        values = [option["value"] for option in source["options"]]
        pool: list[Any] = values
    elif step_type == "boolean":
        pool = [True, False]
    elif step_type in ("number", "scale"):
        pool = [draw(st.integers(-10, 10)) for _ in range(3)]
    elif step_type == "email":
        pool = [f"a@{domain}" for domain in EMAIL_DOMAINS]
    elif step_type == "phone":
        pool = ["+1 555-123-4567"]
    else:
        pool = list(WORDS)
    operators = ["equals", "not_equals", "in"]
    if step_type in ("number", "scale"):
        operators += ["gt", "gte", "lt", "lte"]
    if not own:
        operators.append("answered")
    # On a required single choice or boolean, matching every value of its own key always jumps.
    finite = step_type in ("single_choice", "boolean")
    if own and finite and len(pool) < 2:
        operators.remove("equals")
        operators.remove("in")
    operator = draw(st.sampled_from(operators))
    if operator == "answered":
        value: Any = draw(st.booleans())
    elif operator in ("gt", "gte", "lt", "lte"):
        value = draw(_operand_numbers)
    elif operator == "in":
        most = len(pool) - 1 if own and finite else len(pool)
        value = draw(
            st.lists(st.sampled_from(pool), min_size=1, max_size=max(most, 1), unique=True)
        )
    else:
        value = draw(st.sampled_from(pool))
    return {"key": key, operator: value}


def valid_answers(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Return answers that a normalized step accepts."""
    step_type = step["type"]
    if step_type not in ANSWER_TYPES:
        return st.none()
    answers = _VALID[step_type](step)
    return st.one_of(st.none(), answers) if not step["required"] else answers


def _valid_multi_choice(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    values = [option["value"] for option in step["options"]]
    return st.lists(
        st.sampled_from(values),
        min_size=step["min_selected"],
        max_size=step["max_selected"],
        unique=True,
    )


def _valid_text(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    limit = step["max_length"]
    core = st.one_of(
        st.sampled_from([word for word in WORDS if len(word) <= limit] or ["y"]),
        st.text(_printable, min_size=1, max_size=limit).filter(str.strip),
    )
    padding = st.sampled_from(["", " ", "\n", "\t "])
    return st.builds(lambda before, text, after: before + text + after, padding, core, padding)


def _valid_number(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    low, high = step.get("min"), step.get("max")
    floats = st.floats(low, high, allow_nan=False, allow_infinity=False)
    first = math.ceil(low) if low is not None else None
    last = math.floor(high) if high is not None else None
    if first is not None and last is not None and first > last:
        return floats
    return st.one_of(st.integers(first, last), floats)


def _valid_contact(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    parts = {
        "name": st.text(_printable, min_size=1, max_size=20).filter(str.strip),
        "email": email_addresses,
        "phone": phone_numbers,
    }
    return st.fixed_dictionaries({name: parts[name] for name in step["fields"]})


_VALID = {
    "single_choice": lambda step: st.sampled_from([o["value"] for o in step["options"]]),
    "multi_choice": _valid_multi_choice,
    "text": _valid_text,
    "long_text": _valid_text,
    "number": _valid_number,
    "scale": lambda step: st.integers(step["min"], step["max"]),
    "boolean": lambda step: st.booleans(),
    "email": lambda step: email_addresses,
    "phone": lambda step: phone_numbers,
    "contact": _valid_contact,
}


def invalid_answers(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Return answers that a normalized step rejects."""
    step_type = step["type"]
    if step_type not in ANSWER_TYPES:
        return st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.just([]))
    wrong = _INVALID[step_type](step)
    return st.one_of(st.none(), wrong) if step["required"] else wrong


def _invalid_single_choice(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    values = {option["value"] for option in step["options"]}
    return st.one_of(
        st.text(max_size=8).filter(lambda text: text not in values),
        st.integers(),
        st.just([step["options"][0]["value"]]),
    )


def _invalid_multi_choice(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    values = [option["value"] for option in step["options"]]
    low, high = step["min_selected"], step["max_selected"]
    choices = [
        st.just(values[0]),
        st.just(["not-an-option"]),
        st.just([values[0], values[0]]),
        st.just({"value": values[0]}),
    ]
    if low > 0:
        choices.append(st.lists(st.sampled_from(values), max_size=low - 1, unique=True))
    if high < len(values):
        choices.append(st.lists(st.sampled_from(values), min_size=high + 1, unique=True))
    return st.one_of(choices)


def _invalid_text(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    choices = [
        st.integers(),
        st.just(["yes"]),
        st.just("x" * (step["max_length"] + 1)),
        st.just("a\x00b"),
    ]
    if step["required"]:
        choices.append(st.sampled_from(["", "   ", "\n\t"]))
    return st.one_of(choices)


def _invalid_number(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    choices = [st.booleans(), st.just("5"), st.sampled_from([math.nan, math.inf, -math.inf])]
    if step.get("min") is not None:
        choices.append(st.just(step["min"] - 1))
    if step.get("max") is not None:
        choices.append(st.just(step["max"] + 1))
    return st.one_of(choices)


def _invalid_scale(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([True, "5", step["min"] + 0.5, float(step["min"])]),
        st.integers(max_value=step["min"] - 1),
        st.integers(min_value=step["max"] + 1),
    )


def _invalid_contact(step: dict[str, Any]) -> st.SearchStrategy[Any]:
    fields = step["fields"]
    good = {"name": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0958"}
    valid = {name: good[name] for name in fields}
    bad = {"name": "   ", "email": "not-an-email", "phone": "call me"}
    choices = [
        st.just("Ada"),
        st.just({}),
        st.just({**valid, "nickname": "A"}),
        st.sampled_from([{**valid, name: bad[name]} for name in fields]),
        st.sampled_from([{k: v for k, v in valid.items() if k != name} for name in fields]),
    ]
    return st.one_of(choices)


_INVALID = {
    "single_choice": _invalid_single_choice,
    "multi_choice": _invalid_multi_choice,
    "text": _invalid_text,
    "long_text": _invalid_text,
    "number": _invalid_number,
    "scale": _invalid_scale,
    "boolean": lambda step: st.sampled_from([0, 1, "true", "no", [True]]),
    "email": lambda step: st.sampled_from(["not-an-email", "a@b", "@example.com", 5, ""]),
    "phone": lambda step: st.sampled_from(["call me", "12345", "1" * 21, 5551234, "++1 555 1234"]),
    "contact": _invalid_contact,
}
