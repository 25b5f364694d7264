"""Pure ASGI middleware for the edge: proxy headers, request ids, metrics, the access log.

Pure ASGI (not ``BaseHTTPMiddleware``) because every layer here runs on the hot path.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Sequence

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.forwarded import (
    ProxyTrust,
    address_text,
    forwarded_entries,
    forwarded_prefix,
    forwarded_scheme,
    parse_address,
)
from app.logging import REQUEST_ID, access_logger
from services import metrics

# Kong's own id first: Kong (>= 3.5, ``headers_upstream = X-Kong-Request-Id``) overwrites
# it on every request and prints it in its own access and error logs, so one id joins both
# logs. Kong's correlation-id plugin header is not read: that plugin keeps a client's value.
REQUEST_ID_HEADERS = (b"x-kong-request-id", b"x-request-id")
_MAX_REQUEST_ID = 128


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
    """The client address, scheme and path prefix as the client used them.

    ``X-Forwarded-For/-Proto/-Prefix`` count only when the peer is a trusted proxy
    (``TRUSTED_PROXIES``), a prefix only if listed in ``FORWARDED_PREFIXES``; the client
    address is found from the right of the chain (``app.forwarded``), so no header a
    client writes can choose it. A dual-stack
    listener's ``::ffff:a.b.c.d`` peers are folded to ``a.b.c.d`` for every request, so
    one IPv4 client has one address for rate limits, lockout and session records.
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
        hops: int = 1,
        prefixes: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.trust = ProxyTrust.build(trusted, hops)
        self.prefixes = frozenset(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "lifespan" or not client:
            await self.app(scope, receive, send)
            return
        host = client[0]
        if not self.trust.networks and not host.startswith("::ffff:"):
            await self.app(scope, receive, send)  # the hot path with no proxy in front
            return
        peer = parse_address(host)
        if peer is None:  # not an IP peer (a unix socket): nothing to trust or fold
            await self.app(scope, receive, send)
            return
        if not self.trust.trusts(peer):
            text = address_text(peer)
            if text != host:
                scope["client"] = (text, client[1])
            await self.app(scope, receive, send)
            return
        chain: list[str] = []
        prefixed = False
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                chain.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                scheme = forwarded_scheme(value.decode("latin-1"))
                if scheme is not None:
                    websocket = scope["type"] == "websocket"
                    scope["scheme"] = scheme.replace("http", "ws", 1) if websocket else scheme
            elif name == b"x-forwarded-prefix" and not prefixed:
                prefixed = True
                prefix = forwarded_prefix(value.decode("latin-1"))
                if prefix is not None and prefix in self.prefixes:
                    # ASGI: ``path`` includes ``root_path``; Starlette routes on the rest.
                    # The proxy stripped the prefix, so put it back in front of both.
                    scope["root_path"] = scope.get("root_path", "") + prefix
                    scope["path"] = prefix + scope["path"]
                    if scope.get("raw_path") is not None:
                        scope["raw_path"] = prefix.encode("latin-1") + scope["raw_path"]
        address = self.trust.client(peer, forwarded_entries(chain))
        scope["client"] = (address_text(address), client[1] if address == peer else 0)
        await self.app(scope, receive, send)


_Series = tuple[Counter, Histogram]
# The method label takes client input: anything unusual is folded, so labels stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Polled every few seconds by Kong, Railway and Prometheus: logged at debug unless they fail.
_QUIET_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})


class EdgeMiddleware:
    """Per request: the gateway's request id (or a new one) for logs and the response, and
    the request count and latency by route template (never the raw path), and one access
    log line. One middleware, one ``send`` wrapper: this runs on every request, the hot path
    included."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        # Built after logging is configured (Starlette builds middleware on first use), so
        # the logger is made once here rather than resolved on every request.
        self._access = access_logger() if access_log else None
        # Labelled children, looked up once per (route, method, status): ``labels()``
        # takes a lock and builds a tuple on every call, which the hot path can skip.
        self._series: dict[tuple[str, str, int], _Series] = {}

    def _series_for(self, template: str, method: str, status: int) -> _Series:
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = (
                metrics.REQUESTS.labels(template, method, str(status)),
                metrics.REQUEST_LATENCY.labels(template, method),
            )
            self._series[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_id(scope) or os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        # Read by the log processor; uvicorn runs each request in a task of its own, so
        # the value never reaches another request, and it is still set when the outermost
        # error handler logs an unexpected failure.
        REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(header)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            count, latency = self._series_for(template, method, status)
            count.inc()
            elapsed = time.perf_counter() - started
            latency.observe(elapsed)
            if self._access is not None:
                self._log_access(scope, method, template, status, elapsed)

    def _log_access(
        self, scope: Scope, method: str, template: str, status: int, elapsed: float
    ) -> None:
        """One line per request (``request_id``, level and time are added by the logger)."""
        auth = scope["state"].get("auth")
        claims = auth.claims if auth is not None else None
        client = scope.get("client")
        access = self._access
        assert access is not None
        write = access.debug if status < 500 and template in _QUIET_ROUTES else access.info
        write(
            "http_request",
            method=method,
            route=template,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            client_ip=client[0] if client else None,
            user_id=claims.sub if claims is not None else None,
        )
