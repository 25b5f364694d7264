"""``/api/v1/admin`` (operators), ``/api/v1/users`` (owners) and ``/api/v1/internal``
(other services). Who may call each is in ``app.policy``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.authz import auth_context
from app.body import read_model
from app.params import path_uuid, query_int
from app.schemas import RolesBody
from app.state import Services
from services import audit

# What Supabase documents for "banned until further notice".
_BAN_FOREVER = "876000h"
_MAX_PER_PAGE = 1000


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _user_id(request: Request) -> str:
    return path_uuid(request.path_params, "user_id", what="user")


def _actor(request: Request) -> str:
    """The admin's user id, for the audit log."""
    return auth_context(request).require_claims().sub


def _roles(user: dict[str, Any]) -> list[str]:
    roles = (user.get("app_metadata") or {}).get("roles")
    return [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []


async def list_users(request: Request) -> Response:
    page = query_int(request.query_params, "page", default=1, upper=1_000_000)
    per_page = query_int(request.query_params, "per_page", default=50, upper=_MAX_PER_PAGE)
    listing = await _services(request).gateway.list_users(page, per_page)
    # Records the SDK cannot read are left out and named, so one bad record never
    # hides the page (or the rest of the list) from the operator.
    return JSONResponse(
        {
            "users": listing.users,
            "skipped": listing.skipped,
            "page": page,
            "per_page": per_page,
        }
    )


async def get_user(request: Request) -> Response:
    user = await _services(request).gateway.get_user(_user_id(request))
    return JSONResponse(user)


async def ban_user(request: Request) -> Response:
    services, user_id = _services(request), _user_id(request)
    # Ours first: from here on every instance refuses the user's tokens, even should
    # the upstream call fail (the operator retries; both steps are idempotent).
    await services.sessions.set_banned(user_id, True)
    await services.sessions.revoke_all(user_id)
    user = await services.gateway.update_user(user_id, {"ban_duration": _BAN_FOREVER})
    audit.event("user.banned", user_id=user_id, actor=_actor(request))
    return JSONResponse(user)


async def unban_user(request: Request) -> Response:
    services, user_id = _services(request), _user_id(request)
    user = await services.gateway.update_user(user_id, {"ban_duration": "none"})
    await services.sessions.set_banned(user_id, False)
    audit.event("user.unbanned", user_id=user_id, actor=_actor(request))
    return JSONResponse(user)


async def set_roles(request: Request) -> Response:
    services, user_id = _services(request), _user_id(request)
    body = await read_model(request, RolesBody)
    current = await services.gateway.get_user(user_id)
    roles = sorted(set(body.roles))
    user = await services.gateway.update_user(user_id, {"app_metadata": {"roles": roles}})
    # Access tokens carry roles until they expire; a removed role must not outlive the
    # request, so taking one away ends the user's sessions. Adding one waits for a refresh.
    if set(_roles(current)) - set(roles):
        await services.sessions.revoke_all(user_id)
    audit.event(
        "user.role_changed",
        user_id=user_id,
        actor=_actor(request),
        roles_before=sorted(_roles(current)),
        roles=roles,
    )
    return JSONResponse(user)


async def revoke_sessions(request: Request) -> Response:
    services, user_id = _services(request), _user_id(request)
    revoked = await services.sessions.revoke_all(user_id)
    audit.event(
        "session.revoked", user_id=user_id, session_ids=revoked, by="admin", actor=_actor(request)
    )
    return JSONResponse({"revoked": len(revoked)})


async def unlock_user(request: Request) -> Response:
    services, user_id = _services(request), _user_id(request)
    user = await services.gateway.get_user(user_id)
    email = user.get("email")
    if services.lockout is not None and isinstance(email, str) and email:
        await services.lockout.unlock(email)
    audit.event("user.unlocked", user_id=user_id, actor=_actor(request))
    return Response(status_code=204)


async def user_sessions(request: Request) -> Response:
    """A user's sessions, for that user or an admin (the ``Owner`` layer decides)."""
    ctx = auth_context(request)
    user_id = _user_id(request)
    sessions = await ctx.services.sessions.list_for_user(user_id)
    current = ctx.require_claims().session_id
    ordered = sorted(sessions, key=lambda s: s.created_at, reverse=True)
    return JSONResponse({"sessions": [s.to_json(current_id=current) for s in ordered]})


async def user_status(request: Request) -> Response:
    """For other services: is this user banned or signed out everywhere since when."""
    services, user_id = _services(request), _user_id(request)
    state = await services.sessions.user_state(user_id)
    return JSONResponse(
        {"user_id": user_id, "banned": state.banned, "not_before": int(state.not_before)}
    )
