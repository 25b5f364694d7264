"""User metadata is refused up front when Supabase or the token budget could not hold it,
and a record poisoned in Supabase directly does not take sign-in down for anyone else."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from services.metadata import USER_METADATA_MAX_BYTES, encoded_size
from services.tokens import MAX_TOKEN_BYTES
from tests.conftest import TEST_PASSWORD, new_email
from tests.security.conftest import Target, assert_not_5xx, still_healthy
from tests.support.authz import admin_token, bearer, signed_in
from tests.support.localauth import LocalAuth
from tests.support.users import count_users_with_email

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

REGISTER = "/api/v1/auth/register"


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def _filler(size: int) -> dict[str, Any]:
    """Metadata of exactly ``size`` bytes as GoTrue writes it ({"f":"xxx..."})."""
    base = encoded_size({"f": ""})
    return {"f": "x" * (size - base)}


async def test_metadata_at_the_budget_gives_a_working_token(
    target: Target, localauth: LocalAuth
) -> None:
    """The largest metadata the edge accepts still makes a token the app accepts (login,
    then /me): the budget is real, not a guess; one byte more is a 422."""
    email = new_email()
    data = _filler(USER_METADATA_MAX_BYTES)
    # The worst case the budget allows for: <, > and & are six bytes each in the token.
    worst = {"f": "<" * ((USER_METADATA_MAX_BYTES - encoded_size({"f": ""})) // 6)}
    assert encoded_size(data) == USER_METADATA_MAX_BYTES >= encoded_size(worst)
    for metadata in (data, worst):
        address = new_email()
        created = await target.client.post(
            REGISTER, json={"email": address, "password": TEST_PASSWORD, "data": metadata}
        )
        assert created.status_code == 201, created.text
        token = created.json()["session"]["access_token"]
        assert len(token) < MAX_TOKEN_BYTES
        me = await target.client.get("/api/v1/auth/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["user_metadata"]["f"] == metadata["f"]
    over = await target.client.post(
        REGISTER,
        json={
            "email": email,
            "password": TEST_PASSWORD,
            "data": _filler(USER_METADATA_MAX_BYTES + 1),
        },
    )
    assert (over.status_code, over.json()["code"]) == (422, "validation_failed")
    assert over.json()["errors"][0]["field"] == "data"
    assert await anyio.to_thread.run_sync(count_users_with_email, localauth, email) == 0


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ('{"deep": ' + json.dumps(_nested(300)) + "}", 400),  # past the body depth limit
        ('{"deep": ' + json.dumps(_nested(12)) + "}", 422),  # past the metadata depth limit
        ('{"n": 1e999}', 400),
        ('{"n": NaN}', 400),
        ('{"n": -Infinity}', 400),
        ('{"n": 123456789012345678901234567890}', 400),
        ('{"s": "\\ud800"}', 400),
        ('{"s": "a\\u0000b"}', 400),
        ('{"a": 1, "a": 2}', 400),
        ('{"' + "k" * 65 + '": 1}', 422),
        ('{"list": [' + ",".join(["0"] * 300) + "]}", 422),
    ],
)
async def test_poisoned_metadata_is_refused_before_supabase(
    target: Target, localauth: LocalAuth, data: str, status: int
) -> None:
    """Metadata Supabase could not store or read back is refused at the edge: the user is
    not created, the breaker stays closed, and sign-in works for others."""
    healthy = await signed_in(target.client)
    email = new_email()
    body = f'{{"email": "{email}", "password": "{TEST_PASSWORD}", "data": {data}}}'
    for _ in range(6):  # more than the breaker's threshold
        response = await target.client.post(
            REGISTER, content=body.encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert_not_5xx(response)
    assert await anyio.to_thread.run_sync(count_users_with_email, localauth, email) == 0
    await still_healthy(target, healthy["user"]["email"], TEST_PASSWORD)


async def test_a_record_poisoned_in_supabase_does_not_break_others(
    target: Target, localauth: LocalAuth
) -> None:
    """A user written in Supabase directly with metadata nested far deeper than this API
    allows: viewing the admin list that holds it (more often than the breaker's threshold)
    and that user's own sign-in never break anyone else's sign-in."""
    email = new_email()

    key = localauth.service_role_key
    # Raw HTTP: the SDK itself cannot read the record back.
    async with httpx.AsyncClient(base_url=localauth.url) as upstream:
        created = await upstream.post(
            "/auth/v1/admin/users",
            headers={"apikey": key, "Authorization": f"Bearer {key}"},
            json={
                "email": email,
                "password": TEST_PASSWORD,
                "email_confirm": True,
                "user_metadata": _nested(200),
            },
        )
    assert created.status_code == 200, created.text
    healthy = await signed_in(target.client)
    admin = await admin_token(localauth, target.client)
    for _ in range(6):
        listing = await target.client.get(
            "/api/v1/admin/users?page=1&per_page=1000", headers=bearer(admin)
        )
        assert listing.status_code != 500, listing.text
        own = await target.client.post(
            "/api/v1/auth/login", json={"email": email, "password": TEST_PASSWORD}
        )
        assert own.status_code != 500, own.text
    await still_healthy(target, healthy["user"]["email"], TEST_PASSWORD)
