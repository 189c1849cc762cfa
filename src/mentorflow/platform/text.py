"""Storable text: strings that every column, file and sink can hold (no NUL, valid Unicode)."""

from __future__ import annotations

from typing import Any

NUL_MESSAGE = "Must not contain the NUL character (U+0000)."
SURROGATE_MESSAGE = "Must be valid Unicode text: an unpaired surrogate (U+D800 to U+DFFF) was sent."


def text_problem(value: str) -> str | None:
    """Return why ``value`` can't be stored, or None when it can."""
    # PostgreSQL's text and jsonb refuse NUL; UTF-8 (every column, file and sink) has no
    # encoding for a lone surrogate, which JSON's "\ud800" escape can still carry in.
    if "\x00" in value:
        return NUL_MESSAGE
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def unstorable_strings(value: Any, path: str = "") -> dict[str, list[str]]:
    """Return ``{field path: [message]}`` for every unstorable string (keys too) in ``value``."""
    found: dict[str, list[str]] = {}
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            found[path or "body"] = [problem]
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            problem = text_problem(key) if isinstance(key, str) else None
            if problem:
                found[(f"{path}.<key>" if path else "<key>")] = [f"A field name: {problem}"]
                continue
            found.update(unstorable_strings(item, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(unstorable_strings(item, f"{path}[{index}]"))
    return found
