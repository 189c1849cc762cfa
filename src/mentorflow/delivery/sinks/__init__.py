"""Delivery sinks: where outbox events go after their transaction commits.

Each sink sends one event through an official client and either returns (delivered) or raises
:class:`DeliveryFailed`, saying whether trying again can help. Every call is idempotent per
event: PostHog dedupes on the event ``uuid``; Supermemory upserts the document ``id``.

:func:`build_sink` picks the credentials (an org's own, else the platform's). Without any, the
sink writes the request it would have sent to ``<instance>/outbox-<sink>.jsonl`` instead.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import posthog
import requests
import supermemory
from posthog.request import APIError as PostHogAPIError
from posthog.request import batch_post as posthog_batch_post

from mentorflow.platform.crypto import decrypt_secret

DEFAULT_POSTHOG_HOST = "https://us.i.posthog.com"
DEFAULT_SUPERMEMORY_BASE_URL = "https://api.supermemory.ai"
DEFAULT_TIMEOUT = 10.0

#: PostHog properties copied from the event payload when present. Answers are not among them:
#: they go to PostHog only for orgs that opt in with ``send_answers``.
_POSTHOG_PROPERTIES = (
    "session_id",
    "flow",
    "flow_version",
    "status",
    "step_id",
    "phase",
    "step_type",
    "seq",
)
_MEMORY_METADATA = ("org", "session_id", "flow", "flow_version", "step_id", "phase", "seq")
#: Documents per ``documents.batch_add`` call (the API takes up to 600).
MEMORY_BATCH_LIMIT = 600
#: Bounds ``deliveries.last_error``; a response body can be a whole HTML error page.
_MAX_ERROR_DETAIL = 300


@dataclass(frozen=True)
class OutboundEvent:
    """One outbox event, as the worker hands it to a sink."""

    id: uuid.UUID
    org: str
    type: str
    payload: dict[str, Any]
    created_at: datetime


class DeliveryFailed(Exception):
    """A delivery did not happen; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Sink(Protocol):
    """Delivers outbox events to one destination."""

    name: str

    def deliver(self, event: OutboundEvent) -> None:
        """Send ``event``; raise DeliveryFailed if it was not accepted."""
        ...

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """Send ``events`` in as few calls as the service allows; one outcome per event, in order
        (None: delivered)."""
        ...

    def batch_key(self, event: OutboundEvent) -> str:
        """Events with the same key can share one call of :meth:`deliver_batch`."""
        ...

    def close(self) -> None:
        """Release what this sink holds."""
        ...


def posthog_capture(event: OutboundEvent, *, send_answers: bool = False) -> dict[str, Any]:
    """Return the keyword arguments of the ``posthog.Client.capture`` call for ``event``."""
    payload = event.payload
    properties = {name: payload[name] for name in _POSTHOG_PROPERTIES if name in payload}
    if send_answers and "answer" in payload:
        properties["key"] = payload.get("key")
        properties["answer"] = payload["answer"]
    return {
        "distinct_id": payload["distinct_id"],
        "event": event.type,
        "properties": properties,
        "uuid": str(event.id),
        "timestamp": _as_utc(event.created_at),
        "groups": {"organization": event.org},
    }


def memory_document(event: OutboundEvent) -> dict[str, Any] | None:
    """Return the keyword arguments of the ``Supermemory.add`` call for ``event``, if any.

    Every completed step is remembered, one document per step: what the learner answered,
    that they skipped an optional question, or that they went through an info or video step.
    Other events make no document.
    """
    payload = event.payload
    if event.type != "step.completed":
        return None
    question = payload.get("prompt") or payload.get("key") or payload["step_id"]
    if payload.get("step_type") in ("info", "video"):
        content = f"Went through: {question}"
    elif payload.get("answer") is None:
        content = f"Question: {question}\nAnswer: (skipped)"
    else:
        content = f"Question: {question}\nAnswer: {render_answer(payload['answer'])}"
    metadata = {name: payload[name] for name in _MEMORY_METADATA if payload.get(name) is not None}
    return {
        "namespace": payload["memory_container"],
        # Derived from (session, seq), so a redelivery upserts the same document.
        "id": f"{payload['session_id']}-{payload['seq']}",
        "content": content,
        "metadata": metadata,
        "date": payload.get("occurred_at") or _as_utc(event.created_at).isoformat(),
    }


def render_answer(answer: Any) -> str:
    """Render an answer for people: lists joined, a contact as ``name, email, phone``."""
    if isinstance(answer, bool):
        return "Yes" if answer else "No"
    if isinstance(answer, list | tuple):
        return ", ".join(render_answer(item) for item in answer)
    if isinstance(answer, dict):
        known = [answer[field] for field in ("name", "email", "phone") if answer.get(field)]
        others = [
            value
            for field, value in answer.items()
            if field not in ("name", "email", "phone") and value
        ]
        return ", ".join(render_answer(value) for value in known + others)
    return str(answer)


class PostHogSink:
    """Captures events in PostHog: the official client builds each event, one batch call sends
    them all (``posthog.request.batch_post``, what the client itself sends with)."""

    name = "posthog"

    def __init__(
        self,
        api_key: str,
        host: str = DEFAULT_POSTHOG_HOST,
        *,
        send_answers: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.timeout = timeout
        self.send_answers = send_answers
        self._builder = _shared_client(
            ("posthog", api_key, host),
            lambda: _PostHogMessages(api_key, host),
            close=lambda builder: builder.client.shutdown(),
        )

    def deliver(self, event: OutboundEvent) -> None:
        """Capture ``event``; raise DeliveryFailed unless PostHog answered 200."""
        _raise_first(self.deliver_batch([event]))

    def batch_key(self, event: OutboundEvent) -> str:
        """One batch request takes any of this project's events."""
        return ""

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """Capture ``events`` in one batch request (PostHog dedupes on each event's uuid)."""
        messages = [
            self._builder.message(**posthog_capture(event, send_answers=self.send_answers))
            for event in events
        ]
        try:
            posthog_batch_post(self.api_key, self.host, timeout=self.timeout, batch=messages)
        except PostHogAPIError as exc:
            status = int(exc.status) if str(exc.status).isdigit() else 0
            failure = DeliveryFailed(
                f"PostHog answered {exc.status}: {_shorten(exc.message)}",
                retryable=_retryable_status(status, also=(408, 429)),
            )
            if not failure.retryable and len(events) > 1:
                # Refused for good: find the events at fault one by one, deliver the others.
                return [_outcome(self.deliver, event) for event in events]
            return [failure] * len(events)
        except requests.RequestException as exc:
            failure = DeliveryFailed(f"PostHog at {self.host} is unreachable: {_shorten(str(exc))}")
            return [failure] * len(events)
        return [None] * len(events)

    def close(self) -> None:
        """Release the sink; its client is shared per process (see :func:`close_clients`)."""


class _PostHogMessages:
    """Builds capture messages with the official client, which sends nothing itself.

    ``capture()`` adds what PostHog expects of its Python library (``$lib``, the uuid and
    timestamp normalised, system context) and hands the finished message to ``before_send``,
    which keeps it for the batch call.
    """

    def __init__(self, api_key: str, host: str) -> None:
        self._kept = threading.local()
        self.client = posthog.Client(
            api_key,
            host=host,
            send=False,
            sync_mode=True,
            before_send=self._keep,
            # Pinned: the POSTHOG_CAPTURE_MODE variable would otherwise switch the wire format.
            capture_mode=posthog.CaptureMode.V0,
        )

    def _keep(self, message: dict[str, Any]) -> dict[str, Any]:
        self._kept.message = message
        return message

    def message(self, **capture: Any) -> dict[str, Any]:
        self._kept.message = None
        self.client.capture(**capture)
        if self._kept.message is None:
            raise DeliveryFailed("The PostHog client built no event (see the posthog log).")
        return self._kept.message


class MemorySink:
    """Writes each answered step to the session's Supermemory namespace."""

    name = "memory"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_SUPERMEMORY_BASE_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url
        self._client = _shared_client(
            ("memory", api_key, base_url, timeout),
            # max_retries=0: the outbox's backoff retries, and counts the attempts.
            lambda: supermemory.Supermemory(
                api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
            ),
            close=lambda client: client.close(),
        )

    def deliver(self, event: OutboundEvent) -> None:
        """Upsert the step's document; return at once for events that make none."""
        document = memory_document(event)
        if document is None:
            return
        namespace = document.pop("namespace")
        try:
            self._client.add(namespace, **document)
        except supermemory.SupermemoryError as exc:
            raise self._failure(exc) from exc

    def batch_key(self, event: OutboundEvent) -> str:
        """One ``batch_add`` call writes to one namespace: the session's memory container."""
        return str(event.payload.get("memory_container") or "")

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """Upsert the documents of ``events``: one ``documents.batch_add`` call per namespace."""
        outcomes: list[DeliveryFailed | None] = [None] * len(events)
        by_namespace: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, event in enumerate(events):
            document = memory_document(event)
            if document is not None:
                by_namespace.setdefault(document.pop("namespace"), []).append((index, document))
        for namespace, documents in by_namespace.items():
            for start in range(0, len(documents), MEMORY_BATCH_LIMIT):
                chunk = documents[start : start + MEMORY_BATCH_LIMIT]
                for (index, _), outcome in zip(
                    chunk, self._add_batch(namespace, chunk, events), strict=True
                ):
                    outcomes[index] = outcome
        return outcomes

    def _add_batch(
        self,
        namespace: str,
        chunk: list[tuple[int, dict[str, Any]]],
        events: list[OutboundEvent],
    ) -> list[DeliveryFailed | None]:
        if len(chunk) == 1:
            return [_outcome(self.deliver, events[chunk[0][0]])]
        try:
            result = self._client.documents.batch_add(
                namespace, documents=[document for _, document in chunk]
            )
        except supermemory.SupermemoryError as exc:
            failure = self._failure(exc)
            if not failure.retryable:
                # Refused for good: find the documents at fault one by one.
                return [_outcome(self.deliver, events[index]) for index, _ in chunk]
            return [failure] * len(chunk)
        by_id = {item.id: item for item in result.results}
        outcomes: list[DeliveryFailed | None] = []
        for _, document in chunk:
            item = by_id.get(document["id"])
            if item is None:
                outcomes.append(DeliveryFailed("Supermemory returned no result for the document."))
            elif item.status in ("error", "failed"):
                reason = _shorten(" ".join(filter(None, [item.error, item.details])) or "failed")
                outcomes.append(DeliveryFailed(f"Supermemory refused the document: {reason}"))
            else:
                outcomes.append(None)
        return outcomes

    def _failure(self, exc: Exception) -> DeliveryFailed:
        if isinstance(exc, supermemory.APIStatusError):
            return DeliveryFailed(
                f"Supermemory answered {exc.status_code}: {_shorten(exc.body)}",
                # The official client's own retry rule: 408, 409, 429 and 5xx are transient.
                retryable=_retryable_status(exc.status_code, also=(408, 409, 429)),
            )
        if isinstance(exc, supermemory.APIConnectionError):
            # The compat error says only "Connection error."; httpx's cause says what failed.
            reason = _shorten(str(exc.__cause__ or exc))
            return DeliveryFailed(f"Supermemory at {self.base_url} is unreachable: {reason}")
        return DeliveryFailed(f"Supermemory call failed: {_shorten(str(exc))}")

    def close(self) -> None:
        """Release the sink; its client is shared per process (see :func:`close_clients`)."""


class JsonLinesSink:
    """Stands in for a sink without credentials: appends what it would send to a file."""

    def __init__(
        self, name: str, path: Path, request_for: Callable[[OutboundEvent], dict[str, Any] | None]
    ) -> None:
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
            os.write(fd, data)
        finally:
            os.close(fd)

    def batch_key(self, event: OutboundEvent) -> str:
        """Lines are appended one by one; any events can go together."""
        return ""

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """Append one line per event."""
        return [_outcome(self.deliver, event) for event in events]

    def close(self) -> None:
        """Release the sink; it holds nothing between deliveries."""


def build_sink(name: str, org_settings: Mapping[str, Any], config: Mapping[str, Any]) -> Sink:
    """Return the sink ``name`` for an org: its own credentials, else the platform's, else a file.

    Raise ValueError for an unknown sink, and DeliveryFailed (not retryable) when the org's own
    API key can't be decrypted: its events must not fall back to the platform's project.
    """
    if name not in ("posthog", "memory"):
        raise ValueError(f"Unknown sink {name!r}; expected 'posthog' or 'memory'.")
    override = (org_settings.get("integrations") or {}).get(name) or {}
    timeout = float(config.get("SINK_TIMEOUT") or DEFAULT_TIMEOUT)
    if name == "posthog":
        send_answers = bool(override.get("send_answers", False))
        credentials = _credentials(
            name, override, config, "POSTHOG_API_KEY", "POSTHOG_HOST", "host", DEFAULT_POSTHOG_HOST
        )
        if credentials is None:
            return _file_sink(
                name, config, lambda event: posthog_capture(event, send_answers=send_answers)
            )
        return PostHogSink(*credentials, send_answers=send_answers, timeout=timeout)
    credentials = _credentials(
        name,
        override,
        config,
        "SUPERMEMORY_API_KEY",
        "SUPERMEMORY_BASE_URL",
        "base_url",
        DEFAULT_SUPERMEMORY_BASE_URL,
    )
    if credentials is None:
        return _file_sink(name, config, memory_document)
    return MemorySink(*credentials, timeout=timeout)


def close_clients() -> None:
    """Close every client the sinks of this process share (at worker shutdown, in tests)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client, close in clients:
        close(client)


def _credentials(
    name: str,
    override: Mapping[str, Any],
    config: Mapping[str, Any],
    key_setting: str,
    url_setting: str,
    url_field: str,
    default_url: str,
) -> tuple[str, str] | None:
    platform_url = config.get(url_setting) or default_url
    encrypted = override.get("api_key_encrypted")
    if encrypted:
        try:
            api_key = decrypt_secret(encrypted, config)
        except ValueError as exc:
            raise DeliveryFailed(
                f"The org's own {name} API key is unusable: {exc}", retryable=False
            ) from exc
        # An org may point its own key at its own host; never the platform key, which would
        # hand the platform's credentials to a host the org chose.
        return api_key, override.get(url_field) or platform_url
    api_key = config.get(key_setting)
    return (api_key, platform_url) if api_key else None


def _file_sink(
    name: str,
    config: Mapping[str, Any],
    request_for: Callable[[OutboundEvent], dict[str, Any] | None],
) -> JsonLinesSink:
    return JsonLinesSink(name, Path(config["INSTANCE_PATH"]) / f"outbox-{name}.jsonl", request_for)


_clients: dict[tuple[Any, ...], tuple[Any, Callable[[Any], None]]] = {}
_clients_lock = threading.Lock()


def _shared_client(
    key: tuple[Any, ...], create: Callable[[], Any], *, close: Callable[[Any], None]
) -> Any:
    # One client per credentials and process: a PostHog client registers an at-fork hook
    # that is never removed, and both keep connection pools worth reusing.
    with _clients_lock:
        if key not in _clients:
            _clients[key] = (create(), close)
        return _clients[key][0]


def _forget_clients_after_fork() -> None:
    # A forked worker must not share the parent's connections; it makes its own clients.
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_clients_after_fork)


def _outcome(
    deliver: Callable[[OutboundEvent], None], event: OutboundEvent
) -> DeliveryFailed | None:
    try:
        deliver(event)
    except DeliveryFailed as exc:
        return exc
    return None


def _raise_first(outcomes: list[DeliveryFailed | None]) -> None:
    for outcome in outcomes:
        if outcome is not None:
            raise outcome


def _retryable_status(status: int, *, also: tuple[int, ...]) -> bool:
    return not 400 <= status < 500 or status in also


def _as_utc(moment: datetime) -> datetime:
    # Naive datetimes are UTC here: that is how the database stores them.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _shorten(detail: Any) -> str:
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text if len(text) <= _MAX_ERROR_DETAIL else text[:_MAX_ERROR_DETAIL] + "…"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
