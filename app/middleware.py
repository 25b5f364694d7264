"""Pure ASGI middleware for the edge: request ids, proxy headers, metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) because every layer here runs on the hot path.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Sequence

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from services import metrics

REQUEST_ID_HEADERS = (b"kong-request-id", b"x-kong-request-id", b"x-request-id")
_MAX_REQUEST_ID = 128


class RequestIdMiddleware:
    """Takes the gateway's request id (or makes one), logs with it, and returns it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(header)
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        await self.app(scope, receive, send_with_id)
        # Only on a normal return: an exception still has to reach the outermost error
        # handler, whose log line must carry the id too. uvicorn runs each request in its
        # own task (its own context), so nothing leaks into the next request.
        structlog.contextvars.unbind_contextvars("request_id")


def _incoming_id(scope: Scope) -> str | None:
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in REQUEST_ID_HEADERS:
            found[name] = value
    for name in REQUEST_ID_HEADERS:
        value = found.get(name)
        if value:
            text = value.decode("latin-1")[:_MAX_REQUEST_ID]
            if text.isprintable():
                return text
    return None


class ProxyFitMiddleware:
    """Honours ``X-Forwarded-For/-Proto/-Prefix`` only from trusted proxies (Kong)."""

    def __init__(
        self, app: ASGIApp, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> None:
        self.app = app
        self.trusted = tuple(trusted)
        hosts = [str(net) for net in self.trusted]
        self.forwarded = ProxyHeadersMiddleware(app, trusted_hosts=hosts) if hosts else None  # type: ignore[arg-type]

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if (
            self.forwarded is None
            or scope["type"] == "lifespan"
            or not client
            or not self._is_trusted(client[0])
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"x-forwarded-prefix":
                prefix = value.decode("latin-1").strip().rstrip("/")
                if prefix.startswith("/") and prefix.isprintable():
                    # ASGI: ``path`` includes ``root_path``; Starlette routes on the rest.
                    # Kong stripped the prefix, so put it back in front of both.
                    scope["root_path"] = scope.get("root_path", "") + prefix
                    scope["path"] = prefix + scope["path"]
                    if scope.get("raw_path") is not None:
                        scope["raw_path"] = prefix.encode("latin-1") + scope["raw_path"]
                break
        await self.forwarded(scope, receive, send)  # type: ignore[arg-type]


class MetricsMiddleware:
    """Request count and latency by route template (never the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            metrics.REQUESTS.labels(template, method, str(status)).inc()
            metrics.REQUEST_LATENCY.labels(template, method).observe(time.perf_counter() - started)
