"""The webhook sink: one signed POST per event to an org's endpoint (Standard Webhooks).

Each request carries ``webhook-id`` (the event id: the same on every retry, so receivers
dedupe on it), ``webhook-timestamp`` (now, in seconds: fresh on every attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` for each signing
secret (two, space-separated, while a rotated-out secret is still valid). The body is
``{type, timestamp, data}``.

Standard Webhooks is one event per request, but a worker hands an endpoint's due events to
one sink call: they go in turn over the endpoint's kept-alive connection, each request within
a deadline of its own (see ``delivery.services``), so the claims, the outcomes' transaction and
the thread are paid once per batch rather than once per event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from mentorflow.delivery.sinks.base import (
    DeliveryFailed,
    OutboundEvent,
    as_utc,
    outcome_of,
    shared_client,
    unanswered,
    unsendable,
)
from mentorflow.platform.outbound import OutboundPolicy, OutboundRefused, deadline, requests_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttemptLog:
    """What one request to an endpoint did: logged, never the reply's body."""

    endpoint_id: int
    event: OutboundEvent
    succeeded: bool
    response_status: int | None
    duration_ms: int
    error: str | None
    #: When the request was made.
    attempted_at: datetime


def webhook_body(event: OutboundEvent) -> bytes:
    """Return the request body of ``event``: ``{type, timestamp, data}`` as UTF-8 JSON."""
    body = {
        "type": event.type,
        "timestamp": as_utc(event.created_at).isoformat().replace("+00:00", "Z"),
        "data": event.payload,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Return the Standard Webhooks ``v1,<signature>`` of a request with ``secret``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secrets: list[str], message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Return the headers of a signed request: one signature per secret."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": "mentorflow-webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets),
    }


class WebhookSink:
    """Posts events to one endpoint, signed; logs each attempt through ``on_attempt``."""

    #: Each event is a request of its own, within a deadline of its own: a worker's call of
    #: several events gives each one its deadline (never one deadline shared by the batch).
    request_per_event = True

    def __init__(
        self,
        endpoint_id: int,
        url: str,
        secrets: list[str],
        *,
        policy: OutboundPolicy,
        on_attempt: Callable[[AttemptLog], None],
    ) -> None:
        self.name = f"webhook:{endpoint_id}"
        self.endpoint_id = endpoint_id
        self.url = url
        self.policy = policy
        self._secrets = secrets
        self._on_attempt = on_attempt
        self._session = shared_client(
            ("webhook-session", policy.allow_private),
            lambda: requests_session(policy),
            close=lambda session: session.close(),
        )

    def deliver(self, event: OutboundEvent) -> None:
        """POST ``event``, signed now; raise DeliveryFailed unless the endpoint answered 2xx."""
        try:
            body = webhook_body(event)
        except Exception as exc:
            raise unsendable("the webhook endpoint", exc) from exc
        headers = signed_headers(self._secrets, str(event.id), body)
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        status: int | None = None
        failure: DeliveryFailed | None = None
        try:
            with deadline(self.policy.timeout):
                response = self._session.post(
                    self.url,
                    data=body,
                    headers=headers,
                    timeout=self.policy.timeout,
                    allow_redirects=False,
                    stream=True,
                )
                status = response.status_code
                _drain(response)
            if not 200 <= status < 300:
                # Any other answer is retried: receivers fix their side and come back.
                failure = DeliveryFailed(f"The endpoint answered {status} (not a 2xx).")
        except (requests.RequestException, OutboundRefused) as exc:
            failure = unanswered("The webhook endpoint", self.url, exc)
            if isinstance(exc, OutboundRefused) and exc.status is not None:
                status = exc.status
        duration_ms = int((time.monotonic() - started) * 1000)
        self._on_attempt(
            AttemptLog(
                self.endpoint_id,
                event,
                failure is None,
                status,
                duration_ms,
                failure and failure.message,
                attempted_at,
            )
        )
        if failure is not None:
            raise failure

    def batch_key(self, event: OutboundEvent) -> str:
        """An endpoint's events share a call (one request each, in turn, each within its own
        deadline: see :attr:`request_per_event`)."""
        return "endpoint"

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        """POST each event in turn (within the caller's deadline)."""
        return [outcome_of(self.deliver, event) for event in events]

    def close(self) -> None:
        """Release the sink; its HTTP session is shared per process."""


#: At most this much of a reply is read (and dropped) so that its connection can be used again.
DRAIN_LIMIT = 64 * 1024


def _drain(response: requests.Response) -> None:
    """Read the reply's body to its end and drop it (nothing of it is kept or shown), so that
    the kept-alive connection serves the next event; a reply longer than
    :data:`DRAIN_LIMIT` is cut off with its connection."""
    received = 0
    try:
        for chunk in response.iter_content(16 * 1024):
            received += len(chunk)
            if received > DRAIN_LIMIT:
                break
    except Exception:  # the answer is in (its status); the rest of the body is not ours
        log.debug("a webhook reply's body could not be read to its end", exc_info=True)
    finally:
        response.close()
