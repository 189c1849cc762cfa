"""The PostHog sink: captures outbox events as PostHog events."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import posthog
import requests
from posthog.request import APIError as PostHogAPIError
from posthog.request import batch_post as posthog_batch_post

from mentorflow.delivery.sinks.base import (
    ERASED_TYPES,
    NOT_CONFIGURED,
    DeliveryFailed,
    OutboundEvent,
    RequestFor,
    SinkType,
    answered,
    as_utc,
    check_encodable,
    outcome_of,
    raise_first,
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
    requests_session,
)

DEFAULT_POSTHOG_HOST = "https://us.i.posthog.com"

#: PostHog properties copied from the event payload when present. Answers and message content
#: are not among them: they go to PostHog only for orgs that opt in (``analytics_answers``).
_POSTHOG_PROPERTIES = (
    "session_id",
    "flow",
    "flow_version",
    "status",
    "step_id",
    "phase",
    "step_type",
    "seq",
    "role",
    "message_id",
)


def posthog_capture(event: OutboundEvent, *, send_answers: bool = False) -> dict[str, Any]:
    """Return the keyword arguments of the ``posthog.Client.capture`` call for ``event``."""
    payload = event.payload
    properties = {name: payload[name] for name in _POSTHOG_PROPERTIES if name in payload}
    if send_answers and "answer" in payload:
        properties["key"] = payload.get("key")
        properties["answer"] = payload["answer"]
    if "content" in payload:
        # How long a message was is a timing-like figure; what it said is the learner's.
        properties["content_length"] = len(payload["content"])
        if send_answers:
            properties["content"] = payload["content"]
    return {
        "distinct_id": payload["distinct_id"],
        "event": event.type,
        "properties": properties,
        "uuid": str(event.id),
        "timestamp": as_utc(event.created_at),
        "groups": {"organization": event.org},
    }


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
        policy: OutboundPolicy = PUBLIC_ONLY,
        erasure: PersonDeletion | None = None,
    ) -> None:
        self.api_key = api_key
        self.erasure = erasure
        self.host = host
        self.policy = policy
        self.send_answers = send_answers
        self._builder = shared_client(
            ("posthog", api_key, host),
            lambda: _PostHogMessages(api_key, host),
            close=lambda builder: builder.client.shutdown(),
        )
        # Every call goes through the outbound guard's session, never posthog's own.
        self._session = shared_client(
            ("posthog-session", policy.allow_private),
            lambda: requests_session(policy),
            close=lambda session: session.close(),
        )

    def deliver(self, event: OutboundEvent) -> None:
        """Capture ``event``; raise DeliveryFailed unless PostHog answered 200."""
        raise_first(self.deliver_batch([event]))

    def batch_key(self, event: OutboundEvent) -> str:
        """One batch request takes any of this project's events; an erasure goes alone."""
        return f"erase:{event.id}" if event.type in ERASED_TYPES else ""

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """Capture ``events`` in one batch request (PostHog dedupes on each event's uuid),
        all within one deadline; an erasure deletes the persons instead."""
        with deadline(self.policy.timeout):
            if any(event.type in ERASED_TYPES for event in events):
                return [outcome_of(self._delete_persons, event) for event in events]
            return self._capture_batch(events)

    def _delete_persons(self, event: OutboundEvent) -> None:
        deletion = person_deletion_request(event, self.erasure, self.host)
        try:
            response = self._session.post(
                deletion["url"],
                json=deletion["json"],
                headers={"Authorization": f"Bearer {self.erasure.personal_api_key}"},
                timeout=self.policy.timeout,
            )
            status = response.status_code
            response.close()
        except (requests.RequestException, OutboundRefused) as exc:
            raise unanswered("PostHog", self.host, exc) from exc
        if not 200 <= status < 300:
            raise answered("PostHog", status, also_retryable=(408, 429))

    def _capture_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        outcomes: list[DeliveryFailed | None] = [None] * len(events)
        messages: list[tuple[int, dict[str, Any]]] = []
        for index, event in enumerate(events):
            # An event that can't be made into a message fails alone; the others are sent.
            try:
                message = self._builder.message(
                    **posthog_capture(event, send_answers=self.send_answers)
                )
                check_encodable(message)
            except DeliveryFailed as failure:
                outcomes[index] = failure
                continue
            except Exception as exc:
                outcomes[index] = unsendable("PostHog", exc)
                continue
            messages.append((index, message))
        if messages:
            sent = self._post(
                [message for _, message in messages], [events[index] for index, _ in messages]
            )
            for (index, _), outcome in zip(messages, sent, strict=True):
                outcomes[index] = outcome
        return outcomes

    def _post(
        self, messages: list[dict[str, Any]], events: list[OutboundEvent]
    ) -> list[DeliveryFailed | None]:
        try:
            posthog_batch_post(
                self.api_key,
                self.host,
                timeout=self.policy.timeout,
                batch=messages,
                session=self._session,
            )
        except PostHogAPIError as exc:
            status = int(exc.status) if str(exc.status).isdigit() else 0
            failure = answered("PostHog", status, also_retryable=(408, 429))
            if not failure.retryable and len(events) > 1:
                # Refused for good: find the events at fault one by one, deliver the others.
                return [outcome_of(self.deliver, event) for event in events]
            return [failure] * len(events)
        except (requests.RequestException, OutboundRefused) as exc:
            return [unanswered("PostHog", self.host, exc)] * len(events)
        return [None] * len(events)

    def close(self) -> None:
        """Release the sink; its client is shared per process (see :func:`close_clients`)."""


@dataclass(frozen=True)
class PersonDeletion:
    """What deleting PostHog persons takes: a personal API key (persons:write), the project
    id and the app host of its private API (``api_host``; else derived from the ingestion
    host: ``us.i.posthog.com`` → ``us.posthog.com``)."""

    personal_api_key: str
    project_id: str
    api_host: str | None = None

    @classmethod
    def from_settings(cls, own: Mapping[str, Any]) -> PersonDeletion | None:
        """Return the org's person-deletion settings, or None when they are not all set."""
        key, project = own.get("personal_api_key"), own.get("project_id")
        if not key or not project:
            return None
        return cls(str(key), str(project), own.get("api_host") or None)


def person_deletion_request(
    event: OutboundEvent, erasure: PersonDeletion | None, host: str
) -> dict[str, Any]:
    """Return the request deleting the persons of an erasure event (PostHog's documented
    ``persons/bulk_delete``, with their events); raise DeliveryFailed (not retryable) when the
    org has not configured person deletion."""
    if erasure is None:
        raise DeliveryFailed(
            f"{NOT_CONFIGURED} PostHog person deletion needs the organization's personal API "
            "key and project id (console: Settings, Integrations; CLI: mentorflow org "
            "integrate ORG posthog --personal-api-key KEY --project-id ID). The persons were "
            "not deleted.",
            retryable=False,
        )
    api_host = (erasure.api_host or host.replace(".i.posthog.com", ".posthog.com")).rstrip("/")
    return {
        "url": f"{api_host}/api/projects/{quote(erasure.project_id, safe='')}/persons/bulk_delete/",
        "json": {
            "distinct_ids": list(event.payload.get("distinct_ids") or [])[:1000],
            "delete_events": True,
        },
    }


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


def _connect(
    api_key: str, host: str, own: Mapping[str, Any], policy: OutboundPolicy
) -> PostHogSink:
    return PostHogSink(
        api_key,
        host,
        send_answers=bool(own.get("send_answers", False)),
        policy=policy,
        erasure=PersonDeletion.from_settings(own),
    )


def _dry_run(own: Mapping[str, Any]) -> RequestFor:
    send_answers = bool(own.get("send_answers", False))
    erasure = PersonDeletion.from_settings(own)
    host = own.get("host") or DEFAULT_POSTHOG_HOST

    def request_for(event: OutboundEvent) -> dict[str, Any] | None:
        if event.type in ERASED_TYPES:
            return person_deletion_request(event, erasure, host)
        return posthog_capture(event, send_answers=send_answers)

    return request_for


register(
    SinkType(
        name="posthog",
        label="PostHog",
        key_setting="POSTHOG_API_KEY",
        url_setting="POSTHOG_HOST",
        url_field="host",
        default_url=DEFAULT_POSTHOG_HOST,
        connect=_connect,
        dry_run=_dry_run,
    )
)
