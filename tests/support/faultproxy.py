"""A fault-injecting TCP proxy for the regression suite.

``FaultProxy`` listens on 127.0.0.1 and forwards to an upstream (localauth). It runs its
own asyncio event loop on its own daemon thread, so sync tests and async tests (whose loop
it never touches) can both drive it; every control method is thread-safe and returns once
the change is in force.

Modes (``proxy.set_mode(Mode.X, ...)``), read for every chunk a client sends, so they apply
to keep-alive connections that already exist as well as to new ones:

- ``PASS``: forward both ways.
- ``LATENCY``: wait ``latency`` seconds before forwarding each client chunk.
- ``HANG``: accept and read, never forward, never answer (the socket stays open).
- ``DRIP``: forward the request; send the upstream's answer back one byte every
  ``drip_interval`` seconds.
- ``RESET``: abort the connection with a TCP RST (SO_LINGER 0) as soon as a client sends.
- ``REFUSE``: the listener is closed (connects get ECONNREFUSED) and live connections are
  reset; leaving the mode opens the listener again on the same port.
- ``HTTP_503``: answer every request with ``503 Service Unavailable`` (JSON body,
  ``Connection: close``) without contacting the upstream.

Switching to ``RESET`` or ``REFUSE`` also resets every connection already open, and
switching to ``HANG`` stops the answers still flowing back, so the change is immediate.

    with FaultProxy("127.0.0.1", upstream_port) as proxy:
        env["SUPABASE_URL"] = proxy.url
        proxy.set_mode(Mode.HANG)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

T = TypeVar("T")

_CHUNK = 65536
_503_BODY = b'{"code":503,"error_code":"unavailable","msg":"injected by FaultProxy"}'
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_503_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _503_BODY
)


class Mode(enum.Enum):
    PASS = "pass"
    LATENCY = "latency"
    HANG = "hang"
    DRIP = "drip"
    RESET = "reset"
    REFUSE = "refuse"
    HTTP_503 = "http_503"


@dataclass
class ProxyStats:
    accepted: int = 0
    forwarded_chunks: int = 0
    resets: int = 0
    answered_503: int = 0
    open_connections: int = 0


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    def __init__(
        self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.back: asyncio.Task[None] | None = None

    def reset(self) -> None:
        self.proxy.stats.resets += 1
        _abort(self.writer)
        if self.upstream_writer is not None:
            _abort(self.upstream_writer)

    async def run(self) -> None:
        try:
            while True:
                data = await self.reader.read(_CHUNK)
                if not data:
                    return
                mode = self.proxy.mode
                if mode is Mode.HANG:
                    continue
                if mode in (Mode.RESET, Mode.REFUSE):
                    self.reset()
                    return
                if mode is Mode.HTTP_503:
                    self.proxy.stats.answered_503 += 1
                    self.writer.write(_503)
                    await self.writer.drain()
                    return
                if mode is Mode.LATENCY:
                    await asyncio.sleep(self.proxy.latency)
                if self.upstream_writer is None:
                    upstream_reader, self.upstream_writer = await asyncio.open_connection(
                        self.proxy.upstream_host, self.proxy.upstream_port
                    )
                    self.back = asyncio.create_task(self._pump_back(upstream_reader))
                self.proxy.stats.forwarded_chunks += 1
                self.upstream_writer.write(data)
                await self.upstream_writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            if self.back is not None:
                self.back.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await self.back
            if self.upstream_writer is not None:
                self.upstream_writer.close()
            self.writer.close()

    async def _pump_back(self, upstream: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await upstream.read(_CHUNK)
                if not data:
                    self.writer.close()
                    return
                while data:
                    mode = self.proxy.mode
                    if mode is Mode.HANG:
                        await asyncio.sleep(0.05)
                        continue
                    if mode is Mode.DRIP:
                        self.writer.write(data[:1])
                        data = data[1:]
                        await self.writer.drain()
                        await asyncio.sleep(self.proxy.drip_interval)
                        continue
                    self.writer.write(data)
                    data = b""
                    await self.writer.drain()
        except OSError:
            return


class FaultProxy:
    """See the module docstring. Use as a context manager, or ``start()`` / ``close()``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode = Mode.PASS
        self.latency = 0.0
        self.drip_interval = 1.0
        self.stats = ProxyStats()
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- control ----------------------------------------------------------------------

    def set_mode(
        self,
        mode: Mode,
        *,
        latency: float | None = None,
        drip_interval: float | None = None,
    ) -> None:
        """Switch the fault; returns when it is in force (listener closed or reopened)."""
        self._run(self._switch(mode, latency, drip_interval))

    def reset_connections(self) -> int:
        """RST every open connection; returns how many there were."""
        return self._run(self._reset_all())

    # -- inside the proxy's loop ------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _switch(self, mode: Mode, latency: float | None, drip: float | None) -> None:
        if latency is not None:
            self.latency = latency
        if drip is not None:
            self.drip_interval = drip
        previous, self.mode = self.mode, mode
        if mode is Mode.REFUSE and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if mode in (Mode.RESET, Mode.REFUSE):
            await self._reset_all()
        if previous is Mode.REFUSE and mode is not Mode.REFUSE:
            await self._listen()

    async def _reset_all(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            connection.reset()
        return len(connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self.mode is Mode.REFUSE:
            _abort(writer)
            return
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        self.stats.open_connections = len(self._connections)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            self.stats.open_connections = len(self._connections)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._reset_all()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
