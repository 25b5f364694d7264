"""TLS with a CA generated at test time, and ACL users: the flow runs with exactly the
documented commands; a wrong CA, a missing command or a missing subscription permission
make readiness 503 and diagnose say which."""

from __future__ import annotations

import io
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from app import diagnose
from services.redis_client import CLUSTER_COMMANDS, REQUIRED_COMMANDS
from tests.conftest import app_env
from tests.support.localauth import LocalAuth
from tests.support.redis_server import RedisServer, add_acl_user, free_port, redis_cluster
from tests.support.tls import Pki, make_pki
from tests.support.topology import instances, run_flow, topology_settings

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def prefix() -> str:
    return f"sgtest:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_redis(tmp_path: Path, pki: Pki) -> Iterator[RedisServer]:
    """TLS only (no plain port), client certificates required."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    server = RedisServer(
        free_port(),
        tmp_path / "tls-redis",
        args=(
            "--tls-cert-file",
            str(pki.server_cert),
            "--tls-key-file",
            str(pki.server_key),
            "--tls-ca-cert-file",
            str(pki.ca),
            "--tls-auth-clients",
            "yes",
        ),
        tls=context,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "acl-redis")
    server.start()
    yield server
    server.stop()


async def _diagnose(env: dict[str, str], out: io.StringIO) -> int:
    """``python -m app.diagnose`` runs its own event loop: off this one."""
    return await anyio.to_thread.run_sync(lambda: diagnose.main(["--timeout", "2"], env, out))


def _tls_env(pki: Pki, ca: Path | None = None) -> dict[str, str]:
    return {
        "redis_tls_ca_file": str(ca or pki.ca),
        "redis_tls_cert_file": str(pki.client_cert),
        "redis_tls_key_file": str(pki.client_key),
    }


async def test_tls_with_a_generated_ca_runs_the_flow(
    localauth: LocalAuth, tls_redis: RedisServer, pki: Pki, prefix: str
) -> None:
    settings = topology_settings(localauth, tls_redis.url, prefix, **_tls_env(pki))
    async with instances(settings) as (a, b):
        await run_flow(a, b)
        ready = await a.client.get("/health/ready")
    assert ready.status_code == 200, ready.text


async def test_tls_certificate_error_is_reported_as_such(
    localauth: LocalAuth, tls_redis: RedisServer, pki: Pki, prefix: str
) -> None:
    """A CA that did not sign the server's certificate: readiness and diagnose both say
    the certificate was rejected, not "connection error"."""
    env = app_env(localauth, tls_redis.url, prefix, **_tls_env(pki, ca=pki.other_ca))
    out = io.StringIO()
    assert await _diagnose(env, out) == 1
    assert "[FAIL] redis " in out.getvalue()
    assert "tls_certificate_rejected" in out.getvalue()
    assert "REDIS_TLS_CA_FILE" in out.getvalue()
    settings = topology_settings(localauth, tls_redis.url, prefix, **_tls_env(pki, pki.other_ca))
    async with instances(settings, count=1) as (a,):
        ready = await a.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["state"] == "tls_certificate_rejected"


async def test_acl_user_with_exactly_the_documented_commands_runs_the_flow(
    localauth: LocalAuth, acl_redis: RedisServer, prefix: str
) -> None:
    add_acl_user(acl_redis, "supaguard", "s3cret-pw", prefix=prefix, commands=REQUIRED_COMMANDS)
    url = f"redis://supaguard:s3cret-pw@127.0.0.1:{acl_redis.port}/0"
    settings = topology_settings(localauth, url, prefix, rate_limit_enabled="true")
    async with instances(settings) as (a, b):
        await run_flow(a, b)
        ready = await a.client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    out = io.StringIO()
    assert await _diagnose(app_env(localauth, url, prefix), out) == 0
    for check in ("redis", "redis_write", "redis_commands", "redis_subscription"):
        assert f"[ OK ] {check}" in out.getvalue()


async def test_acl_user_on_a_cluster_with_the_documented_commands_runs_the_flow(
    localauth: LocalAuth, tmp_path: Path, prefix: str
) -> None:
    with redis_cluster(tmp_path / "cluster") as cluster:
        for node in cluster.nodes:
            add_acl_user(
                node, "app", "pw", prefix=prefix, commands=[*REQUIRED_COMMANDS, *CLUSTER_COMMANDS]
            )
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
        settings = topology_settings(localauth, f"redis+cluster://app:pw@{hosts}", prefix)
        async with instances(settings) as (a, b):
            await run_flow(a, b)
            ready = await a.client.get("/health/ready")
    assert ready.status_code == 200, ready.text


@pytest.mark.parametrize(("missing", "state"), [("evalsha", "acl_denied"), ("subscribe", None)])
async def test_acl_without_a_needed_command_is_not_ready_and_says_why(
    localauth: LocalAuth, acl_redis: RedisServer, prefix: str, missing: str, state: str | None
) -> None:
    commands = [c for c in REQUIRED_COMMANDS if c != missing]
    add_acl_user(acl_redis, "partial", "pw-partial", prefix=prefix, commands=commands)
    url = f"redis://partial:pw-partial@127.0.0.1:{acl_redis.port}/0"
    settings = topology_settings(localauth, url, prefix)
    async with instances(settings, count=1) as (a,):
        ready = await a.client.get("/health/ready")
    assert ready.status_code == 503
    check = ready.json()["checks"]["redis"]
    if state == "acl_denied":
        assert check["state"] == "acl_denied"
        assert missing in check["reason"]
    else:
        assert check["state"] == "subscription_missing"
        assert "NoPermission" in check["reason"] or "NOPERM" in check["reason"]
    out = io.StringIO()
    await _diagnose(app_env(localauth, url, prefix), out)
    text = out.getvalue()
    failing = "redis_commands" if state else "redis_subscription"
    assert f"[FAIL] {failing}" in text
    assert "acl_denied" in text


async def test_a_replica_address_is_not_ready(
    localauth: LocalAuth, acl_redis: RedisServer, tmp_path: Path, prefix: str
) -> None:
    """Pointed at a replica, readiness reports read_only, not "ready"."""
    replica = RedisServer(
        free_port(), tmp_path / "replica", args=("--replicaof", "127.0.0.1", str(acl_redis.port))
    )
    replica.start()
    try:
        settings = topology_settings(localauth, replica.url, prefix)
        async with instances(settings, count=1) as (a,):
            ready = await a.client.get("/health/ready")
    finally:
        replica.stop()
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["state"] == "read_only"
