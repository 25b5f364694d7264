"""No account enumeration by timing: failed sign-ins for known and unknown addresses take
indistinguishable time through this service, although the upstream's own timing differs
(localauth, like Supabase Auth, answers an unknown address without a bcrypt check)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.security.conftest import Target
from tests.support.localauth import LocalAuth, run_localauth
from tests.support.users import create_user

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

LOGIN = "/api/v1/auth/login"
ROUNDS = 30
WRONG = "Wrong-password-1"


@pytest.fixture(scope="module")
def costly_localauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAuth]:
    """localauth with bcrypt cost 8 (Supabase runs 10; 8 keeps the suite fast), so the
    upstream's difference between a known and an unknown address is real (well over 3x)."""
    with run_localauth(
        tmp_path_factory.mktemp("costly"),
        bcrypt_cost=8,
        env={"GOTRUE_MAILER_AUTOCONFIRM": "true"},
    ) as server:
        yield server


async def _timed(client: httpx.AsyncClient, url: str, body: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.post(url, json=body)
    return time.perf_counter() - started, response.status_code


def _ratio(known: list[float], unknown: list[float]) -> float:
    return statistics.median(known) / statistics.median(unknown)


async def test_failed_sign_ins_take_the_same_time_for_known_and_unknown_addresses(
    start_target: Any, costly_localauth: LocalAuth, redis_url: str, redis_prefix: str
) -> None:
    """Interleaved wrong-password sign-ins for an existing account and for unknown
    addresses, in one run, through the service and straight at the upstream: through the
    service the ratio of the medians is near 1 (guarded within 0.5-2.0), while upstream it
    is far from it (the check that the measurement can tell the two apart)."""
    env = app_env(
        costly_localauth,
        redis_url,
        redis_prefix,
        rate_limit_enabled="false",
        lockout_enabled="false",
    )
    target: Target = await start_target(Settings.from_environ(env))
    email = new_email()
    await anyio.to_thread.run_sync(create_user, costly_localauth, email, TEST_PASSWORD)
    # Real traffic teaches the floor the successful path.
    for _ in range(8):
        took, status = await _timed(
            target.client, LOGIN, {"email": email, "password": TEST_PASSWORD}
        )
        assert status == 200
    token_url = costly_localauth.url + "/auth/v1/token?grant_type=password"
    key = costly_localauth.anon_key
    times: dict[str, list[float]] = {
        k: [] for k in ("svc_known", "svc_unknown", "up_known", "up_unknown")
    }
    async with httpx.AsyncClient(headers={"apikey": key}) as upstream:
        for _ in range(ROUNDS):
            for name, client, url, address in (
                ("svc_known", target.client, LOGIN, email),
                ("svc_unknown", target.client, LOGIN, new_email()),
                ("up_known", upstream, token_url, email),
                ("up_unknown", upstream, token_url, new_email()),
            ):
                took, status = await _timed(client, url, {"email": address, "password": WRONG})
                assert status in (400, 401)
                times[name].append(took)
    service = _ratio(times["svc_known"], times["svc_unknown"])
    upstream_ratio = _ratio(times["up_known"], times["up_unknown"])
    medians = {k: round(statistics.median(v) * 1000, 2) for k, v in times.items()}
    print(f"\nmedians (ms) {medians}; service ratio {service:.3f}, upstream {upstream_ratio:.3f}")
    assert upstream_ratio > 3.0, medians  # the upstream does reveal it
    assert 0.5 <= service <= 2.0, medians
