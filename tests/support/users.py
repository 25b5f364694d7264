"""Seeding users straight into localauth through the real SDK's Admin API."""

from __future__ import annotations

from typing import Any

from supabase_auth import SyncGoTrueAdminAPI

from tests.support.localauth import LocalAuth


def admin_api(auth: LocalAuth) -> SyncGoTrueAdminAPI:
    return SyncGoTrueAdminAPI(
        url=auth.url + "/auth/v1", headers=auth.admin_headers(), http_client=None
    )


def create_user(
    auth: LocalAuth,
    email: str,
    password: str,
    *,
    confirmed: bool = True,
    app_metadata: dict[str, Any] | None = None,
) -> str:
    """Create a user directly upstream; returns its id."""
    with admin_api(auth) as api:
        attributes: dict[str, Any] = {
            "email": email,
            "password": password,
            "email_confirm": confirmed,
        }
        if app_metadata:
            attributes["app_metadata"] = app_metadata
        return api.create_user(attributes).user.id  # type: ignore[arg-type]


def ban_user(auth: LocalAuth, user_id: str, duration: str = "24h") -> None:
    with admin_api(auth) as api:
        api.update_user_by_id(user_id, {"ban_duration": duration})


def count_users_with_email(auth: LocalAuth, email: str) -> int:
    with admin_api(auth) as api:
        return sum(1 for user in api.list_users(page=1, per_page=1000) if user.email == email)
