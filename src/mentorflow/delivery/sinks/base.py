"""What every sink shares: the event and failure types, the registry of sink types, clients."""

from __future__ import annotations

import json
import os
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import requests

from mentorflow.platform.crypto import decrypt_secret
from mentorflow.platform.outbound import OutboundPolicy, OutboundRefused, deadline_passed

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class OutboundEvent:
    """One outbox event, as the worker hands it to a sink."""

    id: uuid.UUID
    org: str
    type: str
    payload: dict[str, Any]
    created_at: datetime


#: The events that erase a learner or a session: each sink deletes what it holds of them.
ERASED_TYPES = frozenset({"learner.erased", "session.erased"})
#: How a delivery that could not be carried out for want of a setting begins its error: the
#: console shows such a delivery as "not configured", never as delivered.
NOT_CONFIGURED = "Not configured:"


class DeliveryFailed(Exception):
    """A delivery did not happen; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


# A sink sends events through an official client and either returns (delivered) or raises
# DeliveryFailed, saying whether trying again can help. Every call must be idempotent per
# event, because a worker that dies mid-batch delivers again: PostHog dedupes on the event
# ``uuid``; Supermemory upserts the document ``id``. A sink that makes one request per event
# says so with ``request_per_event = True``: a worker's call then gives each event its own
# deadline (and may give back, untried, those it has no time left for), not one for all.
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


#: What the stand-in file sink writes for an event: the request the real sink would make.
RequestFor = Callable[[OutboundEvent], dict[str, Any] | None]


@dataclass(frozen=True)
class SinkType:
    """One kind of sink, as its module registers it: its names, settings and builders.

    ``connect(api_key, url, own, policy)`` builds the sink with credentials; ``dry_run(own)``
    returns what the stand-in file records instead. ``own`` is the org's own settings of the
    sink (``Org.settings["integrations"][name]``), which may hold more options than the URL.
    """

    name: str
    label: str
    #: The platform settings of the API key and URL, used when the org has no key of its own.
    key_setting: str
    url_setting: str
    #: Where an org's own URL is kept in its settings of the sink.
    url_field: str
    default_url: str
    connect: Callable[[str, str, Mapping[str, Any], OutboundPolicy], Sink]
    dry_run: Callable[[Mapping[str, Any]], RequestFor]


#: The registered sink types by name, in registration order. Each sink module declares its
#: SinkType and registers it, so that the console, the CLI and build_sink list the same sinks.
sink_types: dict[str, SinkType] = {}


def register(sink_type: SinkType) -> SinkType:
    """Add ``sink_type`` to the registry (each sink module calls this once, on import)."""
    if sink_type.name in sink_types:
        raise ValueError(f"A sink named {sink_type.name!r} is registered already.")
    sink_types[sink_type.name] = sink_type
    return sink_type


def get_sink_type(name: str) -> SinkType:
    """Return the registered sink type ``name``; raise ValueError for an unknown one."""
    if name not in sink_types:
        expected = " or ".join(repr(known) for known in sink_types)
        raise ValueError(f"Unknown sink {name!r}; expected {expected}.")
    return sink_types[name]


def close_clients() -> None:
    """Close every client the sinks of this process share (at worker shutdown, in tests)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client, close in clients:
        close(client)


def credentials_for(
    sink_type: SinkType, own: Mapping[str, Any], config: Mapping[str, Any]
) -> tuple[str, str] | None:
    platform_url = config.get(sink_type.url_setting) or sink_type.default_url
    encrypted = own.get("api_key_encrypted")
    if encrypted:
        try:
            api_key = decrypt_secret(encrypted, config)
        except ValueError as exc:
            raise DeliveryFailed(
                f"The org's own {sink_type.name} API key is unusable: {exc}", retryable=False
            ) from exc
        # An org may point its own key at its own host; never the platform key, which would
        # hand the platform's credentials to a host the org chose.
        return api_key, own.get(sink_type.url_field) or platform_url
    api_key = config.get(sink_type.key_setting)
    return (api_key, platform_url) if api_key else None


_clients: dict[tuple[Any, ...], tuple[Any, Callable[[Any], None]]] = {}
_clients_lock = threading.Lock()


def shared_client(
    key: tuple[Any, ...], create: Callable[[], Any], *, close: Callable[[Any], None]
) -> Any:
    """Return the process's client for ``key``, made by ``create`` the first time."""
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


def outcome_of(
    deliver: Callable[[OutboundEvent], None], event: OutboundEvent
) -> DeliveryFailed | None:
    """Return the DeliveryFailed that ``deliver(event)`` raised, or None if it delivered."""
    try:
        deliver(event)
    except DeliveryFailed as exc:
        return exc
    return None


def raise_first(outcomes: list[DeliveryFailed | None]) -> None:
    """Raise the first failure among ``outcomes``, if any."""
    for outcome in outcomes:
        if outcome is not None:
            raise outcome


def retryable_status(status: int, *, also: tuple[int, ...]) -> bool:
    """Return whether an HTTP status is worth retrying: not a 4xx, unless one of ``also``."""
    return not 400 <= status < 500 or status in also


def as_utc(moment: datetime) -> datetime:
    """Return ``moment`` as an aware UTC datetime."""
    # Naive datetimes are UTC here: that is how the database stores them.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# What a failure says is shown to staff (``last_error``, the test event's message) and logged:
# a status code and a fixed reason, never text from the reply. An org chooses the host, and a
# reply's text would turn the "send a test event" button into a reader of internal pages.
_TIMEOUTS = (TimeoutError, requests.Timeout, httpx.TimeoutException)
_TLS_FAILURES = (ssl.SSLError, requests.exceptions.SSLError)


def answered(label: str, status: int, *, also_retryable: tuple[int, ...]) -> DeliveryFailed:
    """Return the failure for a reply with a status other than success."""
    if 400 <= status < 500:
        reason = "the request was refused"
    elif 500 <= status < 600:
        reason = "a server error"
    else:
        reason = "not a success"
    return DeliveryFailed(
        f"{label} answered {status} ({reason}).",
        retryable=retryable_status(status, also=also_retryable),
    )


def unanswered(label: str, url: str, exc: BaseException) -> DeliveryFailed:
    """Return the failure for a call that got no usable reply, with a fixed reason."""
    if deadline_passed():
        return DeliveryFailed(
            f"{label} at {url} did not finish within the deadline (MENTORFLOW_SINK_TIMEOUT)."
        )
    for cause in causes(exc):
        if isinstance(cause, OutboundRefused):
            # A refused address or a redirect: trying again cannot help until the URL changes.
            if cause.status is not None:
                return DeliveryFailed(
                    f"{label} at {url} answered {cause.status}: {cause.reason}.", retryable=False
                )
            return DeliveryFailed(
                f"{label} at {url} was not called: {cause.reason}.", retryable=False
            )
    if any(isinstance(cause, _TIMEOUTS) for cause in causes(exc)):
        return DeliveryFailed(f"{label} at {url} timed out.")
    if any(isinstance(cause, _TLS_FAILURES) for cause in causes(exc)):
        return DeliveryFailed(f"{label} at {url} failed the TLS handshake.")
    return DeliveryFailed(f"{label} at {url} is unreachable (the connection failed).")


def unsendable(label: str, exc: Exception) -> DeliveryFailed:
    """Return the failure of an event its sink can't make a request of (its data is at
    fault, e.g. an unpaired surrogate): it fails alone and for good; its batch goes on."""
    return DeliveryFailed(
        f"The event can't be sent to {label} ({type(exc).__name__}); the others of its "
        "batch were sent without it.",
        retryable=False,
    )


def check_encodable(body: Any) -> None:
    """Raise ValueError unless ``body`` can go out as UTF-8 JSON."""
    json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


def causes(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and the exceptions it was raised from or during, nearest first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
