"""The one way out: every outbound HTTP call to a host an org chose goes through this guard.

An org admin picks the URL its events go to, so a call must not reach inside the platform's
network. The guard resolves the host itself when a connection opens (not only when the URL
is saved: DNS can change in between), connects only to an address it has checked, never
follows a redirect, and lets callers carry nothing of a refusal but a fixed reason. Inside
:func:`deadline`, a call also ends at a total deadline however slowly the host drips its
reply: the connections it uses are shut down when the deadline passes. A connection outlives
its call (kept alive, to the same peer the guard checked when it opened) and is handed to the
deadline of each call that uses it again. The official clients keep doing the HTTP:
``requests`` (PostHog) through :func:`requests_session`,
``httpx`` (Supermemory) through :func:`httpx_client`.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud instance-metadata addresses: refused even when private addresses are allowed.
CLOUD_METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)
#: IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

REFUSED_ADDRESS = "its address is not a public one (loopback, private, link-local or reserved)"
REFUSED_METADATA = "its address is a cloud metadata service"
REFUSED_REDIRECT = "it answered with a redirect, and redirects are never followed"
#: How long a save-time check waits for DNS; the connect-time check is the real guard.
_SAVE_TIME_RESOLVE_SECONDS = 2.0


class OutboundRefused(Exception):
    """The guard refused a call; ``reason`` is fixed text, never anything the host sent."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class OutboundPolicy:
    """What outbound calls may do: ``timeout`` bounds a call, ``allow_private`` lifts the
    address rule (development and tests only; metadata addresses stay refused)."""

    timeout: float = 10.0
    allow_private: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OutboundPolicy:
        """Return the policy of ``SINK_TIMEOUT`` and ``ALLOW_PRIVATE_SINKS``."""
        return cls(
            timeout=float(config.get("SINK_TIMEOUT") or 10.0),
            allow_private=bool(config.get("ALLOW_PRIVATE_SINKS")),
        )


#: Production's policy: public addresses only, the default sink timeout.
PUBLIC_ONLY = OutboundPolicy()


def address_refusal(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Return why a connection to ``address`` is refused, or None if it may be made."""
    candidates = [address, *_embedded_ipv4(address)]
    for candidate in candidates:
        if candidate in CLOUD_METADATA:
            return REFUSED_METADATA
    if allow_private:
        return None
    for candidate in candidates:
        if (
            not candidate.is_global
            or candidate.is_loopback
            or candidate.is_private
            or candidate.is_link_local
            or candidate.is_multicast
            or candidate.is_unspecified
            or candidate.is_reserved
        ):
            return REFUSED_ADDRESS
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = [address.ipv4_mapped, address.sixtofour]
    if address.teredo:
        embedded.append(address.teredo[1])
    if any(address in network for network in _NAT64):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    # ::a.b.c.d (IPv4-compatible, deprecated but still routed by some stacks)
    if int(address) >> 32 == 0 and int(address) > 0xFFFF:
        embedded.append(ipaddress.IPv4Address(int(address)))
    return [ip for ip in embedded if ip is not None]


def resolve(host: str, port: int, timeout: float | None) -> list[tuple[int, str]]:
    """Return ``(family, address)`` of ``host`` as a connection would resolve it.

    DNS waits at most ``timeout`` seconds (a resolver that never answers must not hold a
    call past its deadline): getaddrinfo can't be interrupted, so it runs in a thread of its
    own that is left to finish alone. Raise socket.gaierror or TimeoutError.
    """
    host = host.strip("[]")
    found: dict[str, Any] = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    resolver = threading.Thread(target=lookup, name="outbound-resolve", daemon=True)
    resolver.start()
    resolver.join(timeout)
    if resolver.is_alive():
        raise TimeoutError(f"resolving {host} took longer than {timeout} s")
    if "error" in found:
        raise found["error"]
    return [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in found["infos"]]


def vetted_addresses(
    host: str, port: int, timeout: float | None, *, allow_private: bool
) -> list[tuple[int, str]]:
    """Resolve ``host`` and return its addresses; raise OutboundRefused if any is refused.

    One refused address refuses the host: a name that answers both a public and a private
    address could otherwise be steered to the private one.
    """
    addresses = resolve(host, port, timeout)
    for _, address in addresses:
        reason = address_refusal(ipaddress.ip_address(address), allow_private=allow_private)
        if reason is not None:
            raise OutboundRefused(reason)
    return addresses


def check_url(url: str, *, allow_private: bool = False) -> None:
    """Check an org's sink URL when it is saved; raise OutboundRefused saying what is wrong.

    A host that does not resolve now is accepted (DNS may be down, or the name not yet
    published): the connect-time check refuses it later if it points inside.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise OutboundRefused("it is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused("it is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise OutboundRefused("it carries a user name or password")
    try:
        vetted_addresses(
            parts.hostname, port, _SAVE_TIME_RESOLVE_SECONDS, allow_private=allow_private
        )
    except OSError:
        return


class Deadline:
    """The total deadline of one call: every connection it uses is cut when it passes.

    A per-read timeout does not bound a call: a host that sends a byte every few seconds
    never trips it. So the guard keeps a duplicate of each socket the call uses (opened, or
    taken again from a client's pool of kept-alive connections), and at the deadline a
    watchdog shuts them all down; the blocked read returns at once, whatever the client
    library (TLS included: the duplicate shares the connection). A call that ends in time
    leaves its connections open for the next call to the same host, which adopts them into
    its own deadline; only the address check at connect time decided where they go.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._ended = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        """Return the seconds left; raise TimeoutError once none are."""
        left = self.ends - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError(f"the call's deadline of {self.seconds} s has passed")
        return left

    def adopt(self, sock: socket.socket) -> None:
        """Cut ``sock`` if the deadline passes before the call ends."""
        with self._lock:
            self._sockets.append(sock.dup())
            if self.expired:
                _cut(self._sockets[-1])

    def _expire(self) -> None:
        with self._lock:
            if self._ended:  # the call ended in time: its connections are another's now
                return
            self.expired = True
            for sock in self._sockets:
                _cut(sock)

    def _close(self) -> None:
        _WATCHDOG.forget(self)
        with self._lock:
            self._ended = True
            for sock in self._sockets:
                sock.close()  # the duplicate only: the connection stays open for reuse
            self._sockets.clear()


class _Watchdog:
    """One thread per process that expires deadlines (a timer thread per call cost a thread
    start per sink call)."""

    def __init__(self) -> None:
        self._reset()
        # A forked worker starts with no watchdog thread, and a lock the parent may have held.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, call: Deadline) -> None:
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="outbound-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (call.ends, id(call), call))
            self._condition.notify()

    def forget(self, call: Deadline) -> None:
        # Ended calls are dropped when their time comes (or sooner, when they are first).
        with self._condition:
            while self._heap and self._heap[0][2]._ended:
                heapq.heappop(self._heap)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                ends, _, call = self._heap[0]
                left = ends - time.monotonic()
                if left > 0:
                    self._condition.wait(left)
                    continue
                heapq.heappop(self._heap)
            call._expire()


_WATCHDOG = _Watchdog()


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_current_deadline: ContextVar[Deadline | None] = ContextVar("outbound_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every outbound call made in this block to ``seconds`` in total.

    A block inside another keeps the outer deadline: a sink that retries events one by one
    inside its batch call stays within the batch's deadline.
    """
    outer = _current_deadline.get()
    if outer is not None:
        yield outer
        return
    call = Deadline(seconds)
    token = _current_deadline.set(call)
    _WATCHDOG.watch(call)
    try:
        yield call
    finally:
        _current_deadline.reset(token)
        call._close()


def deadline_passed() -> bool:
    """Return whether the deadline of the current block has passed."""
    call = _current_deadline.get()
    return call is not None and call.expired


def _bounded(timeout: float | None) -> float | None:
    # A connection's own timeouts never reach past the call's deadline.
    call = _current_deadline.get()
    if call is None:
        return timeout
    left = call.remaining()
    return left if timeout is None else min(timeout, left)


class _KeptSocket:
    """A duplicate of a guarded connection's socket, kept for its life: each call that uses
    the connection hands it to its own deadline (once)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock.dup()  # TLS later takes the original over; this one stays plain
        self.deadline: Deadline | None = None

    def adopt(self) -> None:
        call = _current_deadline.get()
        if call is not None and call is not self.deadline:
            self.deadline = call
            call.adopt(self.sock)

    def close(self) -> None:
        self.sock.close()


def is_redirect(status: int) -> bool:
    """Return whether ``status`` asks the caller to go elsewhere."""
    return 300 <= status < 400


# requests (PostHog): a session whose connections open through the guard.


class _GuardedConnectionMixin:
    allow_private = False

    def _new_conn(self) -> socket.socket:
        conn: Any = self
        timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
        try:
            timeout = _bounded(timeout)
            addresses = vetted_addresses(
                conn._dns_host, conn.port, timeout, allow_private=self.allow_private
            )
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"Resolving {conn.host} timed out.") from exc
        error: OSError | None = None
        for _, address in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (address, conn.port),
                    timeout if timeout is not None else socket.getdefaulttimeout(),
                    source_address=conn.source_address,
                    socket_options=conn.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out.") from exc
            except OSError as exc:
                error = exc
            else:
                self._guard_kept = _KeptSocket(sock)
                self._guard_kept.adopt()
                return sock
        raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            kept = getattr(self, "_guard_kept", None)
            if kept is not None:
                self._guard_kept = None
                kept.close()


class _GuardedPoolMixin:
    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        kept = getattr(conn, "_guard_kept", None)
        if kept is not None and conn.sock is not None:
            kept.adopt()  # kept alive from an earlier call: this call's deadline cuts it
        return conn


@cache
def _pool_classes(allow_private: bool) -> dict[str, type[HTTPConnectionPool]]:
    http = type(
        "GuardedHTTPConnection",
        (_GuardedConnectionMixin, HTTPConnection),
        {"allow_private": allow_private},
    )
    https = type(
        "GuardedHTTPSConnection",
        (_GuardedConnectionMixin, HTTPSConnection),
        {"allow_private": allow_private},
    )
    return {
        "http": type(
            "GuardedHTTPConnectionPool",
            (_GuardedPoolMixin, HTTPConnectionPool),
            {"ConnectionCls": http},
        ),
        "https": type(
            "GuardedHTTPSConnectionPool",
            (_GuardedPoolMixin, HTTPSConnectionPool),
            {"ConnectionCls": https},
        ),
    }


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        # max_retries=0: the outbox's backoff retries, and counts the attempts.
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.allow_private)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = super().send(request, *args, **kwargs)
        if is_redirect(response.status_code):
            response.close()
            raise OutboundRefused(REFUSED_REDIRECT, status=response.status_code)
        return response


class _GuardedSession(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> None:
        # The adapter refuses redirects already; this is the second lock on that door.
        return None


def requests_session(policy: OutboundPolicy) -> requests.Session:
    """Return a new ``requests`` session that connects only through the guard."""
    session = _GuardedSession()
    # No proxy from the environment: the guard checks the host it connects to.
    session.trust_env = False
    session.max_redirects = 0
    adapter = _GuardedAdapter(policy.allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# httpx (Supermemory): a transport whose connections open through the guard.


class _GuardedBackend(httpcore.SyncBackend):
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            timeout = _bounded(timeout)
            addresses = vetted_addresses(host, port, timeout, allow_private=self.allow_private)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: Exception | None = None
        for _, address in addresses:
            try:
                stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                error = exc
            else:
                return _GuardedStream(stream, _KeptSocket(stream.get_extra_info("socket")))
        raise httpcore.ConnectError(str(error))


class _GuardedStream(httpcore.NetworkStream):
    """A connection of the guarded backend: each call that reads or writes on it hands it
    to its own deadline, whether the connection is new or kept alive from an earlier call."""

    def __init__(self, stream: httpcore.NetworkStream, kept: _KeptSocket) -> None:
        self._stream = stream
        self._kept = kept
        kept.adopt()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._kept.adopt()
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._kept.adopt()
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._kept.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout))
        return _GuardedStream(tls, self._kept)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, policy: OutboundPolicy) -> None:
        super().__init__()
        # The pool httpx builds, but with the guarded network backend (httpx has no
        # parameter for it; httpcore's ConnectionPool does).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=_GuardedBackend(policy.allow_private),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if is_redirect(response.status_code):
            response.close()
            raise OutboundRefused(REFUSED_REDIRECT, status=response.status_code)
        return response


def httpx_client(policy: OutboundPolicy) -> httpx.Client:
    """Return a new ``httpx`` client that connects only through the guard."""
    return httpx.Client(
        transport=_GuardedTransport(policy),
        timeout=policy.timeout,
        follow_redirects=False,
        trust_env=False,
    )
