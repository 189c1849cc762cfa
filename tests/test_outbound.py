"""The outbound guard: sinks reach only public addresses, follow no redirect, show no reply."""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mentorflow.delivery.sinks import DeliveryFailed, OutboundEvent, close_clients
from mentorflow.delivery.sinks.memory import MemorySink
from mentorflow.delivery.sinks.posthog import PostHogSink
from mentorflow.platform.outbound import (
    OutboundPolicy,
    OutboundRefused,
    address_refusal,
    check_url,
    vetted_addresses,
)
from recorder import Dripper, Recorder

PUBLIC_ONLY = OutboundPolicy(timeout=2)
LOCAL = OutboundPolicy(timeout=2, allow_private=True)

INSIDE = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "169.254.1.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
]


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    close_clients()


def make_event(seq: int = 1) -> OutboundEvent:
    payload: dict[str, Any] = {
        "org": "acme",
        "session_id": "s1",
        "distinct_id": "learner-1",
        "memory_container": "mentorflow-acme-s1",
        "seq": seq,
        "step_id": "step-1",
        "prompt": "Why?",
        "answer": "because",
    }
    return OutboundEvent(
        id=uuid.uuid4(),
        org="acme",
        type="step.completed",
        payload=payload,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("address", INSIDE)
def test_addresses_inside_the_network_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_allowing_private_sinks_still_refuses_metadata_addresses() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "::1"):
        assert address_refusal(ipaddress.ip_address(address), allow_private=True) is None
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert address_refusal(ipaddress.ip_address(address), allow_private=True) is not None


@pytest.mark.parametrize(
    "host", ["0x7f000001", "2130706433", "0177.0.0.1", "127.1", "[::1]", "localhost"]
)
def test_odd_spellings_of_loopback_resolve_and_are_refused(host: str) -> None:
    with pytest.raises(OutboundRefused, match="not a public one"):
        vetted_addresses(host, 80, 2, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://0x7f000001:6379",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://files.example/",
        "http://user:pass@api.example/",
    ],
)
def test_check_url_refuses_what_cannot_receive_events(url: str) -> None:
    with pytest.raises(OutboundRefused):
        check_url(url)


@pytest.mark.parametrize(
    "sink",
    [
        lambda url: PostHogSink("phc_x", url, policy=PUBLIC_ONLY),
        lambda url: MemorySink("sm_x", url, policy=PUBLIC_ONLY),
    ],
    ids=["posthog", "memory"],
)
@pytest.mark.parametrize("spelling", ["127.0.0.1", "0x7f000001", "2130706433", "localhost"])
def test_sinks_never_connect_inside(recorder: Recorder, sink: Any, spelling: str) -> None:
    port = recorder.url.rsplit(":", 1)[1]
    url = f"http://{spelling}:{port}"
    with pytest.raises(DeliveryFailed) as failed:
        sink(url).deliver(make_event())
    assert failed.value.message.endswith(
        f"at {url} was not called: its address is not a public one "
        "(loopback, private, link-local or reserved)."
    )
    assert failed.value.retryable is False
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("make_sink", "path"),
    [
        (lambda url: PostHogSink("phc_x", url, policy=LOCAL), "/batch/"),
        (lambda url: MemorySink("sm_x", url, policy=LOCAL), "/ns/"),
    ],
    ids=["posthog", "memory"],
)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_sinks_follow_no_redirect(recorder: Recorder, make_sink: Any, path: str, status: int):
    recorder.fail(path, status, headers={"Location": f"{recorder.url}/internal"})
    with pytest.raises(DeliveryFailed) as failed:
        make_sink(recorder.url).deliver(make_event())
    assert f"answered {status}: it answered with a redirect" in failed.value.message
    assert failed.value.retryable is False
    assert len(recorder.requests) == 1


def test_a_failure_carries_the_status_never_the_reply(recorder: Recorder) -> None:
    secret = "<html>internal admin page: db password hunter2</html>"
    recorder.fail("/", 400, body={"detail": secret, "error": secret, "details": secret})
    for sink in (
        PostHogSink("phc_x", recorder.url, policy=LOCAL),
        MemorySink("sm_x", recorder.url, policy=LOCAL),
    ):
        with pytest.raises(DeliveryFailed) as failed:
            sink.deliver(make_event())
        assert "answered 400 (the request was refused)." in failed.value.message
        assert "hunter2" not in failed.value.message


@pytest.mark.parametrize(
    "make_sink",
    [
        lambda url, policy: PostHogSink("phc_x", url, policy=policy),
        lambda url, policy: MemorySink("sm_x", url, policy=policy),
    ],
    ids=["posthog", "memory"],
)
def test_a_host_dripping_its_reply_is_cut_at_the_deadline(dripper: Dripper, make_sink: Any):
    # A byte every 0.5 s never trips the 1.5 s read timeout; the total deadline ends the call.
    sink = make_sink(dripper.url, OutboundPolicy(timeout=1.5, allow_private=True))
    events = [make_event(seq) for seq in (1, 2)]
    result: dict[str, Any] = {}
    call = threading.Thread(
        target=lambda: result.update(outcomes=sink.deliver_batch(events)), daemon=True
    )
    started = time.monotonic()
    call.start()
    call.join(10)
    assert not call.is_alive(), "the dripping host held the call for 10 s"
    assert time.monotonic() - started < 4
    for failure in result["outcomes"]:
        assert failure is not None and failure.retryable
        assert "did not finish within the deadline" in failure.message
    assert dripper.requests == 1


class KeepAliveHost:
    """A host that keeps connections alive and counts them; once ``drip`` is set, it answers
    one byte every 0.5 s."""

    def __init__(self) -> None:
        self.connections = 0
        self.drip = threading.Event()
        self.stopped = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                host.connections += 1

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = (
                    b'{"status": 1}'
                    if self.path.startswith("/batch")
                    else b'{"results": [], "count": 0, "failed": 0}'
                )
                if self.path.startswith("/ns/") and "batch" not in self.path:
                    body = b'{"id": "x", "status": "queued"}'
                head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                head += f"Content-Length: {len(body)}\r\n\r\n"
                reply = head.encode() + body
                if not host.drip.is_set():
                    self.wfile.write(reply)
                    return
                for byte in reply:
                    if host.stopped.wait(0.5):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "make_sink",
    [
        lambda url, policy: PostHogSink("phc_x", url, policy=policy),
        lambda url, policy: MemorySink("sm_x", url, policy=policy),
    ],
    ids=["posthog", "memory"],
)
def test_calls_reuse_a_kept_connection_and_its_deadline_still_cuts_it(make_sink: Any):
    # A connection per call cost a worker most of its deliveries per second; one kept alive
    # must still be cut by the deadline of whichever call uses it.
    host = KeepAliveHost()
    try:
        sink = make_sink(host.url, OutboundPolicy(timeout=1.5, allow_private=True))
        for seq in range(1, 6):
            assert sink.deliver(make_event(seq)) is None
        assert host.connections == 1
        host.drip.set()
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as failed:
            sink.deliver(make_event(9))
        assert time.monotonic() - started < 4
        assert failed.value.retryable
        assert host.connections == 1  # the dripping reply came on the kept connection
    finally:
        host.close()
