"""Shared fixtures: a real Redis (found or started), a real localauth, apps built by the factory."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings
from tests.support.localauth import KEY_MODES, KeyMode, LocalAuth, run_localauth
from tests.support.redis_server import RedisServer, answers, private_redis

TEST_PASSWORD = "Correct-Horse-9"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL, else the local Redis on 6379 (database 13), else a private one."""
    configured = os.environ.get("TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/13"
        return
    try:
        with private_redis(tmp_path_factory.mktemp("redis")) as server:
            yield server.url
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (never a FLUSH)."""
    prefix = f"sgtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = sync_redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server this test may stop and start."""
    with private_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def localauth(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalAuth]:
    """One localauth per key mode for the session (ES256, autoconfirm on, as hosted
    Supabase's defaults). Legacy keys unless a module asks for both (``both_key_modes``)."""
    key_mode: KeyMode = getattr(request, "param", "legacy")
    with run_localauth(
        tmp_path_factory.mktemp(f"localauth-{key_mode}"),
        env={
            "GOTRUE_MAILER_AUTOCONFIRM": "true",
            "GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL": "10",
        },
        key_mode=key_mode,
    ) as server:
        yield server


# Runs each test of a module that uses `localauth` against a project on legacy keys and one
# created today (new keys, legacy keys off, apikey required).
both_key_modes = pytest.mark.both_key_modes


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_key_modes: run against localauth with legacy keys and with new keys"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    chosen = any(
        "localauth" in str(mark.args[0]) for mark in metafunc.definition.iter_markers("parametrize")
    )
    if (
        metafunc.definition.get_closest_marker("both_key_modes")
        and "localauth" in metafunc.fixturenames
        and not chosen  # a test that names its key mode runs in that one only
    ):
        metafunc.parametrize(
            "localauth", KEY_MODES, indirect=True, ids=[f"{m}-keys" for m in KEY_MODES]
        )


def app_env(auth: LocalAuth, redis_url: str, prefix: str, **extra: Any) -> dict[str, str]:
    """The environment a test app runs with: localauth, a private key prefix, quiet logs."""
    env = {
        "SUPABASE_URL": auth.url,
        **auth.app_key_env(),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "warning",
    }
    env.update({key.upper(): str(value) for key, value in extra.items()})
    return env


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(localauth: LocalAuth, redis_url: str, redis_prefix: str) -> SettingsFactory:
    def build(**extra: Any) -> Settings:
        return Settings.from_environ(app_env(localauth, redis_url, redis_prefix, **extra))

    return build


@pytest.fixture
async def running_apps() -> AsyncIterator[Callable[[Settings], Any]]:
    """Start any number of in-process apps (lifespan included); each gets an httpx client."""
    async with AsyncExitStack() as stack:

        async def start(settings: Settings, **kwargs: Any) -> httpx.AsyncClient:
            app: Starlette = create_app(settings, configure_logs=False, **kwargs)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 50000)),
                base_url="http://testserver",
            )
            await stack.enter_async_context(client)
            return client

        yield start


@pytest.fixture
async def client(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await running_apps(make_settings())
    return result


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"
