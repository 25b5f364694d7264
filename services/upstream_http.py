"""The gateway's HTTP client and the wire under it: every socket operation bound by the
call's deadline, one TLS context for every client, no cookie jar, and a trace of how far
each call got (nothing sent, sent, answered), which the gateway uses to tell the breaker
whose fault a failure is."""

from __future__ import annotations

import contextvars
import functools
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = [
    "DEADLINE",
    "TRACE",
    "DeadlineBackend",
    "Trace",
    "UpstreamDeadline",
    "build_client",
    "install_trace_hooks",
    "upstream_tls_context",
]

# The absolute (monotonic) time by which the current upstream call must be over. Set on the
# loop before the thread hop; anyio copies the context into the worker thread.
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("upstreamDEADLINE")


class Trace:
    """What one call did on the wire (shared with its worker thread through the context):
    whether it got as far as sending a request, wrote a byte, got an answer."""

    __slots__ = ("answered", "attempted", "response", "sent")

    def __init__(self) -> None:
        self.attempted = False  # httpx built the request and began sending it
        self.sent = False  # a byte was written to a socket
        self.answered = False  # a response head came back
        self.response: httpx.Response | None = None


TRACE: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("upstream_trace", default=None)


class UpstreamDeadline(httpx.TimeoutException):
    """The call's whole deadline passed while talking to the upstream."""


def _time_left(timeout: float | None) -> float:
    """``timeout`` cut to what is left of the current call's deadline."""
    deadline = DEADLINE.get(None)
    if deadline is None:
        return timeout if timeout is not None else float("inf")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamDeadline("the upstream call ran out of time")
    return remaining if timeout is None else min(timeout, remaining)


# Writes held back to go out with the next one (see _DeadlineSocket), up to this many bytes.
_COALESCE_BYTES = 64 * 1024


class _DeadlineSocket(httpcore.NetworkStream):
    """Every read, write and TLS handshake gets at most the time left, so a peer that
    trickles bytes (headers or body) cannot keep the thread past the deadline.

    Writes are coalesced until the stream is read: httpcore writes a request's head and its
    body separately, and two small segments cost the sender two system calls and the
    upstream (and every proxy on the way) two reads where one does. Nothing is held past
    the point where an answer is awaited, so nothing is delayed."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._pending = b""

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush(timeout)
        return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        trace = TRACE.get()
        if trace is not None:
            trace.sent = True
        if len(self._pending) + len(buffer) <= _COALESCE_BYTES:
            self._pending += buffer
            return
        self._flush(timeout)
        self._inner.write(buffer, _time_left(timeout))

    def _flush(self, timeout: float | None) -> None:
        if self._pending:
            pending, self._pending = self._pending, b""
            self._inner.write(pending, _time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self._flush(timeout)
        return _DeadlineSocket(
            self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking socket backend, bound by the current call's deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _time_left(timeout), local_address, socket_options
        )
        return _DeadlineSocket(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineSocket(
            self._inner.connect_unix_socket(path, _time_left(timeout), socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _saw_request(request: httpx.Request) -> None:
    trace = TRACE.get()
    if trace is not None:
        trace.attempted = True


def _saw_response(response: httpx.Response) -> None:
    trace = TRACE.get()
    if trace is not None:
        trace.answered = True
        trace.response = response


def install_trace_hooks(client: httpx.Client) -> None:
    hooks = client.event_hooks
    hooks.setdefault("request", []).append(_saw_request)
    hooks.setdefault("response", []).append(_saw_response)
    client.event_hooks = hooks


_TLS_LOCK = threading.Lock()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def upstream_tls_context() -> ssl.SSLContext:
    """One TLS context (certifi's roots, as httpx's default) for every upstream client and
    connection: building one reads the whole CA bundle, about 25 ms of CPU, which a client
    per worker thread, and httpcore's pool per new connection, would otherwise pay.

    Built once under a lock: the first burst after start-up opens its worker threads' clients
    all at once, and an unguarded cache let each of them build its own (16 CA-bundle reads
    at once made that burst's first answers 0.3 s slower). ``SupabaseGateway`` also builds
    it at start-up, so no request waits for it."""
    with _TLS_LOCK:
        return _tls_context()


def build_client(
    *,
    connections: int,
    connect_timeout: float,
    read_timeout: float | None,
    keepalive: float,
) -> httpx.Client:
    """An upstream HTTP client: HTTP/1.1, a pool of ``connections``, deadline-bound sockets.

    A connection idle for ``keepalive`` seconds is closed rather than reused. It must be
    shorter than the upstream's own idle timeout, by more than a request's time in
    transit: a server closes an idle connection without reading what is already on its
    way, and the call fails with "Server disconnected without sending a response"
    (a sign-in is never repeated, so that is a 503). 5 s is a common server default
    (uvicorn, Node.js, localauth) and 60 s a common proxy one."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=keepalive,
    )
    tls = upstream_tls_context()
    transport = httpx.HTTPTransport(limits=limits, http2=False, retries=0, verify=tls)
    # httpx takes no network backend, so its pool is rebuilt with the same limits over the
    # deadline-bound backend (httpcore's pool and backend are public API).
    transport._pool = httpcore.ConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        retries=0,
        network_backend=DeadlineBackend(),
        ssl_context=tls,
    )
    client = httpx.Client(
        transport=transport,
        # Reads and writes get the time left of the deadline (``_time_left``), never less;
        # the pool never waits (a connection per slot), its bound is a safety net.
        timeout=httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        ),
        follow_redirects=False,
    )
    # Supabase Auth's API is stateless (tokens, not cookies), and a client may carry many
    # users' calls: a cookie one answer set would go out with the next user's call. httpx
    # has no switch for that, so its jar is replaced by one that keeps nothing (which also
    # spares parsing every answer's headers for cookies).
    client._cookies = _NoCookies()
    return client


class _NoCookies(httpx.Cookies):
    """A cookie jar that never stores a cookie."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None
