"""``python -m app [--host HOST] [--port PORT]``: serve under uvicorn on HOST/PORT.

The flags override the HOST/PORT environment variables (Railway: ``--host ::`` so the
private IPv6 network reaches the service).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

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
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
