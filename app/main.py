"""The app factory. Nothing is built at import time; tests use the same factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from app import problems
from app.authz import AuthzMiddleware
from app.logging import configure_logging
from app.middleware import MetricsMiddleware, ProxyFitMiddleware, RequestIdMiddleware
from app.policy import POLICIES
from app.routes import auth
from app.settings import Settings
from app.state import open_services
from services import errors
from services.auth import LoginGuard

Endpoint = Callable[[Request], Any]


def guarded(path: str, endpoint: Endpoint, *, name: str, methods: list[str]) -> Route:
    """A route whose policy comes from ``POLICIES[name]``; every route must have one."""
    layers = POLICIES[name]
    middleware = [Middleware(AuthzMiddleware, layers=layers)] if layers else None
    return Route(path, endpoint, name=name, methods=methods, middleware=middleware)


async def live(request: Request) -> Response:
    """Answers from the event loop alone: if this is slow, the loop is blocked."""
    return JSONResponse({"status": "ok"})


def api_routes() -> list[BaseRoute]:
    return [
        guarded("/register", auth.register, name="auth:register", methods=["POST"]),
        guarded("/login", auth.login, name="auth:login", methods=["POST"]),
        guarded("/refresh", auth.refresh, name="auth:refresh", methods=["POST"]),
        guarded("/logout", auth.logout, name="auth:logout", methods=["POST"]),
        guarded("/me", auth.me, name="auth:me", methods=["GET"]),
        guarded("/sessions", auth.list_sessions, name="auth:sessions", methods=["GET"]),
        guarded(
            "/sessions/{session_id}", auth.delete_session, name="auth:session", methods=["DELETE"]
        ),
    ]


def create_app(
    settings: Settings, *, guard: LoginGuard | None = None, configure_logs: bool = True
) -> Starlette:
    if configure_logs:
        configure_logging(level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.services = await open_services(settings, stack, guard=guard)
            yield

    routes: list[BaseRoute] = [
        Route("/health/live", live, name="health:live", methods=["GET"]),
        Mount("/api/v1/auth", routes=api_routes()),
    ]
    middleware = [
        Middleware(ProxyFitMiddleware, trusted=settings.trusted_proxies),
        Middleware(RequestIdMiddleware),
        Middleware(MetricsMiddleware),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_credentials=True,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
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
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            errors.AuthServiceError: problems.handle_service_error,
            HTTPException: problems.handle_http_exception,
            Exception: problems.handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
