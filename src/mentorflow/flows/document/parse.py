"""Read flow documents from YAML or JSON text, giving each error its source line."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import yaml

from mentorflow.flows.document.errors import DocumentError, FieldError
from mentorflow.flows.document.validate import validate_document
from mentorflow.platform import jsonio

MAX_DOCUMENT_CHARS = 1_000_000

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that rejects aliases, duplicate keys and deep nesting."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # An alias can expand into an enormous structure ("billion laughs"); flows never need one.
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in flow documents", event.start_mark
            )
        # Composing recurses once per level: bound it well before the interpreter's limit.
        if self._depth >= jsonio.MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"lists and mappings nest more than {jsonio.MAX_DEPTH} levels",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # PyYAML keeps the last of two equal keys; a duplicated field is almost always a mistake.
        seen: dict[Any, int] = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first_line = seen.get(key)
                except TypeError:
                    continue
                if first_line is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"field '{key}' appears twice in the same mapping "
                        f"(first on line {first_line})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> Any:
        # int() refuses (ValueError, no line) past the interpreter's digit limit; say it here.
        if len(node.value.replace("_", "").lstrip("+-")) > jsonio.MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"a number has more than {jsonio.MAX_INT_DIGITS} digits",
                node.start_mark,
            )
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


class _DuplicateJsonKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateJsonKey(key)
        result[key] = value
    return result


def _decode(text: str | bytes) -> str:
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = bytes(text)[: exc.start].count(b"\n") + 1
            raise DocumentError([FieldError("", "the document is not UTF-8 text", line)]) from None
    if not isinstance(text, str):
        raise TypeError(f"a flow document is text or bytes, not {type(text).__name__}")
    return text.removeprefix("\ufeff")


def _yaml_error(exc: yaml.YAMLError) -> FieldError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}"
    if context:
        message += f" ({context})"
    if mark is None:
        return FieldError("", message)
    return FieldError("", f"{message} at column {mark.column + 1}", mark.line + 1)


def parse_document(text: str | bytes) -> dict:
    """Parse YAML or JSON text into a mapping; raise DocumentError with a line on bad syntax."""
    text = _decode(text)
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentError(
            [FieldError("", f"the document is longer than {MAX_DOCUMENT_CHARS} characters")]
        )
    json_error: FieldError | None = None
    # JSON is YAML, but PyYAML rejects tab-indented JSON and its messages confuse JSON authors.
    if text.lstrip().startswith(("{", "[")):
        try:
            return _mapping_root(jsonio.loads(text, object_pairs_hook=_json_object))
        except _DuplicateJsonKey as exc:
            message = f"field '{exc.args[0]}' appears twice in the same object"
            raise DocumentError([FieldError("", message)]) from None
        except json.JSONDecodeError as exc:
            json_error = FieldError(
                "", f"invalid JSON: {exc.msg} at column {exc.colno}", exc.lineno
            )
        except jsonio.JSONLimitError as exc:
            raise DocumentError([FieldError("", f"invalid JSON: {exc}")]) from None
    try:
        document = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise DocumentError([json_error or _yaml_error(exc)]) from None
    except ValueError as exc:
        # A scalar YAML resolves to a type it cannot build: a date such as 2024-13-45, an
        # integer past the interpreter's digit limit.
        raise DocumentError([json_error or FieldError("", f"invalid YAML: {exc}")]) from None
    return _mapping_root(document)


def _mapping_root(document: Any) -> dict:
    if document is None:
        raise DocumentError([FieldError("", "the document is empty")])
    if not isinstance(document, dict):
        message = "the document must be a mapping with slug, title and phases"
        raise DocumentError([FieldError("", message, 1)])
    return document


def load_document(text: str | bytes) -> dict:
    """Parse and validate a flow document; errors carry source lines where they can be found."""
    document = parse_document(text)
    try:
        return validate_document(document)
    except DocumentError as exc:
        raise DocumentError(_with_lines(_decode(text), exc.errors)) from None


def _with_lines(text: str, errors: list[FieldError]) -> list[FieldError]:
    root = _compose(text)
    if root is None:
        return errors
    return [
        error if error.line is not None else replace(error, line=_line_of(root, error.path))
        for error in errors
    ]


def _compose(text: str) -> yaml.Node | None:
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _line_of(node: yaml.Node, path: str) -> int:
    """Return the line of the deepest node of the path that exists in the source."""
    line = node.start_mark.line + 1
    for name, index in _PATH_TOKEN.findall(path):
        if name and isinstance(node, yaml.MappingNode):
            found = next(
                (
                    value
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.value == name
                ),
                None,
            )
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            found = node.value[int(index)]
        else:
            found = None
        if found is None:
            break
        node = found
        line = node.start_mark.line + 1
    return line
