"""The wire under the gateway's HTTP client: every socket operation bound by the call's
deadline, and a trace of how far each call got (nothing sent, sent, answered), which the
gateway uses to tell the breaker whose fault a failure is."""

from __future__ import annotations

import contextvars
import ssl
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
    "install_trace_hooks",
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


class _DeadlineSocket(httpcore.NetworkStream):
    """Every read, write and TLS handshake gets at most the time left, so a peer that
    trickles bytes (headers or body) cannot keep the thread past the deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        trace = TRACE.get()
        if trace is not None:
            trace.sent = True
        self._inner.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
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
