"""API key families, where each credential travels, the settings' key rules, and the gateway's
answer to a refused key (rare platform answers come from an ``httpx.MockTransport``)."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from app.settings import ConfigurationError, Settings
from services import errors
from services.apikeys import KeyFamily, classify, request_headers
from services.breaker import BreakerState
from services.gateway import GatewayConfig, SupabaseGateway

pytestmark = pytest.mark.anyio

UPSTREAM = "http://upstream.test/auth/v1"
API = {"X-Supabase-Api-Version": "2024-01-01"}
PUBLISHABLE = "sb_publishable_" + "p" * 22
SECRET = "sb_secret_" + "s" * 32
USER_ID = "11111111-1111-4111-8111-111111111111"
USER: dict[str, Any] = {
    "id": USER_ID,
    "aud": "authenticated",
    "role": "authenticated",
    "email": "someone@example.com",
    "app_metadata": {},
    "user_metadata": {},
    "created_at": "2024-01-01T00:00:00Z",
}
KID_NIL = "unrecognized JWT kid <nil> for algorithm ES256"


def legacy(role: str) -> str:
    return jwt.encode({"iss": "supabase", "role": role}, "project-secret-" * 3, "HS256")


def test_each_key_family_is_recognised() -> None:
    assert classify(PUBLISHABLE).family is KeyFamily.PUBLISHABLE
    assert classify(f"  {SECRET}\n").family is KeyFamily.SECRET
    assert classify(legacy("anon")).family is KeyFamily.LEGACY_ANON
    assert classify(legacy("service_role")).family is KeyFamily.LEGACY_SERVICE_ROLE
    assert classify(legacy("authenticated")).family is KeyFamily.OTHER_JWT
    for junk in ("sb_secret_", "anon", "a.b.c", ""):
        assert classify(junk).family is KeyFamily.UNKNOWN, junk
    # A key never shows itself, not even in a repr.
    assert SECRET not in repr(classify(SECRET))
    assert SECRET not in classify(SECRET).label


def test_sb_keys_travel_in_apikey_only_jwt_keys_also_as_bearer() -> None:
    assert request_headers(classify(PUBLISHABLE)) == {"apikey": PUBLISHABLE}
    assert request_headers(classify(SECRET)) == {"apikey": SECRET}
    service = legacy("service_role")
    assert request_headers(classify(service)) == {
        "apikey": service,
        "Authorization": f"Bearer {service}",
    }


def settings(**keys: str) -> Settings:
    return Settings.from_environ({"SUPABASE_URL": "https://ref.supabase.co", **keys})


def test_either_family_configures_the_service_and_the_new_key_wins() -> None:
    new = settings(SUPABASE_PUBLISHABLE_KEY=PUBLISHABLE, SUPABASE_SECRET_KEY=SECRET)
    assert (new.public_api_key.value, new.server_api_key.value) == (PUBLISHABLE, SECRET)
    old = settings(
        SUPABASE_ANON_KEY=legacy("anon"), SUPABASE_SERVICE_ROLE_KEY=legacy("service_role")
    )
    assert old.server_api_key.family is KeyFamily.LEGACY_SERVICE_ROLE
    both = settings(
        SUPABASE_PUBLISHABLE_KEY=PUBLISHABLE,
        SUPABASE_ANON_KEY=legacy("anon"),
        SUPABASE_SECRET_KEY=SECRET,
        SUPABASE_SERVICE_ROLE_KEY=legacy("service_role"),
    )
    assert (both.public_api_key.value, both.server_api_key.value) == (PUBLISHABLE, SECRET)
    mixed = settings(
        SUPABASE_PUBLISHABLE_KEY=PUBLISHABLE, SUPABASE_SERVICE_ROLE_KEY=legacy("service_role")
    )
    assert mixed.server_api_key.family is KeyFamily.LEGACY_SERVICE_ROLE


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"SUPABASE_PUBLISHABLE_KEY": SECRET, "SUPABASE_SECRET_KEY": SECRET},
            "SUPABASE_PUBLISHABLE_KEY: holds a secret key (sb_secret_…)",
        ),
        (
            {"SUPABASE_PUBLISHABLE_KEY": PUBLISHABLE, "SUPABASE_SECRET_KEY": PUBLISHABLE},
            "SUPABASE_SECRET_KEY: holds a publishable key (sb_publishable_…)",
        ),
        (
            {"SUPABASE_ANON_KEY": legacy("anon"), "SUPABASE_SERVICE_ROLE_KEY": legacy("anon")},
            "SUPABASE_SERVICE_ROLE_KEY: holds the legacy anon key",
        ),
        (
            {"SUPABASE_ANON_KEY": legacy("service_role"), "SUPABASE_SECRET_KEY": SECRET},
            "SUPABASE_ANON_KEY: holds the legacy service_role key",
        ),
        (
            {
                "SUPABASE_PUBLISHABLE_KEY": PUBLISHABLE,
                "SUPABASE_SECRET_KEY": legacy("authenticated"),
            },
            "SUPABASE_SECRET_KEY: holds a JWT with role 'authenticated'",
        ),
        (
            {"SUPABASE_SECRET_KEY": SECRET},
            "SUPABASE_PUBLISHABLE_KEY: is required but not set (or the legacy SUPABASE_ANON_KEY)",
        ),
    ],
)
def test_a_key_in_the_wrong_place_stops_start_up_naming_the_fix(
    keys: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings(**keys)
    assert message in str(refused.value)
    for value in keys.values():
        assert value not in str(refused.value)


def test_a_missing_key_is_named_next_to_other_missing_settings() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environ({})
    text = str(refused.value)
    for name in ("SUPABASE_URL", "SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY"):
        assert name in text


# -- the gateway ---------------------------------------------------------------------


class Upstream:
    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def gateway(upstream: Upstream, **overrides: Any) -> SupabaseGateway:
    values: dict[str, Any] = {
        "url": UPSTREAM,
        "anon_key": PUBLISHABLE,
        "service_role_key": SECRET,
        "pool_size": 2,
        "deadline": 2.0,
        "connect_timeout": 0.5,
        "read_timeout": 1.0,
        "breaker_failure_threshold": 2,
    }
    values.update(overrides)
    client = httpx.Client(transport=httpx.MockTransport(upstream))
    return SupabaseGateway(GatewayConfig(**values), http_client=client)


def kid_nil() -> httpx.Response:
    return httpx.Response(403, json={"code": "bad_jwt", "message": KID_NIL}, headers=API)


async def test_a_transient_key_error_on_a_read_is_retried_within_the_deadline() -> None:
    """403 "unrecognized JWT kid <nil>" (supabase/auth#2647) then success: the read passes."""
    upstream = Upstream(kid_nil(), httpx.Response(200, json=USER, headers=API))
    gw = gateway(upstream)
    try:
        user = await gw.get_user(USER_ID)
        assert user["id"] == USER_ID
        assert len(upstream.calls) == 2
    finally:
        gw.close()


async def test_a_lasting_key_error_is_503_and_never_opens_the_breaker() -> None:
    upstream = Upstream(kid_nil())
    gw = gateway(upstream)
    try:
        for _ in range(4):  # twice the breaker's threshold
            with pytest.raises(errors.UpstreamMisconfigured) as refused:
                await gw.list_users(1, 1)
            assert "supabase/auth#2647" in (refused.value.debug or "")
            assert SECRET not in (refused.value.debug or "")
        assert len(upstream.calls) == 4 * 3  # each call retried up to UPSTREAM_MAX_ATTEMPTS
        assert gw.breaker.state is BreakerState.CLOSED
    finally:
        gw.close()


async def test_a_registration_is_not_retried_on_a_key_error() -> None:
    upstream = Upstream(kid_nil())
    gw = gateway(upstream)
    try:
        with pytest.raises(errors.UpstreamMisconfigured):
            await gw.create_user({"email": "a@example.com", "password": "x"})
        assert len(upstream.calls) == 1
    finally:
        gw.close()


async def test_admin_writes_refused_while_reads_pass_name_the_platform_issue() -> None:
    """supabase/supabase#48288: the secret key passes the gateway, GoTrue refuses its token."""
    upstream = Upstream(
        httpx.Response(403, json={"code": "bad_jwt", "message": "invalid JWT"}, headers=API)
    )
    gw = gateway(upstream)
    try:
        with pytest.raises(errors.UpstreamMisconfigured) as refused:
            await gw.create_user({"email": "a@example.com", "password": "x"})
        debug = refused.value.debug or ""
        assert "secret key (sb_secret_…) sent in the apikey header on create_user" in debug
        assert "supabase/supabase#48288" in debug
        assert "SUPABASE_SERVICE_ROLE_KEY" in debug
    finally:
        gw.close()


async def test_a_legacy_service_key_refused_as_bearer_names_the_authorization_header() -> None:
    upstream = Upstream(
        httpx.Response(403, json={"code": "bad_jwt", "message": "signature"}, headers=API)
    )
    gw = gateway(upstream, service_role_key=legacy("service_role"))
    try:
        with pytest.raises(errors.UpstreamMisconfigured) as refused:
            await gw.get_user(USER_ID)
        assert "legacy service_role JWT key sent in the Authorization (bearer) header" in (
            refused.value.debug or ""
        )
        assert upstream.calls[0].headers["authorization"].startswith("Bearer ey")
    finally:
        gw.close()


async def test_a_user_token_refused_on_sign_out_is_still_the_users_problem() -> None:
    """On sign-out the bearer is the user's token: its refusal is not a key fault."""
    upstream = Upstream(
        httpx.Response(403, json={"code": "bad_jwt", "message": "expired"}, headers=API)
    )
    gw = gateway(upstream)
    try:
        with pytest.raises(errors.SessionRevoked):
            await gw.sign_out("a.b.c", "local")
        assert upstream.calls[0].headers["apikey"] == SECRET
        assert upstream.calls[0].headers["authorization"] == "Bearer a.b.c"
    finally:
        gw.close()
