"""``python -m app [--host HOST] [--port PORT]``: serve under uvicorn on HOST/PORT.

The flags override the HOST/PORT environment variables. ``--host ::`` (Railway's start
command) listens dual-stack: one socket that accepts IPv6 and IPv4 on the same port, so the
private network reaches the service whether its name resolves to an IPv6 or an IPv4
address (see ``listening_socket``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

import structlog
import uvicorn

from app.main import create_app
from app.settings import ConfigurationError, Settings

# The wildcard addresses that mean "every IPv6 and IPv4 address of this host".
DUAL_STACK_HOSTS = frozenset({"::", "[::]"})
# uvicorn exits with 3 when it cannot start (lifespan failure); so do we.
STARTUP_FAILURE = 3

log = structlog.get_logger("app.serve")


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host``/``port``, not yet listening (uvicorn listens).

    For ``::`` the socket is IPv6 with ``IPV6_V6ONLY`` cleared, so IPv4 clients connect
    too (they appear as ``::ffff:a.b.c.d``; ``app.forwarded`` folds that back to
    ``a.b.c.d``). asyncio's own ``create_server`` would set ``IPV6_V6ONLY`` and refuse
    IPv4, which is why the socket is made here and handed to uvicorn. On a host without
    IPv6 it falls back to ``0.0.0.0`` rather than failing to start.
    """
    if host in DUAL_STACK_HOSTS:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            log.warning("ipv6_unavailable", fallback="0.0.0.0")
            return listening_socket("0.0.0.0", port)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            sock.close()
            raise
        return sock
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value}
    try:
        settings = Settings.from_environ(os.environ, **overrides)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    app = create_app(settings)
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"cannot listen on {settings.host} port {settings.port}: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    config = uvicorn.Config(
        app,
        # Only for uvicorn's messages: the socket above decides where it listens.
        host=settings.host,
        port=sock.getsockname()[1],
        # Kong keeps idle upstream connections for 60 s; closing ours first causes 502s.
        timeout_keep_alive=settings.keepalive_seconds,
        timeout_graceful_shutdown=int(settings.shutdown_drain_seconds),
        # Proxy headers are handled in the app (app.forwarded), from TRUSTED_PROXIES only.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
    )
    server = uvicorn.Server(config)
    log.info(
        "listening",
        address=sock.getsockname()[0],
        port=config.port,
        dual_stack=sock.family == socket.AF_INET6 and settings.host in DUAL_STACK_HOSTS,
    )
    # uvicorn drains on SIGTERM, then re-raises it to the handler that was installed before
    # it. A no-op one here makes a drained shutdown a clean exit (0) instead of -SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
