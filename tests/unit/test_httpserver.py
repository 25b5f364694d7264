"""The HTTP protocol's transport (app.httpserver): the writes of one event-loop pass are
sent together, in order, and nothing is held past that pass or a close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.httpserver import CoalescingTransport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


class Recording:
    """A transport that records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True


def coalescing() -> tuple[CoalescingTransport, Recording]:
    real = Recording()
    transport: Any = real
    return CoalescingTransport(transport, asyncio.get_running_loop()), real


async def test_a_head_and_its_body_reach_the_socket_in_one_write() -> None:
    transport, real = coalescing()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_a_lone_write_is_sent_at_the_end_of_the_pass() -> None:
    transport, real = coalescing()
    transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert real.writes == []
    await asyncio.sleep(0)  # the end of this pass of the event loop
    assert real.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    # A streamed body's later chunks follow in order.
    transport.write(b"2\r\nab\r\n")
    transport.write(b"0\r\n\r\n")
    transport.write(b"next head")
    await asyncio.sleep(0)
    assert b"".join(real.writes).endswith(b"2\r\nab\r\n0\r\n\r\nnext head")


async def test_close_sends_what_is_held_first() -> None:
    transport, real = coalescing()
    transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
    transport.close()
    assert real.writes == [b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"]
    assert real.closed
    assert transport.is_closing()
    await asyncio.sleep(0)  # the pass-end flush finds nothing left to send
    assert len(real.writes) == 1


async def test_the_rest_of_the_transport_is_the_real_one() -> None:
    transport, real = coalescing()
    transport.pause_reading()
    assert real.paused
