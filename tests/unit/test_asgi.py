"""The service's ASGI stack (app.asgi): routing and error answers as Starlette gives them,
with exact paths looked up instead of tried one by one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app import problems
from app.asgi import ServiceApp
from app.edgeguard import EdgeGuard
from app.middleware import EdgeMiddleware, ProxyFit
from services import errors

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def answer(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"route": name, "params": request.path_params})

    return endpoint


async def broken(request: Request) -> Response:
    raise ZeroDivisionError("a bug")


async def refused(request: Request) -> Response:
    raise errors.SessionRevoked()


class LateFailure:
    """An ASGI endpoint that starts its answer, then fails."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise errors.SessionRevoked()


class RefusingLayer:
    """A route middleware that refuses, as an authorization layer does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise errors.MissingToken()


def build(routes: list[Route]) -> ServiceApp:
    edge = Middleware(
        EdgeMiddleware,
        proxy=ProxyFit([]),
        guard=EdgeGuard(allowed_hosts=[], max_header_count=100, max_header_bytes=32768),
        access_log=False,
        on_error=problems.handle_unexpected,
    )
    app = ServiceApp(
        routes=routes,
        middleware=[edge],
        exception_handlers={
            errors.AuthServiceError: problems.handle_service_error,
            HTTPException: problems.handle_http_exception,
        },
    )
    app.router.redirect_slashes = False
    return app


def client(app: ServiceApp, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_the_first_route_in_the_table_wins_whether_or_not_it_has_parameters() -> None:
    app = build(
        [
            Route("/items/{item_id}", answer("by id"), methods=["GET"]),
            Route("/items/new", answer("new (shadowed)"), methods=["GET"]),
            Route("/orders/new", answer("new order"), methods=["GET"]),
            Route("/orders/{order_id}", answer("order by id"), methods=["GET"]),
        ]
    )
    async with client(app) as c:
        assert (await c.get("/items/new")).json() == {
            "route": "by id",
            "params": {"item_id": "new"},
        }
        assert (await c.get("/orders/new")).json()["route"] == "new order"
        assert (await c.get("/orders/7")).json() == {
            "route": "order by id",
            "params": {"order_id": "7"},
        }


async def test_a_route_at_the_end_of_a_long_table_is_found_and_a_wrong_method_is_405() -> None:
    routes = [Route(f"/filler/{i}", answer(f"filler {i}"), methods=["GET"]) for i in range(60)]
    routes += [
        Route("/last", answer("last get"), methods=["GET"]),
        Route("/last", answer("last post"), methods=["POST"]),
    ]
    app = build(routes)
    async with client(app) as c:
        assert (await c.get("/last")).json()["route"] == "last get"
        # The GET route matches the path first; the POST route still answers a POST.
        assert (await c.post("/last")).json()["route"] == "last post"
        wrong = await c.delete("/last")
        assert wrong.status_code == 405
        assert wrong.headers["content-type"] == "application/problem+json"
        assert "GET" in wrong.headers["allow"]
        missing = await c.get("/nowhere")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


async def test_a_route_added_after_the_first_request_is_served() -> None:
    app = build([Route("/first", answer("first"), methods=["GET"])])
    async with client(app) as c:
        assert (await c.get("/second")).status_code == 404
        app.router.routes.append(Route("/second", answer("second"), methods=["GET"]))
        assert (await c.get("/second")).json()["route"] == "second"


async def test_refusals_from_an_endpoint_or_a_route_middleware_are_problems() -> None:
    app = build(
        [
            Route("/refused", refused, methods=["GET"]),
            Route(
                "/layered", answer("never"), methods=["GET"], middleware=[Middleware(RefusingLayer)]
            ),
        ]
    )
    async with client(app) as c:
        for path, status in (("/refused", 401), ("/layered", 401)):
            response = await c.get(path)
            assert response.status_code == status
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_a_bug_is_a_500_problem_with_the_request_id_and_is_still_raised() -> None:
    app = build([Route("/broken", broken, methods=["GET"])])
    async with client(app, raise_app_exceptions=False) as c:
        response = await c.get("/broken", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "trace-me"
    assert response.json()["request_id"] == "trace-me"
    # Raised on, as Starlette does, so the server logs it and closes the exchange.
    async with client(app) as c:
        with pytest.raises(ZeroDivisionError):
            await c.get("/broken")


async def test_a_refusal_after_the_response_started_is_not_answered_twice() -> None:
    app = build([Route("/late", LateFailure(), methods=["GET"])])
    async with client(app) as c:
        with pytest.raises(RuntimeError, match="already started"):
            await c.get("/late")
