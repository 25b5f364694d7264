"""What a Supabase sign-in yields, as this service hands it on: the session and the user."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from supabase_auth.types import Session, User

from services import errors


@dataclass(frozen=True)
class AuthSession:
    """A Supabase session as handed to the browser."""

    access_token: str
    refresh_token: str
    expires_in: int
    expires_at: int
    user: dict[str, Any]
    token_type: str = "bearer"

    @classmethod
    def from_sdk(cls, session: Session) -> AuthSession:
        return cls(
            access_token=session.access_token,
            refresh_token=session.refresh_token,
            expires_in=session.expires_in,
            expires_at=session.expires_at or int(time.time()) + session.expires_in,
            user=user_dict(session.user),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "expires_at": self.expires_at,
            "refresh_token": self.refresh_token,
            "user": self.user,
        }


def user_dict(user: User) -> dict[str, Any]:
    return user.model_dump(mode="json", exclude_none=True)


def session_of(session: Session | None) -> AuthSession:
    """The session of a sign-in answer; none means the address is not confirmed yet."""
    if session is None:
        raise errors.EmailNotConfirmed()
    return AuthSession.from_sdk(session)
