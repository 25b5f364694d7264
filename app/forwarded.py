"""Who the client is, behind a chain of proxies (pure logic, no I/O).

Each proxy appends the address it received the connection from to ``X-Forwarded-For``, so
the header reads ``<anything the client wrote>, <client>, <proxy 1>, ..., <proxy n-1>`` and
the app's peer is proxy n. Only the right-hand end was written by proxies; everything to
the left of the client may be forged. So the client is found from the right:

* the peer must be a trusted proxy (``TRUSTED_PROXIES``), or no header counts at all;
* then, walking the entries right to left, the first ``FORWARDED_HOPS - 1`` are proxies by
  count (for a hop whose addresses are not known, such as a platform edge), and any entry
  inside ``TRUSTED_PROXIES`` is a proxy too;
* the first other entry is the client. An entry that is not an IP address stops the walk
  (nothing left of it can be believed): the client is then the last proxy seen, and the
  garbage is never stored anywhere.

Hand-written rather than uvicorn's ``ProxyHeadersMiddleware``: that one has no hop count,
and it returns an unparsable entry ("unknown", "<script>") as the client address, which
would then key rate limits and land in session records.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The longest textual IPv6 address with an embedded IPv4 part is 45 characters.
_MAX_ADDRESS = 45
# A path prefix a proxy may add (X-Forwarded-Prefix): segments of unreserved characters.
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
_SCHEMES = frozenset({"http", "https"})


# Parsing and range checks are cached: the same few proxy and client addresses come back on
# every request, and ``ipaddress`` costs microseconds per IPv6 parse on the hot path. The
# caches are bounded, and only entries proxies wrote are ever parsed (the walk stops at the
# client), so a client cannot fill them with forged values.
_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_CACHE_SIZE)
def parse_address(text: str) -> IpAddress | None:
    """An address from a forwarded entry (``1.2.3.4``, ``1.2.3.4:5``, ``2001:db8::1``,
    ``[2001:db8::1]:5``), IPv4-mapped IPv6 folded to IPv4; ``None`` for anything else.
    Cached: every request behind a proxy or on a dual-stack socket parses its peer, and
    ``ipaddress`` parsing costs microseconds."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    if not text or len(text) > _MAX_ADDRESS or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return canonical(address)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def address_text(address: IpAddress) -> str:
    """``str(address)``, cached (formatting an IPv6 address is not cheap either)."""
    return str(address)


def canonical(address: IpAddress) -> IpAddress:
    """``::ffff:a.b.c.d`` (how a dual-stack socket reports an IPv4 peer) as ``a.b.c.d``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_entries(values: Iterable[str]) -> list[str]:
    """The entries of every ``X-Forwarded-For`` line, in order (a proxy may add a line of
    its own instead of appending to the last one), empty entries dropped."""
    entries: list[str] = []
    for value in values:
        entries.extend(item for item in (part.strip() for part in value.split(",")) if item)
    return entries


@dataclass(frozen=True)
class ProxyTrust:
    """Which peers may speak for the client (``networks``) and how many proxies stand in
    front of the app, the peer included (``hops``)."""

    networks: tuple[IpNetwork, ...]
    hops: int = 1

    def __post_init__(self) -> None:
        cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._in_networks)
        object.__setattr__(self, "trusts", cached)

    @classmethod
    def build(cls, networks: Sequence[IpNetwork], hops: int = 1) -> ProxyTrust:
        return cls(tuple(networks), max(1, hops))

    def trusts(self, address: IpAddress) -> bool:
        """``address`` lies in one of ``networks`` (cached per instance)."""
        return self._in_networks(address)

    def _in_networks(self, address: IpAddress) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: IpAddress, entries: Sequence[str]) -> IpAddress:
        """The client address for a request from ``peer`` carrying ``entries``."""
        if not self.trusts(peer):
            return peer
        client = peer
        by_count = self.hops - 1
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                break
            client = address
            if by_count > 0:
                by_count -= 1
                continue
            if not self.trusts(address):
                break
        return client


def forwarded_scheme(value: str) -> str | None:
    """``http`` or ``https`` from a trusted ``X-Forwarded-Proto``; a list or anything else
    is ignored."""
    scheme = value.strip().lower()
    return scheme if scheme in _SCHEMES else None


def forwarded_prefix(value: str) -> str | None:
    """A path prefix from a trusted ``X-Forwarded-Prefix``, without its trailing slash."""
    prefix = value.strip().rstrip("/")
    return prefix if _PREFIX.fullmatch(prefix) else None
