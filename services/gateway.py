"""The only code that calls the Supabase SDK.

The SDK is blocking, so every call runs on a worker thread. ``SupabaseGateway`` holds the
operations; each of them goes through ``_call``, the one guarded path (breaker, admission,
thread, deadline, retries, error mapping) of ``services.upstream_call``. User calls never
share SDK session state: each builds a throwaway ``SyncGoTrueClient``
(``persist_session=False``, ``auto_refresh_token=False``) over the shared pool; admin calls
use one separate service-role client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from pydantic import ValidationError
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import AuthRetryableError
from supabase_auth.types import User

from services import apikeys, keyrefusals
from services.account_gateway import AccountOperations
from services.admission import Priority
from services.breaker import UNKNOWN_CALLER, Caller
from services.thread_clients import ThreadClients
from services.upstream_call import GatewayConfig, GuardedCalls
from services.upstream_errors import BadListing, is_transient_key_error
from services.upstream_http import build_client, install_trace_hooks, upstream_tls_context
from services.upstream_session import AuthSession, session_of, user_dict

# Re-exported: callers name them through the gateway, the one upstream boundary.
__all__ = [
    "AuthSession",
    "GatewayConfig",
    "SupabaseGateway",
    "UserPage",
    "build_http_client",
    "is_transient_key_error",
    "user_dict",
]

log = structlog.get_logger("services.gateway")


def build_http_client(config: GatewayConfig, *, connections: int | None = None) -> httpx.Client:
    """The SDK's HTTP client (``services.upstream_http.build_client``) for this config: a pool
    of ``connections``, the thread bound by default (a worker thread's own client needs one)."""
    return build_client(
        connections=connections or config.pool_size,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        keepalive=config.keepalive,
    )


@dataclass(frozen=True)
class UserPage:
    """One page of the admin user list: the users the SDK can read, and the ids of the
    records it cannot (each skipped record degrades only itself)."""

    users: list[dict[str, Any]]
    skipped: list[str]


class SupabaseGateway(AccountOperations, GuardedCalls):
    """Async facade over the blocking SDK. Build one per process, in the app lifespan."""

    def __init__(self, config: GatewayConfig, http_client: httpx.Client | None = None) -> None:
        # Each key in `apikey`; as the bearer only if it is a JWT (a legacy key). The SDK
        # adds `Authorization: Bearer <token>` itself only for a user's access token.
        self._public_key = apikeys.classify(config.anon_key)
        self._server_key = apikeys.classify(config.service_role_key)
        super().__init__(config, keyrefusals.KeyRefusals(self._public_key, self._server_key))
        log.info("upstream_api_keys", public=self._public_key.label, server=self._server_key.label)
        self._user_headers = apikeys.request_headers(self._public_key)
        # Each worker thread calls the upstream through a client of its own
        # (services.thread_clients); ``http_client`` replaces them all (tests).
        self._clients = ThreadClients(
            lambda: build_http_client(config, connections=1), self._attach, shared=http_client
        )
        if http_client is None:
            upstream_tls_context()  # built now, once, rather than by the first burst

    def _attach(self, client: httpx.Client) -> SyncGoTrueAdminAPI:
        """A thread's client, made ready: tracing hooks and the admin API over it."""
        install_trace_hooks(client)
        return SyncGoTrueAdminAPI(
            url=self.config.url,
            headers=apikeys.request_headers(self._server_key),
            http_client=client,
        )

    @property
    def http_client(self) -> httpx.Client:
        """This thread's upstream client."""
        return self._clients.get()[0]

    @property
    def _admin(self) -> SyncGoTrueAdminAPI:
        return self._clients.get()[1]

    def close(self) -> None:
        super().close()
        self._clients.close()

    # -- operations ------------------------------------------------------------------

    async def sign_in(
        self, email: str, password: str, *, caller: Caller = UNKNOWN_CALLER
    ) -> AuthSession:
        def call() -> AuthSession:
            response = self._user_client().sign_in_with_password(
                {"email": email, "password": password}
            )
            return session_of(response.session)

        # The upstream may already be checking the password when a read fails: only a
        # connect failure (nothing sent) is repeated.
        return await self._call("sign_in", call, retry_safe=False, caller=caller)

    async def refresh(self, refresh_token: str, *, caller: Caller = UNKNOWN_CALLER) -> AuthSession:
        # A repeat is harmless: GoTrue answers the parent of the active token with the
        # active pair, which is exactly what a retry after a lost response needs.
        def call() -> AuthSession:
            response = self._user_client().refresh_session(refresh_token)
            return session_of(response.session)

        return await self._call(
            "refresh", call, retry_safe=True, caller=caller, priority=Priority.CONTROL
        )

    async def sign_out(
        self, access_token: str, scope: str, *, caller: Caller = UNKNOWN_CALLER
    ) -> None:
        def call() -> None:
            self._admin.sign_out(access_token, scope)  # type: ignore[arg-type]

        await self._call(
            "sign_out", call, retry_safe=True, caller=caller, priority=Priority.CONTROL
        )

    async def create_user(
        self, attributes: dict[str, Any], *, caller: Caller = UNKNOWN_CALLER
    ) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return user_dict(self._admin.create_user(attributes).user)  # type: ignore[arg-type]

        # Not retried after the request may have been sent: the caller handles a
        # duplicate through its idempotency record.
        return await self._call("create_user", call, retry_safe=False, caller=caller)

    async def get_user(self, user_id: str, *, caller: Caller = UNKNOWN_CALLER) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return user_dict(self._admin.get_user_by_id(user_id).user)

        return await self._call("get_user", call, retry_safe=True, caller=caller)

    async def update_user(
        self, user_id: str, attributes: dict[str, Any], *, caller: Caller = UNKNOWN_CALLER
    ) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._admin.update_user_by_id(user_id, attributes)  # type: ignore[arg-type]
            return user_dict(response.user)

        return await self._call("update_user", call, retry_safe=True, caller=caller)

    async def list_users(
        self, page: int, per_page: int, *, caller: Caller = UNKNOWN_CALLER
    ) -> UserPage:
        """The SDK's own ``list_users`` parses the page at once, so one record it cannot
        read would fail the page for every admin; this reads the same endpoint over the
        same client and validates each record on its own, as the SDK would parse it."""

        def call() -> UserPage:
            # The SDK's own request helper: same headers, client and error mapping.
            response = self._admin._request(
                "GET", "admin/users", query=httpx.QueryParams(page=page, per_page=per_page)
            )
            try:
                records = response.json()["users"]
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise BadListing(str(exc)) from exc
            if not isinstance(records, list):
                raise BadListing("users is not a list")
            users: list[dict[str, Any]] = []
            skipped: list[str] = []
            for record in records:
                try:
                    users.append(user_dict(User.model_validate_json(json.dumps(record))))
                except (ValidationError, ValueError, TypeError, RecursionError):
                    record_id = record.get("id") if isinstance(record, dict) else None
                    skipped.append(str(record_id) if record_id is not None else "?")
            if skipped:
                log.warning("upstream_bad_records_skipped", operation="list_users", ids=skipped)
            return UserPage(users=users, skipped=skipped)

        return await self._call("list_users", call, retry_safe=True, caller=caller)

    async def health(self) -> dict[str, Any]:
        """GET /health on the upstream, through the same bulkhead and breaker."""

        def call() -> dict[str, Any]:
            # Raw httpx errors are raised as the SDK would, so they take the same
            # retry and mapping path as every other call.
            try:
                response = self.http_client.get(f"{self.config.url}/health")
                response.raise_for_status()
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                raise AuthRetryableError(f"health answered {status}", status) from exc
            except httpx.RequestError as exc:
                raise AuthRetryableError(str(exc), 0) from exc
            body: dict[str, Any] = response.json()
            return body

        # The service's own probe: fixed content, so a failure is evidence on its own
        # (caller None); it never waits for a slot (readiness must answer at once).
        return await self._call(
            "health", call, retry_safe=True, caller=None, priority=Priority.PROBE
        )

    def _user_client(self) -> SyncGoTrueClient:
        # Per call, so no user's session outlives the call; it shares the pool, and must
        # never be closed (that would close the shared httpx client).
        return SyncGoTrueClient(
            url=self.config.url,
            headers=self._user_headers,
            http_client=self.http_client,
            persist_session=False,
            auto_refresh_token=False,
        )
