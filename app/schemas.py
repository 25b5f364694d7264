"""Request bodies. Unknown fields are refused, so a typo never passes silently."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value.lower()


Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Password = Annotated[str, Field(min_length=1, max_length=256)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)


class RegisterBody(Body):
    email: Email
    password: Password
    data: dict[str, Any] = Field(default_factory=dict, max_length=50)


class LoginBody(Body):
    email: Email
    password: Password


class RefreshBody(Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class LogoutBody(Body):
    scope: Literal["local", "others", "global"] = "local"


Role = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.:-]+$")]


class RolesBody(Body):
    """The complete set of roles (``app_metadata.roles``); removing one ends the user's
    sessions."""

    roles: Annotated[list[Role], Field(max_length=32)]
