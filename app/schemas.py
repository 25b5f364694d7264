"""Request bodies. Unknown fields are refused, so a typo never passes silently."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.metadata import metadata_problems

# Any character but "@", white space and control characters (which no mailbox holds).
_C = r"[^@\s\x00-\x1f\x7f]"
_EMAIL = re.compile(rf"^{_C}{{1,64}}@{_C}+\.{_C}+$")


def _email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value.lower()


def _user_metadata(value: dict[str, Any]) -> dict[str, Any]:
    problems = metadata_problems(value)
    if problems:
        raise ValueError("user metadata " + "; ".join(problems))
    return value


UserMetadata = Annotated[dict[str, Any], Field(max_length=50), AfterValidator(_user_metadata)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Password = Annotated[str, Field(min_length=1, max_length=256)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)


class RegisterBody(Body):
    email: Email
    password: Password
    data: UserMetadata = Field(default_factory=dict)


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
