"""The audit log: one JSON line per security event, under a stable name.

Every line has ``"audit": true`` and ``"event"`` set to one of ``EVENTS``, so a log
pipeline can route audit lines with one filter (``audit == true``) and alert on names
that never change. Each event also counts in ``sg_audit_events_total{event}``.

What is never logged: passwords, tokens, refresh tokens, keys, service secrets. Email
addresses are not logged in clear: ``email_hash`` is the first 16 hex digits of the
SHA-256 of the lower-cased address, enough to follow one account across lines (and to
find it: ``printf %s user@example.com | sha256sum | cut -c1-16``) without writing the
address into log storage. User ids, session ids, service ids and client IPs are logged:
they are what an investigation needs and they grant nothing.

See docs/logging.md for every event and its fields.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal, get_args

import structlog

from services import metrics

AuditEvent = Literal[
    "auth.signed_in",
    "auth.sign_in_failed",
    "auth.lockout",
    "auth.rate_limited",
    "auth.logout",
    "session.revoked",
    "refresh.reuse_detected",
    "user.banned",
    "user.unbanned",
    "user.role_changed",
    "user.unlocked",
    "service_credential.failed",
    # The account lifecycle (services/recovery.py, account.py, confirmation.py, otp.py,
    # oauth.py, mfa.py); audited by the lifecycle suites.
    "password.reset",
    "password.changed",
    "email.confirmed",
    "email.change_requested",
    "email.changed",
    "account.deleted",
    "mfa.verified",
    "mfa.unenrolled",
]
EVENTS: Final[frozenset[str]] = frozenset(get_args(AuditEvent))
ACCOUNT_EVENTS: Final[frozenset[str]] = frozenset(
    name for name in EVENTS if name.split(".")[0] in ("password", "email", "account", "mfa")
)

# Refusals an attacker can cause in bulk are warnings; the rest are notices of what an
# authorised user or operator did.
_WARNINGS: Final[frozenset[str]] = frozenset(
    {
        "auth.sign_in_failed",
        "auth.lockout",
        "auth.rate_limited",
        "refresh.reuse_detected",
        "service_credential.failed",
    }
)

Value = str | int | float | bool | None | list[str]

_log = structlog.get_logger("audit")
_COUNTERS = {name: metrics.AUDIT_EVENTS.labels(name) for name in sorted(EVENTS)}


def event(name: AuditEvent, **fields: Value) -> None:
    """Write one audit line. Pass ids and reasons only, never a secret or an address."""
    _COUNTERS[name].inc()
    if name in _WARNINGS:
        _log.warning(name, audit=True, **fields)
    else:
        _log.info(name, audit=True, **fields)


def email_hash(email: str) -> str:
    """The ``email_hash`` field: first 16 hex digits of SHA-256 of the normalised address."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


def clip(value: str, limit: int = 64) -> str:
    """Client-supplied identifiers (a claimed service id) are cut to a bounded length."""
    return value[:limit] if value.isprintable() else value[:limit].encode("unicode_escape").decode()
