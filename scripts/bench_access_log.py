"""What the access log costs per request at the edge, without network noise.

    uv run python -m scripts.bench_access_log [--rounds 30] [--requests 5000]

Runs ``app.middleware.EdgeMiddleware`` in process around a trivial app, with the access log
on and off, logging configured as in production (JSON, level info) and written to a
temporary file; prints the fastest round of each (the least disturbed by other load), in
microseconds per request. A wrk run (scripts/bench_hotpath.py) measures the whole /me path
but swings by tens of percent on a shared machine; this isolates the one line per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from typing import Any

from starlette.types import Message, Scope


class _Route:
    path = "/api/v1/auth/me"


class _Claims:
    sub = "2721b53c-f954-4e29-a250-a75dcaeb1119"


class _Auth:
    claims = _Claims()


async def _inner(scope: Scope, receive: Any, send: Any) -> None:
    scope["route"] = _Route
    scope["state"]["auth"] = _Auth()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _send(message: Message) -> None:
    return None


async def _receive() -> Message:
    return {"type": "http.request"}


def _scope() -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/auth/me",
        "headers": [(b"host", b"x"), (b"authorization", b"Bearer x")],
        "client": ("203.0.113.7", 50000),
    }


async def _round(app: Any, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await app(_scope(), _receive, _send)
    return (time.perf_counter() - started) / requests * 1e6


async def _main(rounds: int, requests: int) -> tuple[float, float]:
    from app.edgeguard import EdgeGuard
    from app.middleware import EdgeMiddleware, ProxyFit

    proxy = ProxyFit([])
    guard = EdgeGuard(allowed_hosts=[], max_header_count=100, max_header_bytes=32768)
    on = EdgeMiddleware(_inner, proxy=proxy, guard=guard, access_log=True)
    off = EdgeMiddleware(_inner, proxy=proxy, guard=guard, access_log=False)
    with_log, without = [], []
    for _ in range(rounds):
        with_log.append(await _round(on, requests))
        without.append(await _round(off, requests))
    return min(with_log), min(without)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    real_stdout = sys.stdout
    with tempfile.TemporaryFile("w+") as sink:
        sys.stdout = sink
        try:
            from app.logging import configure_logging

            configure_logging(level="info", json=True)
            on, off = asyncio.run(_main(args.rounds, args.requests))
        finally:
            sys.stdout = real_stdout
    print(f"edge middleware, access log on:  {on:6.1f} us/request")
    print(f"edge middleware, access log off: {off:6.1f} us/request")
    print(f"the access line costs:           {on - off:6.1f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
