"""The first checks of every request: a bounded head and an allowed ``Host``.

Header limits: more than ``MAX_HEADER_COUNT`` headers, or more than ``MAX_HEADER_BYTES`` of
request line and headers, is a 431 problem. ``python -m app`` serves with
``app.httpserver``, which enforces them while the head is still arriving (so a client cannot
make the process buffer megabytes); under any other ASGI server they are checked here, on
the parsed head. ``ALLOWED_HOSTS`` refuses a ``Host`` this service does not answer for
with 400 ``invalid_host`` (the health and metrics paths excepted: platform probes use
addresses), so nothing downstream can be steered by a forged ``Host``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Scope

from services import errors

_UNGUARDED_HOST_PATHS = ("/health/", "/metrics")


def head_size(scope: Scope) -> tuple[int, int]:
    """(header count, bytes of request line and headers) of an HTTP scope."""
    headers = scope["headers"]
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    for name, value in headers:
        size += len(name) + len(value) + 4  # ": " and CRLF
    return len(headers), size


class HostPatterns:
    """Exact host names and ``*.suffix`` wildcards, compared without the port."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.any = not patterns or "*" in patterns
        self.exact = frozenset(p.lower() for p in patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:].lower() for p in patterns if p.startswith("*."))

    def allows(self, host_header: bytes | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        host = host_header.decode("latin-1").lower()
        if host.startswith("["):  # [v6]:port
            host = host.split("]", 1)[0] + "]"
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return host in self.exact or (bool(self.suffixes) and host.endswith(self.suffixes))


class EdgeGuard:
    """The checks, run by the edge middleware (``app.middleware``) before routing.

    ``check_head=False`` when the HTTP server already bounds heads with the same limits
    (``python -m app`` serves with ``app.httpserver``): the count is then not made twice.
    """

    def __init__(
        self,
        *,
        allowed_hosts: Sequence[str],
        max_header_count: int,
        max_header_bytes: int,
        check_head: bool = True,
    ) -> None:
        self.hosts = HostPatterns(allowed_hosts)
        self.max_count = max_header_count
        self.max_bytes = max_header_bytes
        self.check_head = check_head
        # Nothing to check: no head count (the server does it) and any Host is allowed.
        self.idle = not check_head and self.hosts.any

    def refusal(self, scope: Scope) -> errors.AuthServiceError | None:
        """The error to answer this request with instead of serving it, if any."""
        if self.check_head:
            count, size = head_size(scope)
            if count > self.max_count or size > self.max_bytes:
                return errors.HeadersTooLarge(
                    f"At most {self.max_count} headers and {self.max_bytes} bytes of request "
                    "line and headers are accepted."
                )
        if not self.hosts.any and not scope["path"].startswith(_UNGUARDED_HOST_PATHS):
            host = next((v for n, v in scope["headers"] if n == b"host"), None)
            if not self.hosts.allows(host):
                return errors.InvalidHost()
        return None
