"""Redis settings: every deployment form is read into the right topology, addresses and
credentials; bad ones are refused at start and named; nothing prints a password."""

from __future__ import annotations

import ssl

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.settings import ConfigurationError, Settings
from app.state import redis_config
from services.redis_client import RedisConfig, _common, build_client, tls_kwargs
from services.redis_probe import classify

GOOD = {
    "SUPABASE_URL": "https://project.supabase.co",
    "SUPABASE_ANON_KEY": "anon",
    "SUPABASE_SERVICE_ROLE_KEY": "service",
}


def config(**env: str) -> RedisConfig:
    return redis_config(Settings.from_environ({**GOOD, **{k.upper(): v for k, v in env.items()}}))


def test_single_node_url_with_acl_user() -> None:
    cfg = config(redis_url="redis://app:s3cret@cache.internal:6380/2")
    assert cfg.topology == "single"
    assert cfg.hosts() == [("cache.internal", 6380)]
    assert cfg.db() == 2
    assert _common(cfg)["username"] == "app"
    assert _common(cfg)["password"] == "s3cret"
    assert "s3cret" not in cfg.describe()


def test_sentinel_url_names_sentinels_master_and_db() -> None:
    cfg = config(redis_url="redis+sentinel://app:pw@s1:26379,s2:26380,[::1]:26381/primary/3")
    assert cfg.topology == "sentinel"
    assert cfg.hosts() == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert cfg.master_name() == "primary"
    assert cfg.db() == 3
    assert "pw" not in cfg.describe()


def test_sentinel_settings_and_their_own_password() -> None:
    cfg = config(
        redis_sentinels="10.0.0.1:26379,10.0.0.2:26379",
        redis_sentinel_master="cache",
        redis_sentinel_password="sentinel-pw",
        redis_password="data-pw",
    )
    assert cfg.topology == "sentinel"
    assert cfg.hosts() == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert cfg.master_name() == "cache"
    assert cfg.sentinel_password == "sentinel-pw"
    assert _common(cfg)["password"] == "data-pw"


def test_cluster_by_url_or_flag_builds_a_cluster_client() -> None:
    assert config(redis_url="redis+cluster://n1:7000,n2:7001").topology == "cluster"
    cfg = config(redis_url="redis://n1:7000", redis_cluster="true")
    assert cfg.topology == "cluster"
    assert isinstance(build_client(cfg), RedisCluster)
    assert isinstance(build_client(config()), Redis)


def test_tls_settings_reach_the_connection() -> None:
    cfg = config(
        redis_url="rediss://cache:6380/0",
        redis_tls_ca_file="/ca.pem",
        redis_tls_cert_file="/c.pem",
        redis_tls_key_file="/c.key",
    )
    options = tls_kwargs(cfg)
    assert options["ssl_ca_certs"] == "/ca.pem"
    assert options["ssl_certfile"] == "/c.pem"
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert options["ssl_check_hostname"] is True
    assert tls_kwargs(config(redis_tls="true", redis_tls_verify="false"))["ssl_cert_reqs"] == (
        ssl.CERT_NONE
    )
    assert tls_kwargs(config()) == {}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_SENTINELS": "host-without-port"}, "REDIS_SENTINELS"),
        ({"REDIS_KEY_PREFIX": "sg:{x}:"}, "REDIS_KEY_PREFIX"),
        ({"REDIS_TLS_CERT_FILE": "/c.pem"}, "REDIS_TLS_KEY_FILE"),
        ({"REDIS_MIN_REPLICA_ACKS": "-1"}, "REDIS_MIN_REPLICA_ACKS"),
        ({"REDIS_REPLICA_ACK_TIMEOUT_MS": "600"}, "REDIS_REPLICA_ACK_TIMEOUT_MS"),
    ],
)
def test_bad_redis_settings_are_refused_and_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_environ({**GOOD, **env})


def test_a_certificate_error_is_classified_as_such() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed")
        except ssl.SSLError as inner:
            raise ConnectionError("Error 1 connecting to cache:6380.") from inner
    except ConnectionError as exc:
        state, detail = classify(exc)
    assert state == "tls_certificate_rejected"
    assert "REDIS_TLS_CA_FILE" in detail


def test_a_ca_given_in_the_url_query_still_works() -> None:
    """The old redis-py URL parameter keeps working; REDIS_TLS_CA_FILE would override it."""
    client = build_client(config(redis_url="rediss://cache:6380/0?ssl_ca_certs=/url-ca.pem"))
    assert isinstance(client, Redis)
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == "/url-ca.pem"
