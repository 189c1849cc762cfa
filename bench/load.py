"""A small HTTP/1.1 load generator on asyncio, used when wrk is not installed.

Each connection runs requests back to back (closed loop), or at a fixed rate (open loop).
gunicorn's sync workers close the connection after each response, so every request opens a
new one on loopback, exactly as wrk does against them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

RequestFactory = Callable[[int], bytes | None]


@dataclass
class LoadResult:
    duration: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    completions: list[tuple[float, bytes]] = field(default_factory=list)

    def ok(self, *codes: int) -> int:
        return sum(self.statuses.get(code, 0) for code in codes)

    def rate(self, *codes: int) -> float:
        return self.ok(*codes) / self.duration

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")


def build_request(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """Return the bytes of one HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _one(host: str, port: int, payload: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def _closed_loop(
    host: str,
    port: int,
    connections: int,
    seconds: float,
    factory: RequestFactory,
    keep_bodies: bool,
) -> LoadResult:
    result = LoadResult(duration=seconds)
    deadline = time.perf_counter() + seconds

    async def connection(index: int) -> None:
        while time.perf_counter() < deadline:
            payload = factory(index)
            if payload is None:
                return
            started = time.perf_counter()
            try:
                status, body = await _one(host, port, payload)
            except OSError:
                result.errors += 1
                continue
            finished = time.perf_counter()
            result.latencies.append(finished - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if keep_bodies:
                result.completions.append((time.time(), body))

    started = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    result.duration = time.perf_counter() - started
    return result


async def _open_loop(
    host: str, port: int, rate: float, seconds: float, factory: RequestFactory
) -> LoadResult:
    result = LoadResult(duration=seconds)
    interval = 1.0 / rate
    tasks = []

    async def fire(index: int) -> None:
        payload = factory(index)
        if payload is None:
            return
        started = time.perf_counter()
        try:
            status, body = await _one(host, port, payload)
        except OSError:
            result.errors += 1
            return
        result.latencies.append(time.perf_counter() - started)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.completions.append((time.time(), body))

    begin = time.perf_counter()
    for index in range(int(rate * seconds)):
        delay = begin + index * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(index)))
    await asyncio.gather(*tasks)
    result.duration = time.perf_counter() - begin
    return result


def closed_loop(
    host: str,
    port: int,
    connections: int,
    seconds: float,
    factory: RequestFactory,
    *,
    keep_bodies: bool = False,
) -> LoadResult:
    """Run ``connections`` back-to-back request loops for ``seconds``."""
    return asyncio.run(_closed_loop(host, port, connections, seconds, factory, keep_bodies))


def open_loop(
    host: str, port: int, rate: float, seconds: float, factory: RequestFactory
) -> LoadResult:
    """Start requests at a steady ``rate`` per second for ``seconds``, whatever the latency."""
    return asyncio.run(_open_loop(host, port, rate, seconds, factory))


def wait_http(url: str, timeout: float = 30) -> None:
    """Wait until ``url`` answers; stop the bench if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"bench: {url} did not answer within {timeout:.0f} s")
