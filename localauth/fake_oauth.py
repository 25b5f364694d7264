"""A fake OAuth provider, ``provider=fake``, for development and tests of "Sign in with ...".

On with ``GOTRUE_EXTERNAL_FAKE_ENABLED=true``. It ends the way GoTrue's external provider
flow ends: ``GET /authorize?provider=fake&redirect_to=...&code_challenge=...`` redirects
(302) to a local consent page (standing in for the provider's sign-in and GoTrue's
``/callback``); approving it finds or creates the user with a ``fake`` identity and
redirects to ``redirect_to`` with ``?code=`` (PKCE, exchanged by ``POST
/token?grant_type=pkce``) or with the session in the fragment (implicit). Denying it
redirects with ``error=access_denied``.

The consent page takes ``email`` and ``name`` (a form POST; ``login_hint`` pre-fills the
address), so a test or a developer picks who signs in.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from localauth.email_flows import allowed_redirect
from localauth.errors import ApiError
from localauth.models import is_banned
from localauth.onetime import OneTime, Pkce
from localauth.params import Body
from localauth.routes import endpoint
from localauth.validation import validate_email

if TYPE_CHECKING:
    import sqlite3

    from localauth.routes import Context

__all__ = ["PROVIDER", "authorize", "consent"]

PROVIDER = "fake"
_MAX_FORM_BYTES = 8192


@dataclass(frozen=True)
class _Pending:
    redirect_to: str
    pkce: Pkce | None
    created_at: float


_pending: dict[str, _Pending] = {}
_lock = threading.Lock()


def _with(url: str, *, query: dict[str, str] | None = None, fragment: str = "") -> str:
    parts = urlsplit(url)
    q = parts.query
    if query:
        q = (q + "&" if q else "") + urlencode(query)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, q, fragment))


async def authorize(request: Request, ctx: Context) -> Response:
    query = dict(request.query_params)
    pkce = Pkce.from_body(Body(query))
    redirect = allowed_redirect(ctx.settings, query.get("redirect_to", ""))
    state = secrets.token_urlsafe(24)
    now = time.time()
    with _lock:
        expiry = ctx.settings.flow_state_expiry_duration
        for old in [k for k, v in _pending.items() if now > v.created_at + expiry]:
            del _pending[old]
        _pending[state] = _Pending(redirect, pkce, now)
    target = f"{ctx.settings.api_external_url}/fake-oauth/consent?" + urlencode(
        {"state": state, "login_hint": query.get("login_hint", "")}
    )
    return RedirectResponse(target, status_code=302)


def _page(state: str, hint: str) -> str:
    s, h = html.escape(state, quote=True), html.escape(hint, quote=True)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Fake provider: sign in</title></head>
<body><h1>Sign in with the fake provider</h1>
<form method="post">
<input type="hidden" name="state" value="{s}">
<label>Email <input name="email" type="email" value="{h}" required></label>
<label>Name <input name="name" value="Fake User"></label>
<button name="decision" value="approve">Approve</button>
<button name="decision" value="deny">Deny</button>
</form></body></html>"""


@endpoint
async def consent(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    if request.method == "GET":
        state = request.query_params.get("state", "")
        with _lock:
            known = state in _pending
        if not known:
            raise ApiError(400, "validation_failed", "OAuth state is unknown or expired")
        return HTMLResponse(_page(state, request.query_params.get("login_hint", "")))
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        raise ApiError(413, "request_too_large", "Request body too large")
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    with _lock:
        pending = _pending.pop(form.get("state", ""), None)
    if pending is None or time.time() > (
        pending.created_at + ctx.settings.flow_state_expiry_duration
    ):
        raise ApiError(400, "validation_failed", "OAuth state is unknown or expired")
    if form.get("decision", "approve") != "approve":
        params = {
            "error": "access_denied",
            "error_code": "access_denied",
            "error_description": "The user denied the sign-in",
        }
        if pending.pkce is not None:
            return RedirectResponse(_with(pending.redirect_to, query=params), status_code=302)
        return RedirectResponse(
            _with(pending.redirect_to, fragment=urlencode(params)), status_code=302
        )
    email = validate_email(form.get("email", ""))
    name = form.get("name", "")[:200]
    target = await ctx.run(_sign_in, ctx, pending, email, name)
    return RedirectResponse(target, status_code=302)


def _sign_in(ctx: Context, pending: _Pending, email: str, name: str) -> str:
    core, aud = ctx.core, ctx.settings.jwt_aud
    with core.db.write() as conn:
        user = core.user_by_email(conn, email, aud)
        if user is None:
            user = core.create_user(
                conn,
                email=email,
                password_hash="",
                aud=aud,
                email_confirmed=True,
                user_metadata={"full_name": name, "name": name, "email": email},
            )
        if is_banned(user):
            params = {"error": "access_denied", "error_code": "user_banned"}
            return _with(pending.redirect_to, query=params)
        user = _link_identity(conn, ctx, user, email, name)
        if pending.pkce is not None:
            OneTime.start_flow(conn, user["id"], pending.pkce, "oauth")
            code = OneTime.issue_auth_code(conn, user["id"], "oauth")
            return _with(pending.redirect_to, query={"code": code})
        session = core.issue_session(conn, user, "oauth")
    fragment = urlencode(
        {
            "access_token": session["access_token"],
            "expires_at": str(session["expires_at"]),
            "expires_in": str(session["expires_in"]),
            "refresh_token": session["refresh_token"],
            "token_type": "bearer",
            "provider_token": "fake-provider-token",
        }
    )
    return _with(pending.redirect_to, fragment=fragment)


def _link_identity(
    conn: sqlite3.Connection, ctx: Context, user: sqlite3.Row, email: str, name: str
) -> sqlite3.Row:
    now = time.time()
    found = conn.execute(
        "SELECT 1 FROM identities WHERE user_id = ? AND provider = ?", (user["id"], PROVIDER)
    ).fetchone()
    if found is None:
        data: dict[str, Any] = {
            "sub": f"fake-{uuid.uuid5(uuid.NAMESPACE_URL, email)}",
            "email": email,
            "email_verified": True,
            "name": name,
            "iss": f"{ctx.settings.api_external_url}/fake-oauth",
        }
        conn.execute(
            "INSERT INTO identities (identity_id, provider_id, user_id, provider, "
            "identity_data, email, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(uuid.uuid4()),
                data["sub"],
                user["id"],
                PROVIDER,
                json.dumps(data),
                email,
                now,
                now,
            ),
        )
        meta = json.loads(user["app_metadata"])
        providers = [p for p in meta.get("providers") or [] if p != PROVIDER]
        meta["providers"] = [*providers, PROVIDER]
        meta.setdefault("provider", PROVIDER)
        user = ctx.core.update_user_columns(conn, user["id"], {"app_metadata": json.dumps(meta)})
    return user
