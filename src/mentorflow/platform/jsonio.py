"""JSON encoding through orjson: API responses and the database's JSON columns.

A step commit encodes its state (sent and stored), the answers and the event payload;
orjson does that several times faster than the standard library. The JSON is the same as
before: responses keep Flask's sorted keys and its rendering of dates and dataclasses (passed
through to Flask's ``default``), non-string keys become strings. What orjson refuses
(integers beyond 64 bits) falls back to the standard library, so no value that encoded before
fails now. Decoding stays with the standard library: orjson reads integers beyond 64 bits as
floats, which would change a stored answer.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_DB_OPTIONS = orjson.OPT_NON_STR_KEYS
_RESPONSE_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def dumps(value: Any) -> str:
    """Encode a JSON column's value (SQLAlchemy's ``json_serializer``)."""
    try:
        return orjson.dumps(value, option=_DB_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, encoding compact responses with orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # indent and friends (pretty responses in debug): the standard library
            return super().dumps(obj, **kwargs)
        try:
            return orjson.dumps(obj, default=self.default, option=_RESPONSE_OPTIONS).decode()
        except orjson.JSONEncodeError:
            return super().dumps(obj)
