"""An org's own settings of each sink (its integrations): change, summarize and test them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from mentorflow.delivery.sinks import OutboundEvent, build_sink, get_sink_type, sink_types
from mentorflow.delivery.sinks.jsonlines import JsonLinesSink
from mentorflow.delivery.sinks.memory import MemorySink
from mentorflow.platform.crypto import encrypt_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbound import OutboundRefused, check_url
from mentorflow.tenants.analytics import ANALYTICS_ANSWERS, analytics_answers
from mentorflow.tenants.models import Org
from mentorflow.tenants.services import TenantError


def set_integration(
    org: Org,
    sink: str,
    config: Mapping[str, Any],
    *,
    api_key: str | None = None,
    url: str | None = None,
    send_answers: bool | None = None,
    personal_api_key: str | None = None,
    project_id: str | None = None,
    clear: bool = False,
) -> Org:
    """Set (or clear) the org's own credentials for a sink; the key is stored encrypted."""
    if sink not in sink_types:
        raise TenantError(f"unknown integration '{sink}'; expected one of {', '.join(sink_types)}")
    settings = dict(org.settings)
    integrations = dict(settings.get("integrations", {}))
    if clear:
        integrations.pop(sink, None)
    else:
        current = dict(integrations.get(sink, {}))
        if api_key is not None:
            current["api_key_encrypted"] = encrypt_secret(api_key.strip(), config)
        if url is not None:
            if not re.match(r"^https?://", url):
                raise TenantError(f"'{url}' must be an http(s) URL")
            try:
                check_url(url, allow_private=bool(config.get("ALLOW_PRIVATE_SINKS")))
            except OutboundRefused as exc:
                raise TenantError(f"'{url}' can't receive events: {exc.reason}") from exc
            current[sink_types[sink].url_field] = url.rstrip("/")
        if send_answers is not None:
            if sink != "posthog":
                raise TenantError("send-answers applies to PostHog only")
            current["send_answers"] = send_answers
            # One opt-in for the org: the integration's checkbox is the org's setting.
            settings[ANALYTICS_ANSWERS] = send_answers
        if personal_api_key is not None or project_id is not None:
            if sink != "posthog":
                raise TenantError("a personal API key and project id apply to PostHog only")
            # What erasures delete PostHog persons with (see sinks.posthog.PersonDeletion).
            if personal_api_key is not None:
                current["personal_api_key_encrypted"] = encrypt_secret(
                    personal_api_key.strip(), config
                )
            if project_id is not None:
                if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", project_id.strip()):
                    raise TenantError("the PostHog project id is a number such as 12345")
                current["project_id"] = project_id.strip()
        integrations[sink] = current
    settings["integrations"] = integrations
    org.settings = settings
    db.session.flush()
    return org


def integration_status(
    org_settings: Mapping[str, Any], config: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Return, per sink, where its credentials come from and where events go; never a key."""
    rows = []
    for sink_type in sink_types.values():
        own = (org_settings.get("integrations") or {}).get(sink_type.name) or {}
        platform_url = config.get(sink_type.url_setting) or sink_type.default_url
        if own.get("api_key_encrypted"):
            key, url = "set", own.get(sink_type.url_field) or platform_url
        elif config.get(sink_type.key_setting):
            key, url = "platform default", platform_url
        else:
            key, url = "none", None
        rows.append(
            {
                "integration": sink_type,
                "key": key,
                "url": url,
                "own_url": own.get(sink_type.url_field),
                "send_answers": analytics_answers(org_settings),
                "person_deletion": bool(
                    own.get("personal_api_key_encrypted") and own.get("project_id")
                ),
            }
        )
    return rows


def synthetic_event(org_slug: str, by: str) -> OutboundEvent:
    """Return a synthetic ``step.completed`` event, as a learner's answer would make one."""
    now = utcnow()
    session_id = f"console-test-{uuid.uuid4().hex[:12]}"
    payload = {
        "org": org_slug,
        "session_id": session_id,
        "flow": "console-test",
        "flow_version": 0,
        "status": "active",
        "distinct_id": session_id,
        "memory_container": f"mentorflow-{org_slug}-console-test",
        "occurred_at": now.isoformat(),
        "seq": 1,
        "step_id": "console-test-step",
        "phase": "console-test",
        "prompt": "Is the integration working?",
        "step_type": "text",
        "key": "console-test",
        "answer": f"Yes: a test event sent by {by} from the console.",
    }
    return OutboundEvent(
        id=uuid.uuid4(), org=org_slug, type="step.completed", payload=payload, created_at=now
    )


def send_test_event(
    org_slug: str,
    org_settings: Mapping[str, Any],
    sink_name: str,
    by: str,
    config: Mapping[str, Any],
) -> str:
    """Deliver one test event through ``sink_name`` now; return what happened, for people.

    Raise DeliveryFailed with the sink's message when it was not accepted.
    """
    # Plain values, not the Org: the caller ends its transaction before this waits on the
    # network, and reading a released Org would open a new one.
    event = synthetic_event(org_slug, by)
    label = get_sink_type(sink_name).label
    sink = build_sink(sink_name, org_settings, config)
    try:
        sink.deliver(event)
    finally:
        sink.close()
    session_id = event.payload["session_id"]
    if isinstance(sink, JsonLinesSink):
        return (
            f"No {label} API key (neither this organization's nor the platform's): the test "
            f"event was written to {sink.path} instead (dry run)."
        )
    if isinstance(sink, MemorySink):
        return (
            f"Supermemory at {sink.base_url} stored a test document ({session_id}-1) in "
            f"container {event.payload['memory_container']}."
        )
    return (
        f"{label} at {getattr(sink, 'host', '')} accepted the test event {event.id} "
        f"(step.completed, session {session_id})."
    )
