"""The first checks of every request: a bounded head and an allowed ``Host``.

Header limits are enforced twice: by the HTTP server itself (``app.httpserver`` bounds the
bytes of a head while it is still arriving, so a client cannot make the process buffer
megabytes), and here, for any ASGI server, on the parsed head: more than
``MAX_HEADER_COUNT`` headers, or more than ``MAX_HEADER_BYTES`` of request line and headers,
is a 431 problem. ``ALLOWED_HOSTS`` refuses a ``Host`` this service does not answer for
with 400 ``invalid_host`` (the health and metrics paths excepted: platform probes use
addresses), so nothing downstream can be steered by a forged ``Host``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from app.problems import problem_response
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


class EdgeGuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Sequence[str],
        max_header_count: int,
        max_header_bytes: int,
        production: bool,
    ) -> None:
        self.app = app
        self.hosts = HostPatterns(allowed_hosts)
        self.max_count = max_header_count
        self.max_bytes = max_header_bytes
        self.production = production

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        count, size = head_size(scope)
        refusal: errors.AuthServiceError | None = None
        if count > self.max_count or size > self.max_bytes:
            refusal = errors.HeadersTooLarge(
                f"At most {self.max_count} headers and {self.max_bytes} bytes of request "
                "line and headers are accepted."
            )
        elif not self.hosts.any and not scope["path"].startswith(_UNGUARDED_HOST_PATHS):
            host = next((v for n, v in scope["headers"] if n == b"host"), None)
            if not self.hosts.allows(host):
                refusal = errors.InvalidHost()
        if refusal is None:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        response = problem_response(refusal, request_id=request_id, production=self.production)
        await response(scope, receive, send)
