"""The fault proxy itself, against a tiny HTTP upstream running on the test's loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.faultproxy import FaultProxy, Mode

pytestmark = pytest.mark.anyio

BODY = b'{"status":"ok","padding":"' + b"x" * 40 + b'"}'


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fault = FaultProxy("127.0.0.1", port)
    # start()/close() block for a moment on the proxy's own thread; fine in a test.
    fault.start()
    try:
        yield fault
    finally:
        fault.close()
        server.close()


async def test_pass_through(proxy: FaultProxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.content == BODY
    assert proxy.stats.accepted == 1


async def test_latency_is_added(proxy: FaultProxy) -> None:
    proxy.set_mode(Mode.LATENCY, latency=0.3)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        started = time.monotonic()
        response = await client.get("/health")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


async def test_hang_never_answers_even_on_an_open_keepalive_connection(
    proxy: FaultProxy,
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=0.4) as client:
        assert (await client.get("/health")).status_code == 200
        proxy.set_mode(Mode.HANG)
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/health")
    proxy.set_mode(Mode.PASS)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        assert (await client.get("/health")).status_code == 200


async def test_drip_defeats_a_per_read_timeout(proxy: FaultProxy) -> None:
    """Each byte arrives well within the read timeout; the whole answer takes far longer."""
    proxy.set_mode(Mode.DRIP, drip_interval=0.01)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=0.25) as client:
        started = time.monotonic()
        response = await client.get("/health")
    elapsed = time.monotonic() - started
    assert response.content == BODY
    assert elapsed > 0.25 * 2


async def test_reset_aborts_connections(proxy: FaultProxy) -> None:
    proxy.set_mode(Mode.RESET)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get("/health")
    assert proxy.stats.resets >= 1


async def test_refuse_closes_the_listener_and_reopens_it(proxy: FaultProxy) -> None:
    port = proxy.port
    proxy.set_mode(Mode.REFUSE)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
    proxy.set_mode(Mode.PASS)
    assert proxy.port == port
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        assert (await client.get("/health")).status_code == 200


async def test_refuse_resets_live_connections(proxy: FaultProxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        assert (await client.get("/health")).status_code == 200
        proxy.set_mode(Mode.REFUSE)
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get("/health")


async def test_http_503_responder(proxy: FaultProxy) -> None:
    proxy.set_mode(Mode.HTTP_503)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=2) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["code"] == 503
    assert proxy.stats.answered_503 == 1
    assert proxy.stats.forwarded_chunks == 0


def test_usable_from_sync_code() -> None:
    """The proxy owns its loop, so a plain sync test can drive it with a sync client."""
    with FaultProxy("127.0.0.1", 9) as proxy:  # nothing listens on 9: a refused upstream
        proxy.set_mode(Mode.HTTP_503)
        response = httpx.get(proxy.url + "/x", timeout=2)
        assert response.status_code == 503
        proxy.set_mode(Mode.PASS)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(proxy.url + "/x", timeout=2)
