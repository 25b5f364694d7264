"""Each worker thread calls the upstream through its own client; nothing is left open."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from services.gateway import GatewayConfig, build_http_client
from services.thread_clients import ThreadClients
from services.upstream_http import upstream_tls_context

pytestmark = pytest.mark.timeout(30)


def _clients() -> tuple[ThreadClients[str], list[httpx.Client]]:
    built: list[httpx.Client] = []

    def build() -> httpx.Client:
        client = httpx.Client()
        built.append(client)
        return client

    return ThreadClients(build, lambda client: f"sdk over {id(client)}"), built


def test_each_thread_gets_its_own_client_once() -> None:
    clients, built = _clients()
    barrier = threading.Barrier(4)

    def twice() -> tuple[int, int, str]:
        first, extra = clients.get()
        barrier.wait()  # all four threads alive at once: four distinct clients
        second, _ = clients.get()
        return id(first), id(second), extra

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: twice(), range(4)))
    assert all(first == second for first, second, _ in results)
    assert len({first for first, _, _ in results}) == 4
    assert all(extra == f"sdk over {first}" for first, _, extra in results)
    assert len(built) == 4
    clients.close()
    assert all(client.is_closed for client in built)


def test_a_finished_thread_closes_its_client() -> None:
    clients, built = _clients()
    thread = threading.Thread(target=clients.get)
    thread.start()
    thread.join()
    assert clients.count == 1
    del thread
    gc.collect()
    assert clients.count == 0
    assert built[0].is_closed
    clients.close()


def test_a_shared_client_serves_every_thread_and_no_other_is_built() -> None:
    shared = httpx.Client()
    clients = ThreadClients(
        lambda: pytest.fail("built a client"), lambda client: "sdk", shared=shared
    )
    with ThreadPoolExecutor(3) as pool:
        assert {id(c) for c, _ in pool.map(lambda _: clients.get(), range(3))} == {id(shared)}
    clients.close()
    assert shared.is_closed


def test_after_close_no_thread_opens_a_client() -> None:
    clients, built = _clients()
    clients.close()
    with pytest.raises(RuntimeError):
        clients.get()
    assert all(client.is_closed for client in built)


def test_every_upstream_client_and_connection_shares_one_tls_context() -> None:
    """Building a TLS context reads the whole CA bundle; it is built once per process."""
    config = GatewayConfig(url="https://project.supabase.co/auth/v1", anon_key="a",
                           service_role_key="s")  # fmt: skip
    first, second = build_http_client(config, connections=1), build_http_client(config)
    try:
        for client in (first, second):
            transport = client._transport
            assert isinstance(transport, httpx.HTTPTransport)
            assert transport._pool._ssl_context is upstream_tls_context()
    finally:
        first.close()
        second.close()
