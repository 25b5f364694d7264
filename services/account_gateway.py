"""The account-lifecycle calls of the gateway: recovery, confirmation, OTP, OAuth, MFA and
deletion (``docs/account-lifecycle.md``).

A mixin of ``services.gateway.SupabaseGateway``: each call takes the gateway's one path
(``_call`` of ``services.upstream_call``: breaker, admission, thread, deadline). Sending
mail and consuming one-time codes are never repeated once the request may have left
(``retry_safe=False``): a repeat would mail twice or burn the code. Calls made with a user's
access token pass it explicitly; no SDK client keeps it. Upstream error codes that mean
something specific to these flows are mapped here, in the worker thread, so they take the
gateway's path for this service's own errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import AuthApiError
from supabase_auth.helpers import parse_user_response
from supabase_auth.types import Session

from services import errors
from services.upstream_session import AuthSession, session_of, user_dict

if TYPE_CHECKING:
    from services.admission import Priority
    from services.breaker import Caller

T = TypeVar("T")


class AccountOperations:
    """The lifecycle operations; ``SupabaseGateway`` provides the call path they use."""

    if TYPE_CHECKING:

        @property
        def _admin(self) -> SyncGoTrueAdminAPI: ...

        def _user_client(self) -> SyncGoTrueClient: ...

        async def _call(
            self,
            operation: str,
            fn: Callable[[], T],
            *,
            retry_safe: bool,
            caller: Caller | None = ...,
            priority: Priority = ...,
        ) -> T: ...

    async def send_recovery(self, email: str, redirect_to: str | None) -> None:
        def call() -> None:
            options = {"redirect_to": redirect_to} if redirect_to else {}
            self._user_client().reset_password_for_email(email, options)  # type: ignore[arg-type]

        await self._call("send_recovery", _lifecycle(call), retry_safe=False)

    async def resend(self, email: str, kind: str, redirect_to: str | None) -> None:
        def call() -> None:
            options = {"email_redirect_to": redirect_to} if redirect_to else {}
            self._user_client().resend(
                {"type": kind, "email": email, "options": options}  # type: ignore[typeddict-item]
            )

        await self._call("resend", _lifecycle(call), retry_safe=False)

    async def send_otp(self, email: str, redirect_to: str | None) -> None:
        def call() -> None:
            options: dict[str, Any] = {"should_create_user": False}
            if redirect_to:
                options["email_redirect_to"] = redirect_to
            self._user_client().sign_in_with_otp(
                {"email": email, "options": options}  # type: ignore[typeddict-item]
            )

        await self._call("send_otp", _lifecycle(call), retry_safe=False)

    async def verify_otp(self, params: dict[str, str]) -> AuthSession | None:
        """``/verify`` with an emailed code or token hash; None for the first half of a
        secure email change."""

        def call() -> AuthSession | None:
            response = self._user_client().verify_otp(params)  # type: ignore[arg-type]
            return AuthSession.from_sdk(response.session) if response.session else None

        return await self._call("verify_otp", _lifecycle(call), retry_safe=False)

    async def exchange_code(self, auth_code: str, code_verifier: str) -> AuthSession:
        def call() -> AuthSession:
            response = self._user_client().exchange_code_for_session(
                {"auth_code": auth_code, "code_verifier": code_verifier}
            )
            return session_of(response.session)

        return await self._call("exchange_code", _lifecycle(call), retry_safe=False)

    async def reauthenticate(self, access_token: str) -> None:
        def call() -> None:
            self._user_client()._request("GET", "reauthenticate", jwt=access_token)

        await self._call("reauthenticate", _lifecycle(call, token=True), retry_safe=False)

    async def own_user(self, access_token: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._user_client()._request("GET", "user", jwt=access_token)
            return user_dict(parse_user_response(response).user)

        return await self._call("own_user", _lifecycle(call, token=True), retry_safe=True)

    async def update_own_user(
        self, access_token: str, attributes: dict[str, Any], redirect_to: str | None = None
    ) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._user_client()._request(
                "PUT", "user", jwt=access_token, body=attributes, redirect_to=redirect_to
            )
            return user_dict(parse_user_response(response).user)

        return await self._call("update_own_user", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_enroll(
        self, access_token: str, friendly_name: str, issuer: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"factor_type": "totp", "friendly_name": friendly_name}
        if issuer:
            body["issuer"] = issuer

        def call() -> dict[str, Any]:
            response = self._user_client()._request("POST", "factors", jwt=access_token, body=body)
            answer: dict[str, Any] = response.json()
            return answer

        return await self._call("mfa_enroll", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_challenge(self, access_token: str, factor_id: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._user_client()._request(
                "POST", f"factors/{factor_id}/challenge", jwt=access_token, body={}
            )
            answer: dict[str, Any] = response.json()
            return answer

        return await self._call("mfa_challenge", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_verify(
        self, access_token: str, factor_id: str, challenge_id: str, code: str
    ) -> AuthSession:
        body = {"challenge_id": challenge_id, "code": code}

        def call() -> AuthSession:
            response = self._user_client()._request(
                "POST", f"factors/{factor_id}/verify", jwt=access_token, body=body
            )
            return AuthSession.from_sdk(Session.model_validate_json(response.content))

        return await self._call("mfa_verify", _lifecycle(call, token=True), retry_safe=False)

    async def mfa_unenroll(self, access_token: str, factor_id: str) -> None:
        def call() -> None:
            self._user_client()._request("DELETE", f"factors/{factor_id}", jwt=access_token)

        await self._call("mfa_unenroll", _lifecycle(call, token=True), retry_safe=True)

    async def delete_user(self, user_id: str) -> None:
        def call() -> None:
            self._admin.delete_user(user_id)

        # A repeat after a lost answer finds no user: the caller treats that as done.
        await self._call("delete_user", call, retry_safe=True)


_LIFECYCLE_ERRORS: dict[str, Callable[[], errors.AuthServiceError]] = {
    "otp_expired": errors.InvalidCode,
    "reauthentication_not_valid": errors.InvalidNonce,
    "mfa_verification_failed": errors.InvalidMfaCode,
    "mfa_challenge_expired": errors.MfaChallengeInvalid,
    "mfa_ip_address_mismatch": errors.MfaChallengeInvalid,
    "mfa_factor_name_conflict": errors.FactorExists,
    "mfa_factor_not_found": lambda: errors.NotFound("No such factor."),
    "too_many_enrolled_mfa_factors": lambda: errors.ValidationFailed(
        "The maximum number of factors is enrolled; remove one first."
    ),
    "insufficient_aal": errors.InsufficientAssurance,
    "flow_state_not_found": errors.InvalidAuthCode,
    "flow_state_expired": errors.InvalidAuthCode,
    "bad_code_verifier": errors.InvalidAuthCode,
    "otp_disabled": lambda: errors.NotFound("No such account."),
}
# With a user's token, these mean the token or its session is gone, not a bad service key.
_TOKEN_ERRORS: dict[str, Callable[[], errors.AuthServiceError]] = {
    "bad_jwt": errors.InvalidToken,
    "no_authorization": errors.InvalidToken,
    "session_not_found": errors.SessionRevoked,
    "user_not_found": errors.SessionRevoked,
}


def _lifecycle(fn: Callable[[], T], *, token: bool = False) -> Callable[[], T]:
    """``fn`` with the lifecycle flows' upstream error codes mapped to ours (raised from the
    worker thread, so they take the gateway's path for our own errors)."""

    def call() -> T:
        try:
            return fn()
        except AuthApiError as exc:
            code = exc.code or ""
            factory = (_TOKEN_ERRORS.get(code) if token else None) or _LIFECYCLE_ERRORS.get(code)
            if factory is None:
                raise
            raise factory() from exc

    return call
