"""The layer contract and the per-route middleware that runs a policy.

A layer is any object with ``async def check(ctx) -> None`` that raises a
``services.errors`` error to refuse. A route's policy is an ordered tuple of layers
(see ``app.policy``); ``AuthzMiddleware`` runs them in order after routing, so layers can
read path parameters, and hands the endpoint the resulting ``AuthContext``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from services.tokens import Claims

if TYPE_CHECKING:
    from app.state import Services


@dataclass(slots=True)
class AuthContext:
    """What the layers learn about a request, in the order they learn it."""

    scope: Scope
    services: Services
    client_ip: str
    token: str | None = None
    claims: Claims | None = None
    service_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> Headers:
        """The request headers (built on use: the hot path reads one with ``header``)."""
        return Headers(scope=self.scope)

    def header(self, name: bytes) -> str | None:
        """The first value of one header (``name`` in lower case), without building
        ``headers``."""
        key: bytes
        value: bytes
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def path_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    def require_claims(self) -> Claims:
        """The verified claims; a layer that needs them must come after verification."""
        if self.claims is None:
            raise RuntimeError("this layer must follow token verification in the policy")
        return self.claims


class Layer(Protocol):
    async def check(self, ctx: AuthContext) -> None: ...


class AuthzMiddleware:
    def __init__(self, app: ASGIApp, layers: tuple[Layer, ...]) -> None:
        self.app = app
        self.layers = layers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        ctx = AuthContext(scope, scope["app"].state.services, client[0] if client else "")
        # Stored first so the access log names the user even when a later layer refuses.
        scope.setdefault("state", {})["auth"] = ctx
        for layer in self.layers:
            await layer.check(ctx)
        await self.app(scope, receive, send)


def auth_context(request: Request) -> AuthContext:
    ctx: AuthContext = request.scope["state"]["auth"]
    return ctx
