"""The ASGI stack the service runs: Starlette's, with two of its layers folded away.

Starlette wraps every app in ``ServerErrorMiddleware`` (outermost: a 500 for an
unexpected error) and ``ExceptionMiddleware`` (innermost: the registered handlers), and
its router tries each route's pattern in order. On the authenticated hot path those two
layers cost a coroutine, a send wrapper and a ``Request`` object each per request, and a
route far down the table paid one regular-expression match per route above it. Here:

* the outermost middleware answers unexpected errors itself (``EdgeMiddleware`` has the
  request id and the status already; its ``on_error`` is the app's ``Exception``
  handler), so there is no separate outer layer;
* the router (``ServiceRouter``) runs the registered handlers around the route it
  dispatches to, as ``ExceptionMiddleware`` did, at the same depth: inside the user
  middleware, so CORS headers still reach every problem response;
* a path without parameters is looked up in a dict: only the routes with that exact path
  and the routes with parameters (in their order) are tried, so a route's position in
  the table no longer adds to its cost. Anything not matched that way (a 404, a 405, a
  trailing-slash redirect) takes Starlette's own path, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette._exception_handler import (
    ExceptionHandlers,
    StatusHandlers,
    _lookup_exception_handler,
)
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_HANDLERS = "starlette.exception_handlers"  # read by Starlette's per-route wrappers


def _static_path(route: BaseRoute) -> str | None:
    """The path of a route that can only match that exact path, else None."""
    if isinstance(route, Route) and not route.param_convertors:
        return route.path
    return None


class ServiceRouter(Router):
    """Starlette's router with exact paths indexed and the exception handlers built in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers: tuple[ExceptionHandlers, StatusHandlers] = ({}, {})
        self._indexed: list[BaseRoute] | None = None  # the table the index was built from
        self._indexed_count = 0
        self._by_path: dict[str, tuple[BaseRoute, ...]] = {}
        self._dynamic: tuple[BaseRoute, ...] = ()

    def set_handlers(self, handlers: Mapping[Any, Any]) -> None:
        """The handlers ``ExceptionMiddleware`` would have run (its defaults included)."""
        middleware = ExceptionMiddleware(self, handlers=handlers)
        self._handlers = (middleware._exception_handlers, middleware._status_handlers)

    def _candidates(self, path: str) -> Sequence[BaseRoute]:
        routes = self.routes
        # Rebuilt when routes are added (or the table replaced) after the first request.
        if routes is not self._indexed or len(routes) != self._indexed_count:
            self._index(routes)
        return self._by_path.get(path, self._dynamic)

    def _index(self, routes: list[BaseRoute]) -> None:
        """For each exact path, its own routes and every parameterised one, in table order
        (so first-match-wins is unchanged); other paths try the parameterised ones only."""
        self._indexed, self._indexed_count = routes, len(routes)
        self._dynamic = tuple(r for r in routes if _static_path(r) is None)
        paths = {p for r in routes if (p := _static_path(r)) is not None}
        self._by_path = {
            path: tuple(r for r in routes if _static_path(r) in (path, None)) for path in paths
        }

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_HANDLERS] = self._handlers
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._dispatch(scope, receive, sender)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            if started:
                raise RuntimeError(
                    "Caught handled exception, but response already started."
                ) from exc
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, sender)
            # A reused exception instance would otherwise keep every request's traceback.
            exc.__traceback__ = None

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("router", self)
        for route in self._candidates(get_route_path(scope)):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
        # A partial match (405), no match (404) or a redirect: Starlette's own path.
        await super().app(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Any:
        """Starlette's own lookup: a status handler for an HTTPException, else the first of
        the exception's classes with a handler."""
        exception_handlers, status_handlers = self._handlers
        if isinstance(exc, HTTPException) and exc.status_code in status_handlers:
            return status_handlers[exc.status_code]
        return _lookup_exception_handler(exception_handlers, exc)


class ServiceApp(Starlette):
    """Starlette with ``ServiceRouter`` and no separate error layers (see the module doc).

    The outermost user middleware must answer unexpected errors (``EdgeMiddleware`` does,
    given the ``Exception`` handler as ``on_error``)."""

    def __init__(self, *, routes: Sequence[BaseRoute], lifespan: Any = None, **kwargs: Any) -> None:
        super().__init__(lifespan=lifespan, **kwargs)
        if any(key in (500, Exception) for key in self.exception_handlers):
            raise TypeError(
                "no 500/Exception handler here: the outermost middleware answers unexpected "
                "errors (EdgeMiddleware(on_error=...))"
            )
        self.router = ServiceRouter(routes=list(routes), lifespan=lifespan)

    def build_middleware_stack(self) -> ASGIApp:
        self.router.set_handlers(self.exception_handlers)  # type: ignore[attr-defined]
        app: ASGIApp = self.router.app  # the dispatch itself: the router has no middleware
        middleware = list(self.user_middleware)
        if self.max_body_size is not None:
            middleware.insert(
                1, Middleware(RequestBodyLimitMiddleware, max_body_size=self.max_body_size)
            )
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        return app
