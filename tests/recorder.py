"""A local HTTP server that stands in for PostHog and Supermemory and records what arrives.

The official clients talk to it over real HTTP, from this process or another one (a Celery
worker): point ``POSTHOG_HOST`` and ``SUPERMEMORY_BASE_URL`` at ``recorder.url``. It answers the
two paths the clients use as the services do, and can be scripted to fail::

    recorder.fail("/batch/", 500, times=2)   # two 500s, then normal answers
    recorder.fail("/ns/", 400)               # 400 forever

The root conftest lists this module in ``pytest_plugins``, which provides the ``recorder``
fixture; ``start_recorder()`` runs one outside pytest.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

POSTHOG_BATCH_PATH = "/batch/"
MEMORY_DOCUMENT_PREFIX = "/ns/"
#: Webhook receivers: any path under it takes POSTs (``recorder.url + "/hooks/<name>"``).
WEBHOOK_PREFIX = "/hooks/"
POSTHOG_PERSONS_PREFIX = "/api/projects/"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived, with the answer the recorder gave."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    status: int
    #: When the request arrived (wall clock, comparable with an event's commit time).
    received_at: float = field(default_factory=time.time)

    @property
    def accepted(self) -> bool:
        """Return whether the recorder answered with a 2xx status."""
        return 200 <= self.status < 300


@dataclass
class _Failure:
    path_prefix: str
    status: int
    remaining: int | None
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorder:
    """The server's state: every request received and the failures still scripted."""

    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _refused_documents: dict[str, str] = field(default_factory=dict)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def fail(
        self,
        path_prefix: str,
        status: int,
        *,
        times: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer requests under ``path_prefix`` with ``status``, ``times`` times or forever
        (``body`` and ``headers`` replace the usual error body, e.g. a redirect's Location)."""
        with self._lock:
            self._failures.append(_Failure(path_prefix, status, times, body, dict(headers or {})))

    def refuse_documents(self, ids: set[str], error: str) -> None:
        """Answer these documents of batch calls with ``status: error`` (the call itself is 200)."""
        with self._lock:
            self._refused_documents.update(dict.fromkeys(ids, error))

    def heal(self) -> None:
        """Drop every scripted failure."""
        with self._lock:
            self._failures.clear()

    def reset(self) -> None:
        """Forget recorded requests and scripted failures."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._refused_documents.clear()

    def posthog_events(self) -> list[dict[str, Any]]:
        """Return the events PostHog accepted, flattened from their batches, in arrival order."""
        events: list[dict[str, Any]] = []
        for request in self._accepted(POSTHOG_BATCH_PATH):
            body = request.body
            events.extend(body.get("batch", []) if isinstance(body, dict) else body)
        return events

    def memory_documents(self) -> list[dict[str, Any]]:
        """Return the documents Supermemory accepted, from single and batch calls: each
        document plus its ``namespace``."""
        documents = []
        for request in self._accepted(MEMORY_DOCUMENT_PREFIX):
            if request.method != "POST":
                continue
            namespace = _document_namespace(request.path)
            if namespace is not None:
                documents.append({"namespace": namespace, **request.body})
            namespace = _batch_namespace(request.path)
            if namespace is not None:
                documents += [
                    {"namespace": namespace, **document}
                    for document in request.body["documents"]
                    if document.get("id") not in self._refused_documents
                ]
        return documents

    def webhook_requests(self, path: str, *, accepted_only: bool = False) -> list[RecordedRequest]:
        """Return the requests made to the webhook receiver at ``path``, in arrival order."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and r.method == "POST" and (r.accepted or not accepted_only)
            ]

    def namespace_deletions(self) -> list[str]:
        """Return the Supermemory namespaces deleted (``DELETE /ns/{namespace}``), accepted."""
        return [
            unquote(r.path.split("/")[2])
            for r in self._accepted(MEMORY_DOCUMENT_PREFIX)
            if r.method == "DELETE" and len(r.path.split("/")) == 3
        ]

    def person_deletions(self) -> list[RecordedRequest]:
        """Return the accepted PostHog person deletions (``persons/bulk_delete``)."""
        return [
            r
            for r in self._accepted(POSTHOG_PERSONS_PREFIX)
            if r.path.endswith("/persons/bulk_delete/")
        ]

    def wait_for(self, condition: Callable[[Recorder], bool], timeout: float = 10.0) -> None:
        """Block until ``condition(recorder)`` holds; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    recent = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[-5:]]
                    pytest.fail(
                        f"recorder: condition not met in {timeout}s after "
                        f"{len(self.requests)} requests; the last: {recent}"
                    )
                self._lock.wait(remaining)

    def _accepted(self, path_prefix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.accepted and r.path.startswith(path_prefix)]

    def _scripted_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if path.startswith(failure.path_prefix) and failure.remaining != 0:
                    if failure.remaining is not None:
                        failure.remaining -= 1
                    return failure
            return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()


def _document_namespace(path: str) -> str | None:
    # POST /ns/{namespace}/document is the one call that adds a document.
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "ns" and parts[3] == "document":
        return unquote(parts[2])
    return None


def _batch_namespace(path: str) -> str | None:
    # POST /ns/{namespace}/document/batch adds up to 600 documents.
    parts = path.split("/")
    if len(parts) == 5 and parts[1] == "ns" and parts[3:] == ["document", "batch"]:
        return unquote(parts[2])
    return None


def _decode_body(raw: bytes, headers: dict[str, str]) -> Any:
    encoding = headers.get("content-encoding", "").lower()
    if encoding == "gzip":
        raw = gzip.decompress(raw)
    elif encoding == "deflate":
        raw = zlib.decompress(raw)
    if not raw:
        return None
    text = raw.decode("utf-8")
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        # Older PostHog clients post ``data=<json>`` as a form.
        form = parse_qs(text)
        return json.loads(form["data"][0]) if "data" in form else form
    try:
        return json.loads(text)
    except ValueError:
        return text


def _normal_answer(method: str, path: str, body: Any, refused: dict[str, str]) -> tuple[int, Any]:
    if method == "POST" and not isinstance(body, dict):
        # A truncated or unreadable body (a client killed mid-request): the real services
        # answer 400 and store nothing.
        return 400, {"error": "Bad request", "details": "the body is not a JSON object"}
    if path == POSTHOG_BATCH_PATH:
        return 200, {"status": 1}
    if method == "POST" and path.startswith(WEBHOOK_PREFIX):
        return 200, {"received": True}
    if method == "POST" and path.startswith(POSTHOG_PERSONS_PREFIX):
        return 202, {"deleted": len(body.get("distinct_ids") or [])}
    if method == "DELETE" and path.startswith(MEMORY_DOCUMENT_PREFIX) and path.count("/") == 2:
        namespace = unquote(path.split("/")[2])
        return 200, {"status": "deleted", "namespace": namespace, "deletedDocumentsCount": 1}
    if method == "POST" and _document_namespace(path) is not None:
        document_id = body.get("id") if isinstance(body, dict) else None
        return 200, {"id": document_id or uuid.uuid4().hex, "status": "queued"}
    if method == "POST" and _batch_namespace(path) is not None:
        results = []
        for document in body.get("documents") or []:
            document_id = document.get("id") or uuid.uuid4().hex
            if document_id in refused:
                results.append(
                    {"id": document_id, "status": "error", "error": refused[document_id]}
                )
            else:
                results.append({"id": document_id, "status": "queued"})
        failed = sum(result["status"] == "error" for result in results)
        return 200, {"results": results, "count": len(results) - failed, "failed": failed}
    return 404, {"error": "Not found", "details": f"the recorder does not serve {path}"}


def _failure_body(path: str, status: int) -> Any:
    if path.startswith(POSTHOG_BATCH_PATH):
        # The PostHog client reads ``detail`` into APIError.message.
        return {"type": "server_error", "code": "recorded_failure", "detail": f"status {status}"}
    return {"error": f"recorded failure {status}", "details": f"status {status} from the recorder"}


def _handler_for(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_PATCH(self) -> None:
            self._answer()

        def do_DELETE(self) -> None:
            self._answer()

        def _answer(self) -> None:
            split = urlsplit(self.path)
            headers = {name.lower(): value for name, value in self.headers.items()}
            raw = self.rfile.read(int(headers.get("content-length") or 0))
            body = _decode_body(raw, headers)
            failure = recorder._scripted_failure(split.path)
            extra_headers = failure.headers if failure is not None else {}
            if failure is not None:
                status = failure.status
                answer = (
                    failure.body if failure.body is not None else _failure_body(split.path, status)
                )
            else:
                with recorder._lock:
                    refused = dict(recorder._refused_documents)
                status, answer = _normal_answer(self.command, split.path, body, refused)
            recorder._record(
                RecordedRequest(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query),
                    headers=headers,
                    raw_body=raw,
                    body=body,
                    status=status,
                )
            )
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra_headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # Requests are recorded; printing them too would only clutter test output.
            pass

    return Handler


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True


def start_recorder() -> tuple[Recorder, RecordingServer]:
    """Start a recorder on a free port of 127.0.0.1 in a background thread."""
    recorder = Recorder()
    server = RecordingServer(("127.0.0.1", 0), _handler_for(recorder))
    host, port = server.server_address[:2]
    recorder.url = f"http://{host}:{port}"
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="recorder", daemon=True
    ).start()
    return recorder, server


class Dripper:
    """A host that takes every request and answers one byte every ``interval`` seconds,
    forever: a per-read timeout never trips on it, only a total deadline ends the call."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.url = ""
        self.requests = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        dripper = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with dripper._lock:
                    dripper.requests += 1
                reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                reply += b"Content-Length: 1000000\r\n\r\n" + b" " * 1000000
                for byte in reply:
                    if dripper._stopped.wait(dripper.interval):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the client hung up: the deadline did its work
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(name="dripper")
def dripper_fixture() -> Iterator[Dripper]:
    """Yield a running dripping host (a byte every 0.5 s); stop it after the test."""
    dripper = Dripper(0.5)
    server = RecordingServer(("127.0.0.1", 0), dripper.handler())
    host, port = server.server_address[:2]
    dripper.url = f"http://{host}:{port}"
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="dripper", daemon=True
    ).start()
    try:
        yield dripper
    finally:
        dripper._stopped.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(name="recorder")
def recorder_fixture() -> Iterator[Recorder]:
    """Yield a running recorder; stop it after the test."""
    recorder, server = start_recorder()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
