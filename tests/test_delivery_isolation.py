"""One event a sink chokes on fails alone: the other events of its call are delivered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from mentorflow.delivery.services import Claim, _call_sink
from mentorflow.delivery.sinks import DeliveryFailed, OutboundEvent


class ChokesOnOne:
    """A sink with a bug that shows on one event only, whatever batch it is in."""

    name = "choky"

    def __init__(self, bad: uuid.UUID) -> None:
        self.bad = bad
        self.delivered: list[uuid.UUID] = []

    def deliver_batch(self, events: list[OutboundEvent]) -> list[DeliveryFailed | None]:
        if any(event.id == self.bad for event in events):
            raise RuntimeError("<html>the reply of an internal host</html>")
        self.delivered += [event.id for event in events]
        return [None] * len(events)


def claim(seq: int) -> Claim:
    event = OutboundEvent(
        id=uuid.uuid4(),
        org="acme",
        type="step.completed",
        payload={"seq": seq},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return Claim(event=event, sink="choky", attempts=1, org_id=1, org_settings={})


def test_a_sink_crash_fails_only_the_event_at_fault() -> None:
    claims = [claim(seq) for seq in range(1, 5)]
    sink = ChokesOnOne(claims[2].event.id)

    outcomes = _call_sink(sink, claims)  # type: ignore[arg-type]

    assert sorted(sink.delivered) == sorted(c.event.id for c in claims if c is not claims[2])
    errors = {c.event.id: error for c, error, _ in outcomes}
    assert errors[claims[2].event.id] == "The choky sink failed (RuntimeError)."
    assert [errors[c.event.id] for c in claims if c is not claims[2]] == [None] * 3
