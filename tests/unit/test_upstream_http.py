"""The upstream stream sends a request in as few writes as it can, and never holds back a
byte once an answer is awaited."""

from __future__ import annotations

from typing import Any

import httpcore
import httpx
import pytest

from services.upstream_http import DeadlineBackend

pytestmark = pytest.mark.timeout(10)


class Wire(httpcore.NetworkStream):
    """A stream that records each write and answers one fixed response."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self._answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self.writes.append(buffer)
            self.events.append("write")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.events.append("read")
        answer, self._answer = self._answer, b""
        return answer

    def close(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return None


class WireBackend(httpcore.NetworkBackend):
    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return self.wire


def _backend(wire: Wire) -> DeadlineBackend:
    backend = DeadlineBackend()
    backend._inner = WireBackend(wire)  # type: ignore[assignment]
    return backend


def _post(wire: Wire, body: bytes) -> httpx.Response:
    pool = httpcore.ConnectionPool(network_backend=_backend(wire))
    transport = httpx.HTTPTransport()
    transport._pool = pool
    with httpx.Client(transport=transport) as client:
        return client.post("http://upstream.test/token", content=body)


def test_a_request_head_and_body_leave_in_one_write_before_the_answer_is_read() -> None:
    wire = Wire()
    response = _post(wire, b'{"email":"a@example.com","password":"pw"}')
    assert response.text == "ok"
    assert len(wire.writes) == 1
    assert wire.writes[0].startswith(b"POST /token HTTP/1.1\r\n")
    assert wire.writes[0].endswith(b'"password":"pw"}')
    assert wire.events[:2] == ["write", "read"]


def test_a_large_body_is_not_held_in_memory_whole() -> None:
    wire = Wire()
    body = b"x" * 300_000
    assert _post(wire, body).text == "ok"
    assert b"".join(wire.writes).endswith(body)
    assert max(len(w) for w in wire.writes) <= 300_000
    assert len(wire.writes) >= 2
    assert wire.events[-1] == "read"


def test_worker_threads_starting_together_build_one_tls_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl
    import threading
    import time

    from services import upstream_http

    built: list[ssl.SSLContext] = []

    def slow_context() -> ssl.SSLContext:
        time.sleep(0.05)  # reading a CA bundle takes a while; the others arrive meanwhile
        built.append(ssl.create_default_context())
        return built[-1]

    upstream_http._tls_context.cache_clear()
    monkeypatch.setattr(httpx, "create_ssl_context", slow_context)
    start = threading.Barrier(16)
    seen: list[ssl.SSLContext] = []

    def first_call() -> None:
        start.wait()
        seen.append(upstream_http.upstream_tls_context())

    threads = [threading.Thread(target=first_call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    upstream_http._tls_context.cache_clear()  # the next caller builds a real one
    assert len(built) == 1
    assert len(seen) == 16
    assert all(context is built[0] for context in seen)
