"""The edge: one pure ASGI middleware for proxy headers, the head and ``Host`` checks,
request ids, metrics and the access log.

One layer, not one per concern, because it runs on every request, the hot path included:
each ASGI layer costs a coroutine and a call frame per request, and the concerns are
plain objects it calls in order (``ProxyFit``, then ``app.edgeguard.EdgeGuard``).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.edgeguard import EdgeGuard
from app.forwarded import (
    ProxyTrust,
    address_text,
    forwarded_entries,
    forwarded_prefix,
    forwarded_scheme,
    parse_address,
)
from app.logging import REQUEST_ID, access_logger, new_request_id
from app.problems import problem_response
from services import budget, errors, metrics
from services.tallies import LatencyTally, Tally

# The app's answer to an unexpected error (``EdgeMiddleware(on_error=...)``).
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

# Kong's own id first: Kong (>= 3.5, ``headers_upstream = X-Kong-Request-Id``) overwrites
# it on every request and prints it in its own access and error logs, so one id joins both
# logs. Kong's correlation-id plugin header is not read: that plugin keeps a client's value.
REQUEST_ID_HEADERS = (b"x-kong-request-id", b"x-request-id")
_MAX_REQUEST_ID = 128


def _incoming_id(scope: Scope) -> str | None:
    kong: bytes | None = None
    plain: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-kong-request-id":
            kong = value
        elif name == b"x-request-id":
            plain = value
    for value in (kong, plain):
        if value:
            text = value.decode("latin-1")[:_MAX_REQUEST_ID]
            if text.isprintable():
                return text
    return None


class ProxyFit:
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
        trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
        hops: int = 1,
        prefixes: Sequence[str] = (),
    ) -> None:
        self.trust = ProxyTrust.build(trusted, hops)
        self.prefixes = frozenset(prefixes)

    def apply(self, scope: Scope) -> None:
        """Rewrite ``client``, ``scheme`` and the paths of an HTTP or WebSocket scope."""
        client = scope.get("client")
        if not client:
            return
        host = client[0]
        if not self.trust.networks and not host.startswith("::ffff:"):
            return  # the hot path with no proxy in front
        peer = parse_address(host)
        if peer is None:  # not an IP peer (a unix socket): nothing to trust or fold
            return
        if not self.trust.trusts(peer):
            text = address_text(peer)
            if text != host:
                scope["client"] = (text, client[1])
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


_Series = tuple[Tally, LatencyTally]
# The method label takes client input: anything unusual is folded, so labels stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Polled every few seconds by Kong, Railway and Prometheus: logged at debug unless they fail.
_QUIET_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})


class EdgeMiddleware:
    """Per request, in order: the client address as the client used it (``ProxyFit``); the
    gateway's request id (or a new one) for logs and the response; the head and ``Host``
    checks (``EdgeGuard``, answered as problems); then the request count and latency by
    route template (never the raw path), and one access log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        proxy: ProxyFit,
        guard: EdgeGuard,
        production: bool = False,
        access_log: bool = True,
        on_error: ErrorHandler | None = None,
    ) -> None:
        self.app = app
        # The answer to an unexpected error (the app's ``Exception`` handler): this is the
        # outermost layer (``app.asgi``), so it stands where ServerErrorMiddleware would.
        self.on_error = on_error
        self.proxy = proxy
        self.guard = guard
        self.production = production
        # Built after logging is configured (Starlette builds middleware on first use), so
        # the logger is made once here rather than resolved on every request.
        logger = access_logger() if access_log else None
        # A logger filtered above INFO writes no access line (quiet routes log at DEBUG,
        # the rest at INFO): then the line is not even built.
        is_enabled_for = getattr(logger, "is_enabled_for", None)
        enabled = logger is not None and (is_enabled_for is None or is_enabled_for(logging.INFO))
        self._access = logger if enabled else None
        # Labelled children, looked up once per (route, method, status) and counted in
        # lock-free tallies (services.tallies): ``labels()`` and ``inc()`` take a lock on
        # every call, which the hot path can skip.
        self._series: dict[tuple[str, str, int], _Series] = {}

    def _series_for(self, template: str, method: str, status: int) -> _Series:
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = (
                Tally(metrics.REQUESTS.labels(template, method, str(status))),
                LatencyTally(metrics.REQUEST_LATENCY.labels(template, method)),
            )
            self._series[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                self.proxy.apply(scope)
            await self.app(scope, receive, send)
            return
        self.proxy.apply(scope)
        started = time.perf_counter()
        time_left = budget.opened()
        request_id = _incoming_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        # Read by the log processor; uvicorn runs each request in a task of its own, so
        # the value never reaches another request, and it is still set when the outermost
        # error handler logs an unexpected failure.
        REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        status = 0  # until the response starts

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(header)
            await send(message)

        try:
            refusal = None if self.guard.idle else self.guard.refusal(scope)
            if refusal is None:
                await self.app(scope, receive, send_wrapper)
            else:
                await self._refuse(refusal, request_id, scope, receive, send_wrapper)
        except Exception as exc:
            if self.on_error is not None and not status:
                response = await self.on_error(Request(scope, receive), exc)
                await response(scope, receive, send_wrapper)
            # Re-raised, as Starlette does, so the server logs it and ends the exchange.
            raise
        finally:
            status = status or 500  # no response: counted and logged as a failure
            time_left.open = False
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            count, latency = self._series_for(template, method, status)
            count.n += 1
            elapsed = time.perf_counter() - started
            latency.observe(elapsed)
            if self._access is not None:
                self._log_access(scope, method, template, status, elapsed)
            # The authorization context holds the scope that holds it: let go of it here,
            # so a request's objects are freed as it ends, by reference counting, and the
            # cycle collector has nothing of it to trace.
            scope["state"].pop("auth", None)

    async def _refuse(
        self,
        refusal: errors.AuthServiceError,
        request_id: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        response = problem_response(refusal, request_id=request_id, production=self.production)
        await response(scope, receive, send)

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
