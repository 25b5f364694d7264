"""When the platform refuses one of the service's API keys: say which key, in which header,
and what to change; log it once, not once per request.

Two places can refuse a key:

- the API gateway in front of Supabase Auth, which checks ``apikey`` and answers 401 with a
  body of its own (``{"message": "Invalid API key"}``, ``"Legacy API keys are disabled"``,
  ``"No API key found in request"``) that carries no GoTrue error code;
- Supabase Auth itself, which checks the bearer of admin calls and answers ``bad_jwt``,
  ``no_authorization`` or ``not_admin``. With a legacy key the bearer is the key; with an
  ``sb_secret_`` key it is the token the gateway made from it.

A refusal is a configuration fault of this service, never an outage of Supabase Auth: the
gateway maps it to ``503 upstream_misconfigured`` and keeps it out of the circuit breaker.
Pure logic over the status, code and message of the SDK's error (no SDK import here).
"""

from __future__ import annotations

import threading

import structlog

from services import errors
from services.apikeys import ApiKey, KeyFamily

__all__ = ["USER_OPERATIONS", "KeyRefusals", "is_transient_key_error"]

log = structlog.get_logger("services.gateway")

# Calls made with the public key; every other call carries the server key in `apikey`.
USER_OPERATIONS = frozenset({"sign_in", "refresh"})
# Calls whose bearer is the user's own token, so a GoTrue JWT refusal is about the user.
_USER_BEARER_OPERATIONS = frozenset({"sign_out"})
_BEARER_REFUSALS = frozenset({"bad_jwt", "no_authorization", "not_admin"})
# Seen on hosted projects with asymmetric keys: the gateway's token for an sb_secret_ key is
# briefly unverifiable (supabase/auth#2647). A repeat a moment later succeeds.
_TRANSIENT_MARKERS = ("unrecognized jwt kid",)


def is_transient_key_error(status: int, code: str | None, message: str) -> bool:
    """A platform-side key error that a repeat of an idempotent call may get past."""
    if status not in (401, 403) or code not in (None, "bad_jwt"):
        return False
    lowered = message.lower()
    return any(marker in lowered for marker in _TRANSIENT_MARKERS)


class KeyRefusals:
    """Maps the platform's refusals of the service's keys; one per gateway."""

    def __init__(self, public_key: ApiKey, server_key: ApiKey) -> None:
        self._public = public_key
        self._server = server_key
        self._reported: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def map(
        self, operation: str, status: int, code: str | None, message: str
    ) -> errors.UpstreamMisconfigured | None:
        public = operation in USER_OPERATIONS
        key = self._public if public else self._server
        if code is None and status in (401, 403):
            # The API gateway's own answer: it refused what was in `apikey`.
            header = "apikey"
        elif not public and operation not in _USER_BEARER_OPERATIONS and code in _BEARER_REFUSALS:
            header = "Authorization (bearer)" if key.is_jwt else "apikey"
        else:
            return None
        reason = f"{status} {code or message}"
        debug = (
            f"Supabase refused the {key.label} sent in the {header} header on {operation} "
            f"({reason}): {_fix(key, public=public, code=code, message=message, status=status)}"
        )
        self._log_once(operation, public, key, header, status, code, message)
        return errors.UpstreamMisconfigured(retry_after=30, debug=debug)

    def _log_once(
        self,
        operation: str,
        public: bool,
        key: ApiKey,
        header: str,
        status: int,
        code: str | None,
        message: str,
    ) -> None:
        marker = (key.label, header, code or message)
        with self._lock:
            if marker in self._reported:
                return
            self._reported.add(marker)
        log.error(
            "upstream_rejected_publishable_key" if public else "upstream_rejected_service_key",
            key=key.label,
            header=header,
            operation=operation,
            status=status,
            code=code,
            reason=message[:200],
        )


def _fix(key: ApiKey, *, public: bool, code: str | None, message: str, status: int) -> str:
    lowered = message.lower()
    if "legacy api keys are disabled" in lowered:
        return (
            "this project has disabled its legacy JWT keys; set SUPABASE_PUBLISHABLE_KEY and "
            "SUPABASE_SECRET_KEY to its publishable and secret keys (Project Settings → API "
            "Keys)"
        )
    if is_transient_key_error(status, code, message):
        return (
            "Supabase Auth could not verify the token the API gateway made from the key, "
            "even after retries (a platform-side fault, supabase/auth#2647); it usually "
            "passes on its own, else check the project's JWT signing keys"
        )
    if public:
        return (
            "set SUPABASE_PUBLISHABLE_KEY to this project's publishable key (sb_publishable_…, "
            "Project Settings → API Keys), or SUPABASE_ANON_KEY to its legacy anon key"
        )
    if key.family is KeyFamily.SECRET and code in _BEARER_REFUSALS:
        return (
            "the key passed the API gateway but Supabase Auth refused the token made from it "
            "(reported for admin writes on new projects, supabase/supabase#48288); check the "
            "secret key in Project Settings → API Keys, or until it is fixed unset "
            "SUPABASE_SECRET_KEY and set SUPABASE_SERVICE_ROLE_KEY to the legacy key"
        )
    return (
        "set SUPABASE_SECRET_KEY to one of this project's secret keys (sb_secret_…, Project "
        "Settings → API Keys), or SUPABASE_SERVICE_ROLE_KEY to its legacy service_role key; "
        "registration, logout and the admin routes need it"
    )
