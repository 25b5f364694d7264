"""``python -m app [--host HOST] [--port PORT]``: serve under uvicorn on HOST/PORT.

The flags override the HOST/PORT environment variables. ``--host ::`` (Railway's start
command) listens dual-stack: one socket that accepts IPv6 and IPv4 on the same port, so the
private network reaches the service whether its name resolves to an IPv6 or an IPv4
address (see ``listening_sockets``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

import structlog
import uvicorn

from app.main import create_app
from app.settings import ConfigurationError, Settings
from app.workers import fork_workers

# The wildcard addresses that mean "every IPv6 and IPv4 address of this host".
DUAL_STACK_HOSTS = frozenset({"::", "[::]"})
# uvicorn exits with 3 when it cannot start (lifespan failure); so do we.
STARTUP_FAILURE = 3

log = structlog.get_logger("app.serve")


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound TCP sockets for ``host``/``port``, not yet listening (uvicorn listens).

    For ``::`` one IPv6 socket with ``IPV6_V6ONLY`` cleared, so IPv4 clients connect too
    (they appear as ``::ffff:a.b.c.d``; ``app.forwarded`` folds that back to ``a.b.c.d``).
    asyncio's own ``create_server`` would set ``IPV6_V6ONLY`` and refuse IPv4, which is why
    the sockets are made here and handed to uvicorn. On a host without IPv6 it falls back
    to ``0.0.0.0`` rather than failing to start. Any other host gets one socket per address
    it resolves to (``localhost``: 127.0.0.1 and ::1), as asyncio would bind them.
    """
    if host in DUAL_STACK_HOSTS:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            log.warning("ipv6_unavailable", fallback="0.0.0.0")
            return listening_sockets("0.0.0.0", port)
        return [_bind(sock, ("::", port), v6only=False)]
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(_bind(sock, address, v6only=True))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(sock: socket.socket, address: Any, *, v6only: bool) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app")
    parser.add_argument(
        "--host", help="bind address (default: HOST, else 127.0.0.1); :: = IPv6 and IPv4"
    )
    parser.add_argument("--port", type=int, help="port (default: PORT, else 8000)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (default: WEB_CONCURRENCY, else 1)"
    )
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value}
    try:
        settings = Settings.from_environ(os.environ, **overrides)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        from app.httpserver import bounded_protocol

        http: Any = bounded_protocol(
            max_header_count=settings.max_header_count,
            max_header_bytes=settings.max_header_bytes,
        )
    except ImportError:  # No httptools: h11, bounded by h11_max_incomplete_event_size.
        http = "h11"
    # Under the bounded protocol the server enforces the header limits; under h11 the app.
    app = create_app(settings, heads_bounded=http != "h11")
    try:
        sockets = listening_sockets(settings.host, settings.port)
    except OSError as exc:
        print(f"cannot listen on {settings.host} port {settings.port}: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    workers = args.workers or settings.web_concurrency
    if workers > 1:
        fork_workers(workers)  # returns only in a worker process (app.workers)
    config = uvicorn.Config(
        app,
        # Only for uvicorn's messages: the sockets above decide where it listens.
        host=settings.host,
        port=sockets[0].getsockname()[1],
        # Kong keeps idle upstream connections for 60 s; closing ours first causes 502s.
        timeout_keep_alive=settings.keepalive_seconds,
        timeout_graceful_shutdown=int(settings.shutdown_drain_seconds),
        # Proxy headers are handled in the app (app.forwarded), from TRUSTED_PROXIES only.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        # Request heads are bounded (431) by the protocol; under h11 by this.
        http=http,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    server = uvicorn.Server(config)
    log.info(
        "listening",
        addresses=[sock.getsockname()[0] for sock in sockets],
        port=config.port,
        dual_stack=settings.host in DUAL_STACK_HOSTS and sockets[0].family == socket.AF_INET6,
    )
    # uvicorn drains on SIGTERM, then re-raises it to the handler that was installed before
    # it. A no-op one here makes a drained shutdown a clean exit (0) instead of -SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
