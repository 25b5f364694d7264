"""The app factory. Nothing is built at import time; tests use the same factory."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app import health, problems
from app.asgi import ServiceApp
from app.authz import AuthzMiddleware
from app.authz.endpoint import ContextEndpoint
from app.authz.layers import RateLimit, ResponseHeaders
from app.edgeguard import EdgeGuard
from app.logging import configure_logging
from app.middleware import EdgeMiddleware, ProxyFit
from app.openapi import openapi_endpoint
from app.policy import POLICIES
from app.routes import account, admin, auth, confirmation, events, mfa, oauth, otp, recovery
from app.settings import Settings
from app.state import open_services
from app.transport import TRANSPORT_HEADER
from app.version import __version__
from services import errors, tallies
from services.auth import LoginGuard

Endpoint = Callable[[Request], Any] | ContextEndpoint


def guarded(path: str, endpoint: Endpoint, *, name: str, methods: list[str]) -> Route:
    """A route whose policy comes from ``POLICIES[name]``; every route must have one."""
    layers = POLICIES[name]
    middleware = [Middleware(AuthzMiddleware, layers=layers)] if layers else []
    if any(isinstance(layer, RateLimit) for layer in layers):
        middleware.insert(0, Middleware(ResponseHeaders))
    return Route(path, endpoint, name=name, methods=methods, middleware=middleware or None)


async def live(request: Request) -> Response:
    """Answers from the event loop alone: if this is slow, the loop is blocked."""
    return JSONResponse({"status": "ok", "version": __version__})


async def handle_service_error(request: Request, exc: Exception) -> Response:
    """The problem response, counting requests refused by a limit (sg_rejections_total)."""
    health.count_rejection(exc)
    return await problems.handle_service_error(request, exc)


def api_routes() -> list[BaseRoute]:
    # Flat full paths: a path without parameters is found by a dict lookup (app.asgi),
    # wherever it stands in the table.
    base = "/api/v1/auth"
    return [
        # A bare ASGI endpoint: /me needs no Request object (app.authz.endpoint).
        guarded(f"{base}/me", ContextEndpoint(auth.me_body), name="auth:me", methods=["GET"]),
        guarded(f"{base}/refresh", auth.refresh, name="auth:refresh", methods=["POST"]),
        guarded(f"{base}/login", auth.login, name="auth:login", methods=["POST"]),
        guarded(f"{base}/logout", auth.logout, name="auth:logout", methods=["POST"]),
        guarded(f"{base}/register", auth.register, name="auth:register", methods=["POST"]),
        guarded(f"{base}/sessions", auth.list_sessions, name="auth:sessions", methods=["GET"]),
        guarded(
            f"{base}/sessions/{{session_id}}",
            auth.delete_session,
            name="auth:session",
            methods=["DELETE"],
        ),
    ]


def lifecycle_routes() -> list[BaseRoute]:
    """Recovery, confirmation, account, OTP, OAuth and MFA: one router module each."""
    base = "/api/v1/auth"
    return [
        guarded(base + path, endpoint, name=name, methods=methods)
        for module in (recovery, confirmation, account, otp, oauth, mfa)
        for path, endpoint, name, methods in module.ROUTES
    ]


def admin_routes() -> list[BaseRoute]:
    user = "/api/v1/admin/users/{user_id}"
    return [
        guarded("/api/v1/admin/users", admin.list_users, name="admin:users", methods=["GET"]),
        guarded(user, admin.get_user, name="admin:user", methods=["GET"]),
        guarded(f"{user}/ban", admin.ban_user, name="admin:ban", methods=["POST"]),
        guarded(f"{user}/unban", admin.unban_user, name="admin:unban", methods=["POST"]),
        guarded(f"{user}/roles", admin.set_roles, name="admin:roles", methods=["PUT"]),
        guarded(
            f"{user}/sessions/revoke",
            admin.revoke_sessions,
            name="admin:revoke_sessions",
            methods=["POST"],
        ),
        guarded(f"{user}/unlock", admin.unlock_user, name="admin:unlock", methods=["POST"]),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    guard: LoginGuard | None = None,
    configure_logs: bool = True,
    heads_bounded: bool = False,
) -> Starlette:
    """Build the app; without ``settings`` they are read from the environment, so
    ``uvicorn --factory app.main:create_app`` works. ``heads_bounded``: the HTTP server
    already enforces the header limits (``app.httpserver``), so the app does not recount."""
    if settings is None:
        settings = Settings.from_environ(os.environ)
    if configure_logs:
        configure_logging(level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.services = await open_services(settings, stack, guard=guard)
            flusher = asyncio.create_task(tallies.flush_forever(), name="metrics-flush")
            stack.callback(flusher.cancel)
            # Everything alive now (modules, SDK models, clients) lives as long as the
            # process: keep the collector from walking it, which otherwise shows up as
            # tens-of-milliseconds pauses in the latency tail.
            gc.collect()
            gc.freeze()
            yield

    routes: list[BaseRoute] = [
        *api_routes(),
        *lifecycle_routes(),
        Route("/health/live", live, name="health:live", methods=["GET"]),
        Route("/health/ready", health.ready, name="health:ready", methods=["GET"]),
        Route("/metrics", health.metrics_endpoint, name="metrics", methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, name="openapi", methods=["GET"]),
        *admin_routes(),
        guarded(
            "/api/v1/users/{user_id}/sessions",
            admin.user_sessions,
            name="users:sessions",
            methods=["GET"],
        ),
        guarded(
            "/api/v1/internal/users/{user_id}/status",
            admin.user_status,
            name="internal:user_status",
            methods=["GET"],
        ),
        guarded(
            "/api/v1/internal/supabase-events",
            events.supabase_events,
            name="internal:supabase_events",
            methods=["POST"],
        ),
    ]
    middleware = [
        Middleware(
            EdgeMiddleware,
            proxy=ProxyFit(
                settings.trusted_proxies,
                hops=settings.forwarded_hops,
                prefixes=settings.forwarded_prefixes,
            ),
            guard=EdgeGuard(
                allowed_hosts=settings.allowed_hosts,
                max_header_count=settings.max_header_count,
                max_header_bytes=settings.max_header_bytes,
                check_head=not heads_bounded,
            ),
            production=settings.is_production,
            access_log=settings.log_access,
            on_error=problems.handle_unexpected,
        ),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_credentials=True,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", TRANSPORT_HEADER],
                expose_headers=[
                    "X-Request-ID",
                    "Retry-After",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                ],
                max_age=600,
            )
        )
    app = ServiceApp(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            errors.AuthServiceError: handle_service_error,
            HTTPException: problems.handle_http_exception,
        },
        lifespan=lifespan,
    )
    # A trailing-slash redirect would be built from the Host header; API clients get 404s.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.upstream_probe = health.UpstreamProbe()
    return app
