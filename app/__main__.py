"""``python -m app``: serve under uvicorn on HOST/PORT."""

from __future__ import annotations

import os
import sys

import uvicorn

from app.main import create_app
from app.settings import ConfigurationError, Settings


def main() -> int:
    try:
        settings = Settings.from_environ(os.environ)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    app = create_app(settings)
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
