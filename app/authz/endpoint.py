"""A route endpoint as a bare ASGI app, for the hottest authenticated read (``/me``).

Starlette wraps a function endpoint in ``request_response``: a ``Request`` object and a
per-route exception wrapper on every call. An endpoint whose answer is a function of the
policy's ``AuthContext`` alone needs neither: this one reads the context the policy left
in the scope and sends the bytes. Errors still propagate to the app's exception
middleware, which turns them into problem responses as for any route.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Receive, Scope, Send

from app.authz.base import AuthContext

_JSON = (b"content-type", b"application/json")


class ContextEndpoint:
    """``200 application/json`` with the body ``render(ctx)`` returns."""

    def __init__(self, render: Callable[[AuthContext], bytes]) -> None:
        self.render = render
        self.__doc__ = render.__doc__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.render(scope["state"]["auth"])
        # A fresh header list per response: outer middleware appends to it.
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
