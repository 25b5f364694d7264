"""The client-address walk over X-Forwarded-For (app.forwarded), as pure logic."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.forwarded import ProxyTrust, forwarded_entries, forwarded_prefix, parse_address
from app.settings import ConfigurationError, Settings

GATEWAY = ipaddress.ip_address("fd12::5")
EDGE = "100.64.0.9"
CLIENT = "203.0.113.50"
RANGES = ProxyTrust.build(
    [ipaddress.ip_network("fd12::/16"), ipaddress.ip_network("100.64.0.0/10")]
)
HOPS = ProxyTrust.build([ipaddress.ip_network("fd12::/16")], hops=2)

# Whatever a client may write before its own address reaches the app.
forged = st.lists(st.text(alphabet=st.characters(exclude_characters=","), max_size=40), max_size=6)


@given(forged)
def test_nothing_a_client_writes_chooses_its_address(prefix: list[str]) -> None:
    for trust in (RANGES, HOPS):
        entries = forwarded_entries([", ".join([*prefix, CLIENT]), EDGE])
        assert str(trust.client(GATEWAY, entries)) == CLIENT


def test_an_untrusted_peer_is_the_client_whatever_it_sends() -> None:
    peer = ipaddress.ip_address("198.51.100.4")
    assert RANGES.client(peer, [CLIENT, EDGE]) == peer
    assert HOPS.client(peer, [CLIENT, EDGE]) == peer


def test_garbage_where_the_client_should_be_falls_back_to_the_last_proxy() -> None:
    for garbage in ("unknown", "<script>", "999.1.1.1", "1.2.3.4.5", "fe80::1%eth0", "_hidden"):
        assert str(RANGES.client(GATEWAY, [garbage, EDGE])) == EDGE
        assert str(HOPS.client(GATEWAY, [garbage, EDGE])) == EDGE


def test_address_forms_are_canonical() -> None:
    """Ports and brackets dropped, IPv4-mapped IPv6 folded, IPv6 in one spelling: one user
    is one rate-limit bucket however a proxy writes the address."""
    assert str(parse_address("203.0.113.5:4711")) == "203.0.113.5"
    assert str(parse_address("[2001:DB8:0::1]:443")) == "2001:db8::1"
    assert str(parse_address("::ffff:203.0.113.5")) == "203.0.113.5"
    assert parse_address("") is None
    assert forwarded_entries(["a, ,b", "c"]) == ["a", "b", "c"]


def test_prefix_must_be_a_plain_path() -> None:
    assert forwarded_prefix("/identity/") == "/identity"
    for bad in ("identity", "/a b", "//evil.example", "/x?y", "/%2e%2e", ""):
        assert forwarded_prefix(bad) is None


def test_settings_refuse_a_hop_count_without_a_trusted_peer_and_odd_prefixes() -> None:
    """FORWARDED_HOPS counts proxies in front of a trusted peer: without TRUSTED_PROXIES it
    would believe anyone; a prefix must be a plain path."""
    env = {
        "SUPABASE_URL": "http://127.0.0.1:1",
        "SUPABASE_ANON_KEY": "a",
        "SUPABASE_SERVICE_ROLE_KEY": "b",
    }
    with pytest.raises(ConfigurationError, match="FORWARDED_HOPS"):
        Settings.from_environ({**env, "FORWARDED_HOPS": "2"})
    with pytest.raises(ConfigurationError, match="FORWARDED_PREFIXES"):
        Settings.from_environ({**env, "FORWARDED_PREFIXES": "identity"})
    settings = Settings.from_environ(
        {**env, "TRUSTED_PROXIES": "fc00::/7", "FORWARDED_HOPS": "2", "FORWARDED_PREFIXES": "/id"}
    )
    assert (settings.forwarded_hops, settings.forwarded_prefixes) == (2, ["/id"])
