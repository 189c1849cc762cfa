"""JSON encoding through orjson: API responses and the database's JSON columns.

A step commit encodes its state (sent and stored), the answers and the event payload;
orjson does that several times faster than the standard library. The JSON is the same as
before: responses keep Flask's sorted keys and its rendering of dates and dataclasses (passed
through to Flask's ``default``), non-string keys become strings. What orjson refuses
(integers beyond 64 bits) falls back to the standard library, so no value that encoded before
fails now. Decoding stays with the standard library: orjson reads integers beyond 64 bits as
floats, which would change a stored answer.

Decoding is bounded: JSON nested deeper than ``MAX_DEPTH`` or holding an integer of more than
``MAX_INT_DIGITS`` digits is a ``JSONLimitError`` (a ``ValueError``, which Flask answers with a
400), never a ``RecursionError`` or the interpreter's digit-limit error deep in a view.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

#: The deepest nesting of arrays and objects a decoded document may have.
MAX_DEPTH = 64
#: The most digits an integer may have (no answer, id or count needs more).
MAX_INT_DIGITS = 100

_DB_OPTIONS = orjson.OPT_NON_STR_KEYS
_RESPONSE_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


class JSONLimitError(ValueError):
    """The JSON text is well formed but nested too deeply or holds too long a number."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONLimitError(f"a number has more than {MAX_INT_DIGITS} digits")
    return int(text)


def depth_of(value: Any) -> int:
    """Return how deeply arrays and objects nest in ``value`` (0 for a scalar), iteratively."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """Decode JSON text with the standard library, within ``MAX_DEPTH`` and ``MAX_INT_DIGITS``."""
    try:
        value = json.loads(text, parse_int=_parse_int, **kwargs)
    except RecursionError:
        raise JSONLimitError(f"arrays and objects nest more than {MAX_DEPTH} levels") from None
    if depth_of(value) > MAX_DEPTH:
        raise JSONLimitError(f"arrays and objects nest more than {MAX_DEPTH} levels")
    return value


def dumps(value: Any) -> str:
    """Encode a JSON column's value (SQLAlchemy's ``json_serializer``)."""
    try:
        return orjson.dumps(value, option=_DB_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, encoding compact responses with orjson; decoding is bounded."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s, **kwargs)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # indent and friends (pretty responses in debug): the standard library
            return super().dumps(obj, **kwargs)
        try:
            return orjson.dumps(obj, default=self.default, option=_RESPONSE_OPTIONS).decode()
        except orjson.JSONEncodeError:
            return super().dumps(obj)
