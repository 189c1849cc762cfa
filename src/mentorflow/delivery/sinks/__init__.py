"""Delivery sinks: their shared types and helpers, and the registry of the kinds of sink."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The sink modules register themselves on import; their order is the registry's (and the
# console's and the CLI's lists').
from mentorflow.delivery.sinks import posthog, memory  # noqa: F401  isort: skip
from mentorflow.delivery.sinks.base import (
    DEFAULT_TIMEOUT,
    DeliveryFailed,
    OutboundEvent,
    RequestFor,
    Sink,
    SinkType,
    close_clients,
    credentials_for,
    get_sink_type,
    register,
    sink_types,
)
from mentorflow.delivery.sinks.jsonlines import JsonLinesSink
from mentorflow.platform.crypto import decrypt_secret
from mentorflow.platform.outbound import OutboundPolicy
from mentorflow.tenants.analytics import analytics_answers

__all__ = [
    "DEFAULT_TIMEOUT",
    "DeliveryFailed",
    "OutboundEvent",
    "RequestFor",
    "Sink",
    "SinkType",
    "build_sink",
    "close_clients",
    "get_sink_type",
    "register",
    "sink_types",
]


def build_sink(name: str, org_settings: Mapping[str, Any], config: Mapping[str, Any]) -> Sink:
    """Return the sink ``name`` for an org: its own credentials, else the platform's, else a file.

    Raise ValueError for an unknown sink, and DeliveryFailed (not retryable) when the org's own
    API key can't be decrypted: its events must not fall back to the platform's project.
    """
    sink_type = get_sink_type(name)
    # Without credentials the sink writes the request it would have sent to
    # ``<instance>/outbox-<sink>.jsonl``: a dry run that needs no account.
    own = with_decrypted((org_settings.get("integrations") or {}).get(name) or {}, config)
    # The org-wide opt-in (``analytics_answers``) decides what an analytics sink may carry.
    own = {**own, "send_answers": analytics_answers(org_settings)}
    credentials = credentials_for(sink_type, own, config)
    if credentials is None:
        path = Path(config["INSTANCE_PATH"]) / f"outbox-{name}.jsonl"
        return JsonLinesSink(name, path, sink_type.dry_run(own))
    return sink_type.connect(*credentials, own, OutboundPolicy.from_config(config))


def with_decrypted(own: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Return an org's settings of a sink with each ``<name>_encrypted`` secret (other than
    the API key, which :func:`credentials_for` reads) also readable as ``<name>``."""
    readable = dict(own)
    for name, value in own.items():
        if name.endswith("_encrypted") and name != "api_key_encrypted" and value:
            try:
                readable[name.removesuffix("_encrypted")] = decrypt_secret(value, config)
            except ValueError as exc:
                raise DeliveryFailed(
                    f"The org's own {name.removesuffix('_encrypted')} is unusable: {exc}",
                    retryable=False,
                ) from exc
    return readable
