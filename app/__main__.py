"""``python -m app [--host HOST] [--port PORT]``: serve under uvicorn on HOST/PORT.

The flags override the HOST/PORT environment variables (Railway: ``--host ::`` so the
private IPv6 network reaches the service).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

import uvicorn

from app.main import create_app
from app.settings import ConfigurationError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app")
    parser.add_argument("--host", help="bind address (default: HOST, else 127.0.0.1)")
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
        from app.httpserver import bounded_protocol

        http: Any = bounded_protocol(
            max_header_count=settings.max_header_count,
            max_header_bytes=settings.max_header_bytes,
        )
    except ImportError:  # No httptools: h11, bounded by h11_max_incomplete_event_size.
        http = "h11"
    # uvicorn drains on SIGTERM, then re-raises it to the handler that was installed before
    # it. A no-op one here makes a drained shutdown a clean exit (0) instead of -SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        # Kong keeps idle upstream connections for 60 s; closing ours first causes 502s.
        timeout_keep_alive=settings.keepalive_seconds,
        timeout_graceful_shutdown=int(settings.shutdown_drain_seconds),
        # Proxy headers are handled in the app, from TRUSTED_PROXIES only.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        # Request heads are bounded (431) by the protocol; under h11 by this.
        http=http,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
