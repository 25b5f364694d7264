"""How a browser's session travels: bearer (the default) or an HttpOnly refresh cookie.

The services never know which: they take and return refresh tokens. This module moves the
refresh token between the JSON body and a cookie, and guards every cookie-mode request
against cross-site forgery. See docs/frontend.md.

- ``bearer``: tokens travel in JSON bodies only, exactly as without this module.
- ``cookie``: the refresh token travels only in an ``HttpOnly; Secure; SameSite=Strict``
  cookie whose ``Path`` is the refresh route, so the browser sends it to that one route and
  page scripts can never read it. The access token stays in the body (the page keeps it in
  memory). Logout clears the cookie.

``SESSION_TRANSPORT`` picks what the service offers (``bearer``, ``cookie`` or ``both``);
with ``both``, each request chooses with ``X-Session-Transport: cookie|bearer`` (bearer when
absent). Asking for a transport the service does not offer is ``400
transport_not_allowed``, never a silent switch.

Every cookie-mode request that reads, sets or clears the cookie (login, register, refresh,
logout) must come from an allowed page: ``Sec-Fetch-Site`` must not be ``cross-site`` or
``none``; unless it is ``same-origin``, ``Origin`` must be one of ``CORS_ORIGINS`` or the
service's own origin (a cookie-mode request with neither header is refused too).
Together with ``SameSite=Strict`` and JSON-only bodies (a cross-origin JSON POST needs a
CORS preflight that disallowed origins fail), that is the CSRF defence; routes
authenticated by the bearer access token alone (``/me``, ``/sessions``) are not
forgeable, since no browser attaches that header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.body import read_model
from app.schemas import Body, RefreshBody
from app.settings import Settings
from services import errors

TRANSPORT_HEADER = "X-Session-Transport"
_MAX_TOKEN = 512
_ALLOWED_SITES = frozenset({"same-origin", "same-site"})


class Transport(StrEnum):
    BEARER = "bearer"
    COOKIE = "cookie"


class TransportNotAllowed(errors.BadRequest):
    code = "transport_not_allowed"
    default_detail = "This session transport is not offered by the service."


class CsrfRejected(errors.Forbidden):
    code = "csrf_rejected"
    default_detail = "A cookie session request must come from one of the app's own pages."


class MissingRefreshCookie(errors.Unauthenticated):
    code = "missing_refresh_token"
    default_detail = "No refresh cookie came with the request: sign in again."


class CookieRefreshBody(Body):
    """A cookie-mode refresh takes no fields: the token comes only from the cookie."""


def _normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def choose(request: Request) -> Transport:
    """The transport of this request, from ``SESSION_TRANSPORT`` and the request header."""
    offered = _settings(request).session_transport
    asked = request.headers.get(TRANSPORT_HEADER)
    if asked is None:
        return Transport.COOKIE if offered == "cookie" else Transport.BEARER
    value = asked.strip().lower()
    if value not in (Transport.BEARER.value, Transport.COOKIE.value):
        raise TransportNotAllowed(f"{TRANSPORT_HEADER} must be 'bearer' or 'cookie'.")
    if offered != "both" and value != offered:
        raise TransportNotAllowed(f"This service offers only the {offered} session transport.")
    return Transport(value)


def check_origin(headers: Mapping[str, str], *, allowed: frozenset[str], own: str) -> None:
    """Refuse a request that a page outside ``allowed`` (or a non-browser context) made.

    Pure: ``headers`` are the request's (case-insensitive mapping), ``allowed`` normalised
    origins, ``own`` the service's own origin."""
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if site is not None:
        site = site.strip().lower()
        if site not in _ALLOWED_SITES:
            raise CsrfRejected(
                f"Refused a cookie session request from another site (Sec-Fetch-Site: {site})."
            )
        if site == "same-origin":
            # The browser itself says the page is this service's own origin; no page can
            # forge that, and it holds behind a proxy that rewrites Host.
            return
    if origin is None:
        raise CsrfRejected("A cookie session request must carry an Origin header.")
    normalised = _normalise_origin(origin)
    if normalised != own and normalised not in allowed:
        raise CsrfRejected(
            f"Refused a cookie session request from origin {origin[:200]!r}: "
            "it is not in CORS_ORIGINS."
        )


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _own_origin(request: Request) -> str:
    url = request.url
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = f":{url.port}" if url.port is not None and url.port != default else ""
    return f"{url.scheme}://{url.hostname}{port}".lower()


@dataclass
class SessionTransport:
    """One request's transport: moves the refresh token and sets or clears the cookie."""

    request: Request
    kind: Transport
    _cookie: str | None = None
    _clear: bool = False
    _headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_cookie(self) -> bool:
        return self.kind is Transport.COOKIE

    def session_json(self, session: dict[str, Any]) -> dict[str, Any]:
        """The session as the client sees it: in cookie mode without the refresh token,
        which goes into the cookie of the response instead."""
        if not self.is_cookie:
            return session
        body = dict(session)
        token = body.pop("refresh_token", None)
        if isinstance(token, str) and token:
            self._cookie = token
        return body

    async def refresh_token(self) -> str:
        """The refresh token to rotate: the body's in bearer mode, the cookie's in cookie mode."""
        if not self.is_cookie:
            return (await read_model(self.request, RefreshBody)).refresh_token
        await read_model(self.request, CookieRefreshBody, optional=True)
        token = self.request.cookies.get(_settings(self.request).session_cookie_name)
        if not token:
            raise MissingRefreshCookie()
        if len(token) > _MAX_TOKEN or not token.isprintable():
            self.clear()
            raise errors.InvalidRefreshToken(headers=self.clearing_headers())
        return token

    def clear(self) -> None:
        """End the cookie with this response (logout, a dead refresh token)."""
        if self.is_cookie:
            self._clear = True

    def clearing_headers(self) -> dict[str, str]:
        """``Set-Cookie`` that clears the cookie, for an error response."""
        if not self.is_cookie:
            return {}
        response = Response()
        self._delete(response)
        return {"set-cookie": response.headers["set-cookie"]}

    def respond(self, content: Any, status_code: int = 200) -> Response:
        response: Response
        if status_code == 204:
            response = Response(status_code=204)
        else:
            response = JSONResponse(content, status_code=status_code)
        if not self.is_cookie:
            return response
        response.headers["Cache-Control"] = "no-store"
        settings = _settings(self.request)
        if self._cookie is not None:
            response.set_cookie(
                settings.session_cookie_name,
                self._cookie,
                max_age=settings.session_ttl_seconds,
                path=self.cookie_path,
                secure=True,
                httponly=True,
                samesite=settings.session_cookie_samesite,
            )
        elif self._clear:
            self._delete(response)
        return response

    @property
    def cookie_path(self) -> str:
        """The refresh route as the browser sees it (a proxy's prefix included): the only
        path the browser sends the cookie to."""
        root = str(self.request.scope.get("root_path", "")).rstrip("/")
        path: str = self.request.app.url_path_for("auth:refresh")
        return root + path

    def _delete(self, response: Response) -> None:
        settings = _settings(self.request)
        response.delete_cookie(
            settings.session_cookie_name,
            path=self.cookie_path,
            secure=True,
            httponly=True,
            samesite=settings.session_cookie_samesite,
        )


def begin(request: Request) -> SessionTransport:
    """This request's transport; a cookie-mode request is checked against forgery first."""
    kind = choose(request)
    if kind is Transport.COOKIE:
        settings = _settings(request)
        allowed = frozenset(_normalise_origin(origin) for origin in settings.cors_origins)
        check_origin(request.headers, allowed=allowed, own=_own_origin(request))
    return SessionTransport(request, kind)
