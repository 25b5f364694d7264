"""The adversarial suite: the in-process app over real localauth and real Redis.

Hypothesis runs with a bounded number of examples, no deadline (the machine is shared and
every example is a real HTTP round trip), derandomized (a CI failure reproduces from the
same seed locally) and without an example database (nothing written into the clone).
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import SearchStrategy
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette

from app.main import create_app
from app.state import Services
from services.breaker import BreakerState
from tests.conftest import SettingsFactory

settings.register_profile(
    "security",
    max_examples=int(os.environ.get("SECURITY_EXAMPLES", "40")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

EVENTS_SECRET = "whsec_" + base64.b64encode(b"supaguard-security-suite-secret!").decode()
SERVICE_ID, SERVICE_SECRET = "billing", "b1ll1ng-s3cret-value"
PROBLEM = "application/problem+json"


@dataclass
class Target:
    app: Starlette
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def breaker_closed(self) -> bool:
        return self.services.gateway.breaker.state is BreakerState.CLOSED


def sign_event(
    body: bytes, *, secret: str = EVENTS_SECRET, at: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, as Supabase would send them."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    moment = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@pytest.fixture
async def start_target() -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:

        async def start(settings_obj: Any, *, client_ip: str = "203.0.113.7") -> Target:
            app = create_app(settings_obj, configure_logs=False)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=(client_ip, 50000)),
                base_url="http://testserver",
            )
            await stack.enter_async_context(client)
            return Target(app, client)

        yield start


def hardened(make_settings: SettingsFactory, **extra: Any) -> Any:
    """Production-like settings with every feature of the suite on."""
    values: dict[str, Any] = {
        "environment": "production",
        "supabase_events_secret": "v1," + EVENTS_SECRET,
        "service_credentials": f"{SERVICE_ID}:{SERVICE_SECRET}",
        # The fuzzers send many requests from one address; limits are tested on their own.
        "rate_limit_enabled": "false",
        "lockout_enabled": "false",
    }
    values.update(extra)
    return make_settings(**values)


@pytest.fixture
async def target(start_target: Any, make_settings: SettingsFactory) -> Target:
    result: Target = await start_target(hardened(make_settings))
    return result


def assert_not_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(PROBLEM), response.text[:200]
        # Production settings: nothing internal in the answer.
        assert "debug" not in response.json(), response.text[:200]


async def fuzz(
    strategy: SearchStrategy[Any],
    example: Callable[[Any], Coroutine[Any, Any, None]],
    *,
    max_examples: int | None = None,
) -> None:
    """Run ``example`` (on the event loop) for values Hypothesis draws from ``strategy``.

    Hypothesis drives from a worker thread and each example hops back onto the loop, so
    the test itself stays one coroutine: its fixtures, and the checks it makes after the
    whole run (breaker closed, a real login working), see every example's effect."""
    profile = settings.get_profile("security")
    chosen = settings(profile, max_examples=max_examples or profile.max_examples)

    @chosen
    @given(strategy)
    def run(value: Any) -> None:
        anyio.from_thread.run(example, value)

    await anyio.to_thread.run_sync(run)


async def still_healthy(target: Target, email: str, password: str) -> None:
    """The breaker is closed and a legitimate sign-in works."""
    assert target.breaker_closed(), target.services.gateway.breaker.state
    response = await target.client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}
    )
    assert response.status_code == 200, response.text
