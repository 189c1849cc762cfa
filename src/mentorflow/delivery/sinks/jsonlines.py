"""The stand-in for a sink without credentials: a file of the requests it would have made."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from mentorflow.delivery.sinks.base import DeliveryFailed, OutboundEvent, RequestFor, outcome_of


class JsonLinesSink:
    """Stands in for a sink without credentials: appends what it would send to a file."""

    def __init__(self, name: str, path: Path, request_for: RequestFor) -> None:
        self.name = name
        self.path = path
        self._request_for = request_for

    def deliver(self, event: OutboundEvent) -> None:
        """Append the request ``event`` would make as one JSON line; skip events that make none."""
        request = self._request_for(event)
        if request is None:
            return
        line = {
            "sink": self.name,
            "dry_run": True,
            "event_id": str(event.id),
            "type": event.type,
            "org": event.org,
            "request": request,
        }
        data = (json.dumps(line, default=_json_default, ensure_ascii=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One O_APPEND write per line, so lines from concurrent worker processes don't interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # Shared with other writers; an erasure rewriting the file holds it alone.
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.write(fd, data)
        finally:
            os.close(fd)

    def batch_key(self, event: OutboundEvent) -> str:
        """Lines are appended one by one; any events can go together."""
        return ""

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """Append one line per event."""
        return [outcome_of(self.deliver, event) for event in events]

    def close(self) -> None:
        """Release the sink; it holds nothing between deliveries."""


def forget_lines(path: Path, needles: list[bytes]) -> int:
    """Remove the lines of ``path`` that contain any of ``needles`` (an erasure); return how
    many. The file is rewritten in place under an exclusive lock, so no append is lost."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as handle:
            lines = handle.readlines()
        kept = [line for line in lines if not any(needle in line for needle in needles)]
        if len(kept) != len(lines):
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            data = memoryview(b"".join(kept))
            while data:
                data = data[os.write(fd, data) :]
        return len(lines) - len(kept)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
