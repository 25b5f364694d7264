"""What an upstream failure means: which of this service's errors (``services.errors``) it
reads as, whether a repeat is safe, and whether it is evidence against the upstream's
health (``services.breaker``): the SDK's error codes, answers only one record's content
caused, platform-side key refusals."""

from __future__ import annotations

import httpx
import structlog
from pydantic import ValidationError
from supabase_auth.errors import AuthApiError, AuthError, AuthRetryableError

from services import errors, keyrefusals
from services.breaker import Caller
from services.upstream_http import UpstreamDeadline

log = structlog.get_logger("services.gateway")

_RETRYABLE_STATUSES = frozenset({502, 503, 504})
_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class BadListing(ValueError):
    """A user list page whose envelope cannot be read at all."""


def is_bad_record(exc: BaseException) -> bool:
    """A record too deep (or otherwise unreadable by the SDK's models) inside a well-formed
    answer; an answer that is not the expected JSON at all is not this."""
    if isinstance(exc, RecursionError):
        return True
    if not isinstance(exc, ValidationError):
        return False
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error.get("msg", "")).lower()
        if "recursion" in message or error.get("type") == "recursion_loop":
            return True
        location = {str(part) for part in error.get("loc", ())}
        metadata = {"user_metadata", "app_metadata", "identities", "factors"}
        if error.get("type") != "missing" and location & metadata:
            return True
    return False


def is_transient_key_error(exc: BaseException) -> bool:
    """A platform-side refusal of a key that a repeat may get past (for retry predicates)."""
    return isinstance(exc, AuthApiError) and keyrefusals.is_transient_key_error(
        exc.status, exc.code, exc.message
    )


_API_ERRORS: dict[str, type[errors.AuthServiceError]] = {
    "invalid_credentials": errors.InvalidCredentials,
    # An account with no password (OAuth or OTP only): GoTrue says so before any check.
    "password_not_set": errors.InvalidCredentials,
    "email_not_confirmed": errors.EmailNotConfirmed,
    "phone_not_confirmed": errors.EmailNotConfirmed,
    "user_banned": errors.UserBanned,
    "refresh_token_not_found": errors.InvalidRefreshToken,
    "refresh_token_already_used": errors.RefreshTokenReused,
    "session_not_found": errors.SessionRevoked,
    "session_expired": errors.SessionRevoked,
    "email_exists": errors.EmailExists,
    "user_already_exists": errors.EmailExists,
    "weak_password": errors.WeakPassword,
    "same_password": errors.ValidationFailed,
    "validation_failed": errors.ValidationFailed,
    "email_address_invalid": errors.ValidationFailed,
    "user_not_found": errors.NotFound,
    "over_request_rate_limit": errors.UpstreamRateLimited,
    "over_email_send_rate_limit": errors.UpstreamRateLimited,
    "conflict": errors.Conflict,
}


def map_api_error(operation: str, exc: AuthApiError, url: str) -> errors.AuthServiceError:
    code = exc.code or ""
    if operation == "sign_out" and exc.status in (401, 403, 404):
        return errors.SessionRevoked()
    error_class = _API_ERRORS.get(code)
    if error_class is not None:
        if error_class is errors.ValidationFailed:
            return error_class(exc.message)
        return error_class()
    if exc.status >= 500:
        log.error("upstream_server_error", operation=operation, status=exc.status, code=code)
        return errors.UpstreamUnavailable(
            retry_after=1, debug=f"{url} failed with {exc.status} {code}"
        )
    log.error("upstream_unmapped_error", operation=operation, status=exc.status, code=code)
    return errors.UpstreamUnavailable(
        retry_after=1, debug=f"{url} answered {exc.status} {code}: {exc.message}"
    )


def is_upstream_failure(exc: AuthError, mapped: errors.AuthServiceError) -> bool:
    """Whether an SDK error is evidence that the upstream is unhealthy: a transport failure
    or the upstream's own 5xx. A 4xx is an answer about the request, even one this service
    does not map (it still answers 503 for it), and a refused key is configuration."""
    if isinstance(mapped, errors.UpstreamMisconfigured):
        return False
    if isinstance(exc, AuthApiError):
        return exc.status >= 500
    return mapped.status >= 500


def evidence_caller(exc: AuthError, caller: Caller | None) -> Caller | None:
    """Whose evidence an upstream failure is: a connect failure (nothing was sent) is
    about the upstream alone (None); an answer or a failure after sending could have been
    caused by the request, so it is tied to its caller (services.breaker)."""
    if isinstance(exc.__cause__, _CONNECT_FAILURES):
        return None
    return caller


def is_retryable(exc: BaseException, *, retry_safe: bool) -> bool:
    if not isinstance(exc, AuthRetryableError):
        return retry_safe and is_transient_key_error(exc)
    cause = exc.__cause__
    if isinstance(cause, UpstreamDeadline):
        return False
    if isinstance(cause, _CONNECT_FAILURES):
        return True  # The request never left: always safe to repeat.
    return retry_safe and (
        exc.status in _RETRYABLE_STATUSES or isinstance(cause, httpx.TransportError)
    )
