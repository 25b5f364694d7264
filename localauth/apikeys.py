"""The project's API keys and the API gateway's check of them, as hosted Supabase has them.

A project has both key families:

- new opaque keys, ``sb_publishable_…`` (role ``anon``) and ``sb_secret_…`` (role
  ``service_role``): configured (``LOCALAUTH_PUBLISHABLE_KEY`` / ``LOCALAUTH_SECRET_KEY``) or
  generated once and kept beside the database in ``<db>.apikeys.json`` (mode 0600);
- the legacy HS256 JWT keys ``anon`` / ``service_role``, which a project may disable
  (``LOCALAUTH_LEGACY_API_KEYS=false``, as new projects do).

``ApiKeyEdge`` plays the API gateway in front of GoTrue. It reads ``apikey`` (header or query
parameter); an unknown key is ``401 Invalid API key``, a legacy key of a project that disabled
them ``401 Legacy API keys are disabled``, and with ``LOCALAUTH_REQUIRE_API_KEY=true`` a
request without one is ``401 No API key found in request``. A valid ``sb_`` key with no
``Authorization`` header becomes a short-lived JWT of the role it stands for, passed on as the
bearer, as the hosted gateway does. An ``Authorization`` header is always passed through as
sent, so ``Authorization: Bearer sb_secret_…`` reaches GoTrue, which refuses it as a
malformed JWT (``403 bad_jwt``) exactly like Supabase Auth.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import jwt
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from localauth.config import Settings
from localauth.keys import KeyRing
from localauth.tokens import effective_secret, sign_access_token

__all__ = [
    "PUBLISHABLE_PREFIX",
    "SECRET_PREFIX",
    "ApiKeyEdge",
    "ProjectKeys",
    "apikeys_path",
    "load_project_keys",
]

PUBLISHABLE_PREFIX = "sb_publishable_"
SECRET_PREFIX = "sb_secret_"
# Routes the hosted gateway serves without a key.
_OPEN_PATHS = frozenset({"/health", "/.well-known/jwks.json", "/verify", "/callback", "/authorize"})
_PREFIX = "/auth/v1"
# The gateway's token for a key lives just long enough for the one request.
_MINTED_LIFETIME = 60
_LEGACY_ROLES = frozenset({"anon", "service_role"})
# (status, headers, body) of an answer from the gateway itself.
_Refusal = tuple[int, list[tuple[bytes, bytes]], bytes]


def apikeys_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".apikeys.json")


@dataclass(frozen=True)
class ProjectKeys:
    publishable: str
    secret: str

    def role_of(self, key: str) -> str | None:
        if not key.isascii():  # compare_digest takes ASCII strings only
            return None
        if secrets.compare_digest(key, self.publishable):
            return "anon"
        if secrets.compare_digest(key, self.secret):
            return "service_role"
        return None


def _generated() -> dict[str, str]:
    return {
        "publishable": PUBLISHABLE_PREFIX + secrets.token_urlsafe(24),
        "secret": SECRET_PREFIX + secrets.token_urlsafe(32),
    }


def _stored(path: Path) -> dict[str, str]:
    """The generated pair, created once; every process on the same database shares it."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(_generated(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # loses quietly to a concurrent creator
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    with path.open() as fh:
        loaded: dict[str, str] = json.load(fh)
    return loaded


def load_project_keys(settings: Settings) -> ProjectKeys:
    """Blocking (file I/O): call before serving."""
    stored: dict[str, str] = {}
    if settings.publishable_key is None or settings.secret_key is None:
        stored = _stored(apikeys_path(settings.db_path))
    return ProjectKeys(
        publishable=settings.publishable_key or stored["publishable"],
        secret=settings.secret_key or stored["secret"],
    )


def _gateway_error(status: int, code: str, message: str, hint: str | None = None) -> _Refusal:
    body: dict[str, str] = {"message": message}
    if hint is not None:
        body["hint"] = hint
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"sb-error-code", code.encode()),
    ]
    return status, headers, payload


class ApiKeyEdge:
    """Pure ASGI middleware: the API gateway's key check and key-to-role exchange."""

    def __init__(
        self, app: ASGIApp, *, settings: Settings, keyring: KeyRing, keys: ProjectKeys
    ) -> None:
        self.app = app
        self.settings = settings
        self.keyring = keyring
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path[len(_PREFIX) :] if path.startswith(_PREFIX + "/") else path
        # The mailbox and the fake provider's consent page stand for servers of their own
        # (the CLI's mail server, an external OAuth provider), not the API gateway.
        if route.rstrip("/") in _OPEN_PATHS or route.startswith(("/mailbox", "/fake-oauth")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("apikey") or self._query_key(scope)
        refusal: _Refusal | None = None
        if not key:
            if self.settings.require_api_key:
                refusal = _gateway_error(
                    401,
                    "UNAUTHORIZED_MISSING_API_KEY",
                    "No API key found in request",
                    "No `apikey` request header or url param was found.",
                )
        elif key.startswith("sb_"):
            role = self.keys.role_of(key)
            if role is None:
                refusal = _invalid_key()
            elif "authorization" not in headers:
                scope = self._with_bearer(scope, role)
        else:
            refusal = self._check_legacy(key)
        if refusal is not None:
            status, response_headers, payload = refusal
            await send(
                {"type": "http.response.start", "status": status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": payload})
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _query_key(scope: Scope) -> str | None:
        query: str = scope.get("query_string", b"").decode("latin-1")
        for name, value in parse_qsl(query):
            if name == "apikey":
                return value
        return None

    def _check_legacy(self, key: str) -> _Refusal | None:
        secret = effective_secret(self.settings, self.keyring.current)
        try:
            claims = jwt.decode(key, secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.InvalidTokenError:
            return _invalid_key()
        if not isinstance(claims, dict) or claims.get("role") not in _LEGACY_ROLES:
            return _invalid_key()
        if not self.settings.legacy_api_keys_enabled:
            return _gateway_error(
                401,
                "UNAUTHORIZED_LEGACY_API_KEY_DISABLED",
                "Legacy API keys are disabled",
                "Use a publishable (sb_publishable_…) or secret (sb_secret_…) key instead.",
            )
        return None

    def _with_bearer(self, scope: Scope, role: str) -> Scope:
        now = int(time.time())
        claims = {
            "iss": self.settings.jwt_issuer,
            "role": role,
            "iat": now,
            "exp": now + _MINTED_LIFETIME,
        }
        token = sign_access_token(self.settings, self.keyring.current, claims)
        raw = [*scope["headers"], (b"authorization", f"Bearer {token}".encode())]
        return {**scope, "headers": raw}


def _invalid_key() -> _Refusal:
    return _gateway_error(
        401,
        "UNAUTHORIZED_INVALID_API_KEY",
        "Invalid API key",
        "Double check your Supabase `anon` or `service_role` API key.",
    )
