"""The uvicorn HTTP protocol this service runs: a bounded request head, one write per answer.

uvicorn's default parser (httptools) buffers a request head of any size: a client can send
megabytes of headers and the process holds them all before the app sees a byte. The
protocol here counts the head while it arrives and, past ``max_header_bytes`` bytes or
``max_header_count`` headers, answers ``431`` as ``application/problem+json`` and closes
the connection. The edge middleware (``app.edgeguard``) applies the same limits to the
parsed head for any other ASGI server. Under ``--http h11`` uvicorn's own
``h11_max_incomplete_event_size`` bounds the head instead (``app.__main__`` sets it).

uvicorn writes a response's head and its body to the socket separately: two ``send``
system calls (and, with ``TCP_NODELAY``, two segments) for every answer of one body, which
is every answer this service gives. The protocol's transport here holds a write until the
next one or the end of the event loop's current pass, whichever comes first, and sends
what it holds in one call: one system call per answer, never a delay past the pass that
produced the bytes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.logging import new_request_id
from app.problems import PROBLEM_TYPE_BASE


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools reports it as a parser error."""


def problem_431(max_count: int, max_bytes: int) -> bytes:
    body = json.dumps(
        {
            "type": PROBLEM_TYPE_BASE + "headers_too_large",
            "title": "Request header fields too large",
            "status": 431,
            "detail": f"At most {max_count} headers and {max_bytes} bytes of request line "
            "and headers are accepted.",
            "code": "headers_too_large",
            "request_id": new_request_id(),
        }
    ).encode()
    return b"".join(
        [
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            b"content-type: application/problem+json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class CoalescingTransport:
    """A connection's transport that sends the writes of one event-loop pass together.

    A write is held until the next write (sent with it, in one call) or the end of the pass
    (``call_soon``), and before the connection is closed; order is kept because every write
    of the connection passes through here. Everything else is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._loop = loop

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # The rest of the transport API (pause_reading, get_extra_info, set_protocol, ...).
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_header_count = 100
    max_header_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = False
        self._head_bytes = 0  # bytes received while the current head is incomplete
        self._head_refused = False
        # At most this many bytes can be the head that completes in the chunk being parsed.
        self._head_bound = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Flow control (set up above) keeps the real transport; writes go through this.
        self.transport = CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        continued = self._head_open
        if continued:
            # Everything that arrives while a head is incomplete is head (a pipelined body
            # tail may be counted too; the limit is far above any real head).
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse()
                return
        # A head continued here was counted in ``_head_bytes`` above; one that begins
        # here is at most this chunk.
        self._head_bound = self._head_bytes if continued else len(data)
        super().data_received(data)
        if not continued and self._head_open and not self._head_refused:
            # A head began in this chunk and is still incomplete.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        # The parsed head, counted once it is complete (a head that took several segments
        # was already bounded while it arrived, by ``data_received``). Its bytes are only
        # added up when the bytes it came in could exceed the limit: a head that arrived
        # within fewer bytes than the limit is within it (every ordinary request).
        self._head_open = False
        headers = self.headers
        if len(headers) > self.max_header_count or (
            self._head_bound > self.max_header_bytes
            and len(self.url) + sum(len(n) + len(v) + 4 for n, v in headers) > self.max_header_bytes
        ):
            self._head_refused = True
            raise _HeadTooLarge
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # A parser error raised by our own callbacks is the head limit, not bad syntax.
        if self._head_refused:
            self._refuse()
            return
        super().send_400_response(msg)

    def _refuse(self) -> None:
        self._head_refused = True
        self._head_open = False
        if not self.transport.is_closing():
            self.logger.warning("Request head over the limit; answered 431.")
            self.transport.write(problem_431(self.max_header_count, self.max_header_bytes))
            self.transport.close()


def bounded_protocol(*, max_header_count: int, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """A protocol class with these limits (uvicorn takes a class for ``http``)."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_header_count": max_header_count, "max_header_bytes": max_header_bytes},
    )
