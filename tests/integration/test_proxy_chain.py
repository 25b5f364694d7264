"""The documented topology, user -> platform edge -> gateway -> app, through real proxies
(tests/support/proxychain.py): each user keeps their own address for rate limits, lockout
and session records, and nothing a client writes into a header changes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.appserver import run_app
from tests.support.localauth import LocalAuth
from tests.support.proxychain import EDGE_SOURCE, GATEWAY_PEER, ProxyChain, proxy_chain

# The two documented ways to describe the chain to the app: every proxy's range in
# TRUSTED_PROXIES, or only the gateway's range plus the number of hops (for an edge whose
# addresses are not published, as on Railway).
MODES: dict[str, dict[str, str | int]] = {
    "trusted-ranges": {"trusted_proxies": f"{GATEWAY_PEER}/128,{EDGE_SOURCE}/32"},
    "hop-count": {"trusted_proxies": f"{GATEWAY_PEER}/128", "forwarded_hops": 2},
}
# Headers a client may send to pass for someone else.
SPOOFS: list[dict[str, str]] = [
    {},
    {"X-Forwarded-For": "198.51.100.77"},
    {"X-Forwarded-For": "127.0.1.1, 127.0.0.2"},
    {"X-Real-IP": "198.51.100.78", "Forwarded": "for=198.51.100.79"},
    {"X-Forwarded-For": "<script>, unknown, 999.1.1.1"},
]


def user_client(chain: ProxyChain, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (a distinct user)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=chain.url, transport=transport, timeout=15)


@pytest.fixture(params=sorted(MODES))
def chain(
    request: pytest.FixtureRequest,
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> Iterator[ProxyChain]:
    env = app_env(localauth, redis_url, redis_prefix, **MODES[request.param])
    with (
        run_app(env, tmp_path / "app", host="::") as server,
        proxy_chain(server.port, tmp_path / "proxies") as proxies,
    ):
        yield proxies


def session_address(client: httpx.Client, access_token: str) -> str:
    auth = {"Authorization": f"Bearer {access_token}"}
    listing = client.get("/api/v1/auth/sessions", headers=auth)
    assert listing.status_code == 200, listing.text
    (current,) = [s for s in listing.json()["sessions"] if s["current"]]
    ip: str = current["ip"]
    return ip


@pytest.mark.timeout(120)
def test_distinct_users_behind_the_chain_get_their_own_address(chain: ProxyChain) -> None:
    """12 users behind one edge and one gateway: each registers, fails one login and logs
    in, some with forged forwarding headers. No 429 (each has its own rate-limit and
    lockout bucket), and every session records the user's own address."""
    for n in range(1, 13):
        address = f"127.0.1.{n}"
        spoof = SPOOFS[n % len(SPOOFS)]
        body = {"email": new_email(), "password": TEST_PASSWORD}
        with user_client(chain, address) as client:
            assert client.post("/api/v1/auth/register", json=body, headers=spoof).status_code == 201
            wrong = {**body, "password": "Wrong-Horse-9"}
            failed = client.post("/api/v1/auth/login", json=wrong, headers=spoof)
            assert failed.status_code == 401, (address, failed.status_code, failed.text)
            login = client.post("/api/v1/auth/login", json=body, headers=spoof)
            assert login.status_code == 200, (address, login.status_code, login.text)
            assert session_address(client, login.json()["access_token"]) == address, spoof


@pytest.mark.timeout(120)
def test_one_user_rotating_forged_addresses_still_hits_the_limit(chain: ProxyChain) -> None:
    """One address that sends a new X-Forwarded-For each time is still one bucket: the
    login limit answers 429 within a dozen failed attempts."""
    statuses = []
    with user_client(chain, "127.0.1.50") as client:
        for n in range(12):
            forged = {"X-Forwarded-For": f"198.51.100.{n + 1}", "X-Real-IP": f"192.0.2.{n + 1}"}
            body = {"email": new_email(), "password": "Wrong-Horse-9"}
            statuses.append(
                client.post("/api/v1/auth/login", json=body, headers=forged).status_code
            )
    assert 429 in statuses, statuses
    assert set(statuses) <= {401, 429}, statuses


@pytest.mark.timeout(60)
def test_openapi_servers_come_from_the_trusted_chain_only(chain: ProxyChain) -> None:
    """``servers`` is relative (never a forgeable Host or scheme), and a client's own
    X-Forwarded-Prefix does not reach it through the chain."""
    forged = {"X-Forwarded-Proto": "http", "X-Forwarded-Prefix": "/evil"}
    with user_client(chain, "127.0.1.60") as client:
        servers = client.get("/openapi.json", headers=forged).json()["servers"]
    assert servers == [{"url": "/"}], servers


@pytest.mark.timeout(60)
def test_one_request_id_in_the_gateway_log_and_the_app(chain: ProxyChain) -> None:
    """The id the app answers with (X-Request-ID, problem body) is the gateway's own id
    from its access log, not the X-Kong-Request-Id a client sent."""
    with user_client(chain, "127.0.1.61") as client:
        response = client.get("/api/v1/auth/me", headers={"X-Kong-Request-Id": "forged-id"})
    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    assert request_id != "forged-id"
    assert response.json()["request_id"] == request_id
    deadline = time.monotonic() + 5
    while request_id not in chain.gateway_log.read_text():
        assert time.monotonic() < deadline, chain.gateway_log.read_text()
        time.sleep(0.05)
    (line,) = [line for line in chain.gateway_log.read_text().splitlines() if request_id in line]
    # The gateway resolved the same user the app did (real_ip from the trusted edge).
    assert line.split()[1:3] == [EDGE_SOURCE, "127.0.1.61"], line


@pytest.mark.timeout(60)
def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Straight to the app (not through the gateway), forged headers change nothing."""
    env = app_env(localauth, redis_url, redis_prefix, **MODES["hop-count"])
    forged = {
        "X-Forwarded-For": "198.51.100.7, 127.0.0.2",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/evil",
    }
    body = {"email": new_email(), "password": TEST_PASSWORD}
    with run_app(env, tmp_path, host="::") as server:
        transport = httpx.HTTPTransport(local_address="127.0.1.70")
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, transport=transport, timeout=15) as client:
            assert client.post("/api/v1/auth/register", json=body).status_code == 201
            login = client.post("/api/v1/auth/login", json=body, headers=forged)
            assert login.status_code == 200
            assert session_address(client, login.json()["access_token"]) == "127.0.1.70"
            (spec_server,) = client.get("/openapi.json", headers=forged).json()["servers"]
            assert spec_server == {"url": "/"}, spec_server
