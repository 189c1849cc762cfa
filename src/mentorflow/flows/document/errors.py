"""The errors of a flow document, each problem located by its field path or line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One problem in a flow document, located by the path of the offending field."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.message}"
        if self.line is not None:
            return f"line {self.line}: {self.message}"
        return self.message


class DocumentError(ValueError):
    """A flow document that cannot be used, with every problem found in it."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))
