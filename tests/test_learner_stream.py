"""A learner's stream against the real server (gunicorn, two workers), with Redis and without:
a state change made on one device reaches the learner's other device within a second, whichever
worker serves each."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from test_server import call
from test_stream import EventStream, live_server  # noqa: F401  (the fixture)


def write_state(base: str, token: str, state: dict, if_match: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}/v1/orgs/demo/learners/stream-user/state",
        data=json.dumps({"state": state}).encode(),
        method="PUT",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "If-Match": if_match,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def next_event(stream: EventStream, kind: str, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = stream.events.get(timeout=left)
        except Exception:
            return None
        if event is None:
            stream.events.put(None)
            return None
        if event.get("event") == kind:
            return json.loads(event["data"])
    return None


def test_a_state_change_reaches_the_other_device_within_a_second(live_server):  # noqa: F811
    _server, base, keys = live_server
    tokens = []
    for _ in range(2):
        status, minted = call(
            "POST", f"{base}/v1/orgs/demo/learners/stream-user/tokens", keys["sk"], {}
        )
        assert status == 201, minted
        tokens.append(minted["token"])
    phone, laptop = tokens
    _, current = call("GET", f"{base}/v1/orgs/demo/learners/stream-user/state", phone)
    version = current["version"]
    stream = EventStream(
        f"{base}/v1/orgs/demo/learners/stream-user/stream",
        headers={"Authorization": f"Bearer {laptop}"},
    )
    try:
        assert next_event(stream, "learner_state", 5)["version"] == version
        for round_number in range(3):  # a few rounds: the two workers take turns
            began = time.monotonic()
            state = {"round": round_number}
            status, written = write_state(base, phone, state, f'"{version}"')
            assert status == 200, written
            version = written["version"]
            pushed = next_event(stream, "learner_state", 1.0)
            assert pushed == {"state": state, "version": version}
            assert time.monotonic() - began < 1.0
    finally:
        stream.close()
