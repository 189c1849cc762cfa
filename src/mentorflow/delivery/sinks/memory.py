"""The Supermemory sink: remembers each completed step in the session's memory container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import supermemory

from mentorflow.delivery.sinks.base import (
    ERASED_TYPES,
    DeliveryFailed,
    OutboundEvent,
    RequestFor,
    SinkType,
    answered,
    as_utc,
    check_encodable,
    outcome_of,
    register,
    shared_client,
    unanswered,
    unsendable,
)
from mentorflow.platform.outbound import (
    PUBLIC_ONLY,
    OutboundPolicy,
    OutboundRefused,
    deadline,
    httpx_client,
)

DEFAULT_SUPERMEMORY_BASE_URL = "https://api.supermemory.ai"

_MEMORY_METADATA = ("org", "session_id", "flow", "flow_version", "step_id", "phase", "seq")
_MESSAGE_METADATA = ("org", "session_id", "flow", "flow_version", "step_id", "seq", "role")
_ROLE_LABELS = {"user": "Learner", "assistant": "Mentor", "system": "Note", "tool": "Tool"}
#: Documents per ``documents.batch_add`` call (the API takes up to 600).
MEMORY_BATCH_LIMIT = 600

#: The step types that show something and take no answer (flows.document.NO_ANSWER_TYPES).
NO_ANSWER_STEP_TYPES = frozenset({"info", "video"})


def memory_document(event: OutboundEvent) -> dict[str, Any] | None:
    """Return the keyword arguments of the ``Supermemory.add`` call for ``event``, if any.

    Every completed step is remembered, one document per step: what the learner answered,
    that they skipped an optional question, or that they went through an info or video step.
    Each message of a conversation is one document too (:func:`message_document`). Other
    events make no document.
    """
    payload = event.payload
    if event.type == "message.created":
        return message_document(event)
    if event.type != "step.completed":
        return None
    question = payload.get("prompt") or payload.get("key") or payload["step_id"]
    # Sinks sit below flows/ and can't ask its takes_answer(); the event names the step type.
    if payload.get("step_type") in NO_ANSWER_STEP_TYPES:
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
        "date": payload.get("occurred_at") or as_utc(event.created_at).isoformat(),
    }


def message_document(event: OutboundEvent) -> dict[str, Any]:
    """Return the ``Supermemory.add`` arguments of a ``message.created`` event: one document
    per message, its id derived from (session, message seq) so a redelivery upserts it."""
    payload = event.payload
    label = _ROLE_LABELS.get(payload["role"], payload["role"])
    metadata = {name: payload[name] for name in _MESSAGE_METADATA if payload.get(name) is not None}
    metadata["kind"] = "message"
    return {
        "namespace": payload["memory_container"],
        "id": f"{payload['session_id']}-message-{payload['seq']}",
        "content": f"{label}: {payload['content']}",
        "metadata": metadata,
        "date": payload.get("occurred_at") or as_utc(event.created_at).isoformat(),
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


class MemorySink:
    """Writes each answered step to the session's Supermemory namespace."""

    name = "memory"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_SUPERMEMORY_BASE_URL,
        *,
        policy: OutboundPolicy = PUBLIC_ONLY,
    ) -> None:
        self.base_url = base_url
        self.policy = policy
        self._client, _ = shared_client(
            ("memory", api_key, base_url, policy),
            lambda: _memory_client(api_key, base_url, policy),
            close=lambda pair: pair[1].close(),
        )
        # The client wraps a method anew on every attribute access (``inspect.signature``
        # included): taken once here, ~0.14 ms of CPU less per request.
        self._add = self._client.add
        self._batch_add = self._client.documents.batch_add

    def deliver(self, event: OutboundEvent) -> None:
        """Upsert the step's document (an erasure: delete the containers); return at once for
        events that make none."""
        if event.type in ERASED_TYPES:
            self._erase(event)
            return
        document = _prepared(event)
        if document is None:
            return
        namespace = document.pop("namespace")
        with deadline(self.policy.timeout):
            try:
                self._add(namespace, **document)
            except (supermemory.SupermemoryError, OutboundRefused) as exc:
                raise self._failure(exc) from exc

    def _erase(self, event: OutboundEvent) -> None:
        # Deleting a namespace deletes every document and memory in it; one that was never
        # written (404) has nothing to delete. A redelivery deletes nothing more.
        with deadline(self.policy.timeout):
            for namespace in event.payload.get("memory_containers") or []:
                try:
                    self._client.namespaces.delete(namespace)
                except supermemory.NotFoundError:
                    continue
                except (supermemory.SupermemoryError, OutboundRefused) as exc:
                    raise self._failure(exc) from exc

    def batch_key(self, event: OutboundEvent) -> str:
        """One call for all of an org's events of a worker batch: it makes one
        ``documents.batch_add`` per namespace, in turn, on the connections it keeps open (a
        call per namespace meant a call, a connection and a commit per event or two). An
        erasure goes alone."""
        if event.type in ERASED_TYPES:
            return f"erase:{event.id}"
        return ""

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """Upsert the documents of ``events``: one ``documents.batch_add`` call per namespace,
        all within one deadline."""
        if any(event.type in ERASED_TYPES for event in events):
            return [outcome_of(self.deliver, event) for event in events]
        with deadline(self.policy.timeout):
            return self._add_documents(events)

    def _add_documents(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        outcomes: list[DeliveryFailed | None] = [None] * len(events)
        by_namespace: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, event in enumerate(events):
            try:
                document = _prepared(event)
            except DeliveryFailed as failure:  # this event alone: the others go on
                outcomes[index] = failure
                continue
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
            return [outcome_of(self.deliver, events[chunk[0][0]])]
        try:
            result = self._batch_add(namespace, documents=[document for _, document in chunk])
        except (supermemory.SupermemoryError, OutboundRefused) as exc:
            failure = self._failure(exc)
            if not failure.retryable:
                # Refused for good: find the documents at fault one by one.
                return [outcome_of(self.deliver, events[index]) for index, _ in chunk]
            return [failure] * len(chunk)
        by_id = {item.id: item for item in result.results}
        outcomes: list[DeliveryFailed | None] = []
        for _, document in chunk:
            item = by_id.get(document["id"])
            if item is None:
                outcomes.append(DeliveryFailed("Supermemory returned no result for the document."))
            elif item.status in ("error", "failed"):
                # Its error text comes from the host: not shown, like any reply's body.
                outcomes.append(DeliveryFailed("Supermemory refused the document (status error)."))
            else:
                outcomes.append(None)
        return outcomes

    def _failure(self, exc: Exception) -> DeliveryFailed:
        if isinstance(exc, supermemory.APIStatusError):
            # The official client's own retry rule: 408, 409, 429 and 5xx are transient.
            return answered("Supermemory", exc.status_code, also_retryable=(408, 409, 429))
        if isinstance(exc, supermemory.APIConnectionError | OutboundRefused):
            return unanswered("Supermemory", self.base_url, exc)
        return DeliveryFailed(f"The Supermemory call failed ({type(exc).__name__}).")

    def close(self) -> None:
        """Release the sink; its client is shared per process (see :func:`close_clients`)."""


def _prepared(event: OutboundEvent) -> dict[str, Any] | None:
    # An event whose document can't be made or sent fails here, before any call, alone.
    try:
        document = memory_document(event)
        if document is not None:
            check_encodable(document)
    except Exception as exc:
        raise unsendable("Supermemory", exc) from exc
    return document


def _memory_client(
    api_key: str, base_url: str, policy: OutboundPolicy
) -> tuple[supermemory.Supermemory, httpx.Client]:
    # max_retries=0: the outbox's backoff retries, and counts the attempts. The HTTP client
    # is the outbound guard's; the Supermemory client does not close one it was given.
    http = httpx_client(policy)
    client = supermemory.Supermemory(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=policy.timeout, http_client=http
    )
    return client, http


def _connect(
    api_key: str, base_url: str, own: Mapping[str, Any], policy: OutboundPolicy
) -> MemorySink:
    return MemorySink(api_key, base_url, policy=policy)


def memory_erasure(event: OutboundEvent) -> dict[str, Any] | None:
    """Return what an erasure event deletes (the dry run's record of it), else None."""
    if event.type not in ERASED_TYPES:
        return None
    return {"delete_namespaces": list(event.payload.get("memory_containers") or [])}


def _dry_run(own: Mapping[str, Any]) -> RequestFor:
    return lambda event: memory_erasure(event) or memory_document(event)


register(
    SinkType(
        name="memory",
        label="Supermemory",
        key_setting="SUPERMEMORY_API_KEY",
        url_setting="SUPERMEMORY_BASE_URL",
        url_field="base_url",
        default_url=DEFAULT_SUPERMEMORY_BASE_URL,
        connect=_connect,
        dry_run=_dry_run,
    )
)
