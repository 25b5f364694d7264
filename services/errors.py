"""The service's one error tree.

Every failure the service can report is an ``AuthServiceError``: it carries the HTTP
status and a stable machine-readable ``code``. ``app/`` renders the whole family with a
single handler, so no code path can end in a bare 500.

    AuthServiceError
    ├── BadRequest (400)               malformed JSON, unreadable body, InvalidHost
    ├── Unauthenticated (401)          who are you?
    │   ├── MissingToken, InvalidToken, TokenExpired, SessionRevoked
    │   ├── InvalidCredentials, InvalidRefreshToken, RefreshTokenReused
    │   └── ServiceCredentialsInvalid, InvalidWebhookSignature
    ├── Forbidden (403)                may you?
    │   ├── EmailNotConfirmed, UserBanned, InsufficientRole, InsufficientScope
    │   └── NotOwner, InsufficientAssurance, IpNotAllowed
    ├── NotFound (404)
    ├── Conflict (409)                 EmailExists
    ├── PayloadTooLarge (413), UnsupportedMediaType (415), HeadersTooLarge (431)
    ├── ValidationFailed (422)         WeakPassword
    ├── TooManyRequests (429)          RateLimited, LockedOut, UpstreamRateLimited
    ├── ServiceUnavailable (503)       UpstreamUnavailable, CircuitOpen, PoolExhausted,
    │                                  RedisUnavailable, UpstreamMisconfigured
    ├── UpstreamBadRecord (502)        a stored record the SDK cannot read
    └── DeadlineExceeded (504)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class AuthServiceError(Exception):
    """Base of every error the service reports to a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    default_detail: ClassVar[str] = "The request could not be completed."

    def __init__(
        self,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        debug: str | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.retry_after = retry_after
        self.headers: dict[str, str] = dict(headers or {})
        self.errors = list(errors or [])
        # What failed and what to check; shown only outside production.
        self.debug = debug
        super().__init__(self.detail)


class BadRequest(AuthServiceError):
    status, code, title = 400, "bad_request", "Bad request"
    default_detail = "The request body could not be read."


class MalformedJson(BadRequest):
    code = "malformed_json"
    default_detail = "The request body is not valid JSON."


class Unauthenticated(AuthServiceError):
    status, code, title = 401, "unauthenticated", "Unauthenticated"
    default_detail = "Authentication is required."


class MissingToken(Unauthenticated):
    code = "missing_token"
    default_detail = "An Authorization: Bearer token is required."


class InvalidToken(Unauthenticated):
    code = "invalid_token"
    default_detail = "The access token is not valid."


class TokenExpired(Unauthenticated):
    code = "token_expired"
    default_detail = "The access token has expired."


class SessionRevoked(Unauthenticated):
    code = "session_revoked"
    default_detail = "The session of this token has ended."


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"
    default_detail = "Invalid email or password."


class InvalidRefreshToken(Unauthenticated):
    code = "invalid_refresh_token"
    default_detail = "The refresh token is not valid."


class RefreshTokenReused(Unauthenticated):
    code = "refresh_token_reused"
    default_detail = "The refresh token was already used; the session has been ended."


class ServiceCredentialsInvalid(Unauthenticated):
    code = "invalid_service_credentials"
    default_detail = "The service credentials are not valid."


class Forbidden(AuthServiceError):
    status, code, title = 403, "forbidden", "Forbidden"
    default_detail = "You are not allowed to do this."


class EmailNotConfirmed(Forbidden):
    code = "email_not_confirmed"
    default_detail = "The email address has not been confirmed."


class UserBanned(Forbidden):
    code = "user_banned"
    default_detail = "This account is suspended."


class InsufficientRole(Forbidden):
    code = "insufficient_role"
    default_detail = "Your account lacks the role this requires."


class InsufficientScope(Forbidden):
    code = "insufficient_scope"
    default_detail = "Your token lacks the permission this requires."


class NotOwner(Forbidden):
    code = "not_owner"
    default_detail = "This resource belongs to another user."


class InsufficientAssurance(Forbidden):
    code = "insufficient_aal"
    default_detail = "This requires multi-factor authentication (aal2)."


class IpNotAllowed(Forbidden):
    code = "ip_not_allowed"
    default_detail = "Requests from this address are not allowed here."


class NotFound(AuthServiceError):
    status, code, title = 404, "not_found", "Not found"
    default_detail = "The resource does not exist."


class MethodNotAllowed(AuthServiceError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"
    default_detail = "This method is not allowed on this resource."


class Conflict(AuthServiceError):
    status, code, title = 409, "conflict", "Conflict"
    default_detail = "The request conflicts with the current state."


class EmailExists(Conflict):
    code = "email_exists"
    default_detail = "An account with this email address already exists."


class PayloadTooLarge(AuthServiceError):
    status, code, title = 413, "payload_too_large", "Payload too large"
    default_detail = "The request body is too large."


class HeadersTooLarge(AuthServiceError):
    status, code, title = 431, "headers_too_large", "Request header fields too large"
    default_detail = "The request has too many headers, or they are too large."


class InvalidHost(BadRequest):
    code = "invalid_host"
    default_detail = "This service does not answer for that host name."


class InvalidWebhookSignature(Unauthenticated):
    code = "invalid_signature"
    default_detail = "The event's signature does not verify."


class UnsupportedMediaType(AuthServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"
    default_detail = "Send the request body as application/json."


class ValidationFailed(AuthServiceError):
    status, code, title = 422, "validation_failed", "Validation failed"
    default_detail = "The request body is not valid."


class WeakPassword(ValidationFailed):
    code = "weak_password"
    default_detail = "The password does not meet the password policy."


class TooManyRequests(AuthServiceError):
    status, code, title = 429, "too_many_requests", "Too many requests"
    default_detail = "Too many requests; try again later."


class RateLimited(TooManyRequests):
    code = "rate_limited"


class LockedOut(TooManyRequests):
    code = "locked_out"
    default_detail = "Too many failed sign-in attempts; try again later."


class UpstreamRateLimited(TooManyRequests):
    code = "upstream_rate_limited"
    default_detail = "The authentication provider is rate limiting; try again later."


class ServiceUnavailable(AuthServiceError):
    status, code, title = 503, "service_unavailable", "Service unavailable"
    default_detail = "The service is temporarily unavailable; try again later."


class UpstreamUnavailable(ServiceUnavailable):
    code = "upstream_unavailable"
    default_detail = "The authentication provider is unreachable; try again later."


class UpstreamMisconfigured(ServiceUnavailable):
    code = "upstream_misconfigured"
    default_detail = "The service cannot talk to the authentication provider."


class CircuitOpen(ServiceUnavailable):
    code = "upstream_circuit_open"
    default_detail = "The authentication provider is failing; requests are paused briefly."


class PoolExhausted(ServiceUnavailable):
    code = "upstream_busy"
    default_detail = "The service is at capacity; try again shortly."


class UpstreamBadRecord(AuthServiceError):
    status, code, title = 502, "upstream_bad_record", "Unreadable upstream record"
    default_detail = (
        "The authentication provider holds a record for this request that cannot be read; "
        "an operator must repair it."
    )


class RedisUnavailable(ServiceUnavailable):
    code = "session_store_unavailable"
    default_detail = "The session store is unreachable; try again later."


class DeadlineExceeded(AuthServiceError):
    status, code, title = 504, "upstream_timeout", "Upstream timeout"
    default_detail = "The authentication provider did not answer in time."


# -- account lifecycle (recovery, confirmation, OTP, OAuth, MFA) -------------------------


class InvalidCode(Unauthenticated):
    code = "invalid_code"
    default_detail = "The code is wrong or has expired."


class InvalidNonce(Unauthenticated):
    code = "invalid_nonce"
    default_detail = "The reauthentication code is wrong or has expired."


class InvalidMfaCode(Unauthenticated):
    code = "invalid_mfa_code"
    default_detail = "The authenticator code is wrong."


class InvalidAuthCode(Unauthenticated):
    code = "invalid_auth_code"
    default_detail = "The sign-in code is unknown, used or expired; start the sign-in again."


class MfaChallengeInvalid(ValidationFailed):
    code = "mfa_challenge_invalid"
    default_detail = "The MFA challenge is unknown or has expired; create a new one."


class FactorExists(Conflict):
    code = "factor_exists"
    default_detail = "A factor with this name already exists."


class ProviderNotEnabled(NotFound):
    code = "provider_not_enabled"
    default_detail = "This sign-in provider is not enabled."


class CodeLockedOut(LockedOut):
    default_detail = "Too many wrong codes; try again later."
