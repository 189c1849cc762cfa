"""A local stand-in for PostHog, Supermemory and a webhook receiver that notes when each
event arrives.

Run as a process: ``python bench/sink.py PORT``. ``GET /arrivals`` returns
``{"posthog": {uuid: unix_time}, "memory": {document_id: unix_time}, "webhook":
{webhook_id: unix_time}}`` (first arrival); ``GET /connections`` returns how many
connections were opened to it and how many requests they carried (kept-alive connections
carry many).
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

arrivals: dict[str, dict[str, float]] = {"posthog": {}, "memory": {}, "webhook": {}}
counts = {"connections": 0, "requests": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with lock:
            counts["connections"] += 1

    def do_GET(self) -> None:
        with lock:
            body = json.dumps(counts if self.path == "/connections" else arrivals).encode()
        self._send(200, body)

    def do_POST(self) -> None:
        now = time.time()
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw or b"{}")
        with lock:
            counts["requests"] += 1
            if self.path.startswith("/webhook"):
                arrivals["webhook"].setdefault(self.headers.get("webhook-id", ""), now)
                answer = b"{}"
            elif self.path.startswith("/batch"):
                for event in body.get("batch", []):
                    arrivals["posthog"].setdefault(event["uuid"], now)
                answer = b'{"status": 1}'
            elif self.path.endswith("/document/batch"):
                results = []
                for document in body.get("documents", []):
                    arrivals["memory"].setdefault(document.get("id", ""), now)
                    results.append({"id": document.get("id"), "status": "queued"})
                answer = json.dumps(
                    {"results": results, "count": len(results), "failed": 0}
                ).encode()
            else:
                arrivals["memory"].setdefault(body.get("id", ""), now)
                answer = json.dumps({"id": body.get("id"), "status": "queued"}).encode()
        self._send(200, answer)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
