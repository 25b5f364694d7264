"""One-time tokens (email links and OTPs) and PKCE flow states, stored as GoTrue stores them.

A token is a random numeric OTP; what is kept is its *token hash*, the hex SHA-224 of the
address followed by the OTP (GoTrue's ``crypto.GenerateTokenHash``), prefixed ``pkce_`` when
the request started a PKCE flow. The email link carries the stored hash, the email body the OTP.
One token per user and type; a new one replaces the old; verifying consumes it; it expires
``GOTRUE_MAILER_OTP_EXP`` seconds after it was sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote

from localauth.config import Settings
from localauth.errors import ApiError
from localauth.params import Body

__all__ = [
    "CONFIRMATION",
    "EMAIL_CHANGE_CURRENT",
    "EMAIL_CHANGE_NEW",
    "PKCE_PREFIX",
    "REAUTHENTICATION",
    "RECOVERY",
    "OneTime",
    "Pkce",
    "token_hash",
]

CONFIRMATION = "confirmation_token"
RECOVERY = "recovery_token"
EMAIL_CHANGE_CURRENT = "email_change_token_current"
EMAIL_CHANGE_NEW = "email_change_token_new"
REAUTHENTICATION = "reauthentication_token"
PKCE_PREFIX = "pkce_"


def token_hash(address: str, otp: str) -> str:
    return hashlib.sha224((address + otp).encode()).hexdigest()


def _invalid(message: str) -> ApiError:
    return ApiError(400, "validation_failed", message)


@dataclass(frozen=True)
class Pkce:
    challenge: str
    method: str  # "s256" or "plain"

    @staticmethod
    def from_body(body: Body) -> Pkce | None:
        """GoTrue's validatePKCEParams: both fields or neither."""
        challenge = body.text("code_challenge") or ""
        method = (body.text("code_challenge_method") or "").lower()
        if not challenge and not method:
            return None
        if not challenge or not method:
            raise _invalid("PKCE flow requires code_challenge_method and code_challenge")
        if method not in {"s256", "plain"}:
            raise _invalid(f"code challenge method not supported: {method}")
        if not 43 <= len(challenge) <= 128:
            raise _invalid("code challenge has to be between 43 and 128 characters")
        return Pkce(challenge, method)

    def matches(self, verifier: str) -> bool:
        if self.method == "s256":
            digest = hashlib.sha256(verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        else:
            expected = verifier
        return hmac.compare_digest(expected, self.challenge)


class OneTime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def new_otp(self) -> str:
        n = self.settings.mailer_otp_length
        return f"{secrets.randbelow(10**n):0{n}d}"

    def issue(
        self,
        conn: sqlite3.Connection,
        uid: str,
        token_type: str,
        address: str,
        *,
        pkce: bool = False,
    ) -> tuple[str, str]:
        """A fresh (otp, stored hash) for ``uid``, replacing the previous token of the type."""
        otp = self.new_otp()
        stored = (PKCE_PREFIX if pkce else "") + token_hash(address, otp)
        conn.execute(
            "INSERT OR REPLACE INTO one_time_tokens (user_id, token_type, token_hash, "
            "relates_to, created_at) VALUES (?, ?, ?, ?, ?)",
            (uid, token_type, stored, address, time.time()),
        )
        return otp, stored

    def check_frequency(self, conn: sqlite3.Connection, uid: str, token_type: str) -> None:
        """GOTRUE_SMTP_MAX_FREQUENCY: one mail of a kind per user per interval."""
        row = conn.execute(
            "SELECT created_at FROM one_time_tokens WHERE user_id = ? AND token_type = ?",
            (uid, token_type),
        ).fetchone()
        limit = self.settings.smtp_max_frequency
        if row is not None and time.time() - row["created_at"] < limit:
            wait = int(limit - (time.time() - row["created_at"])) + 1
            raise ApiError(
                429,
                "over_email_send_rate_limit",
                f"For security purposes, you can only request this after {wait} seconds.",
            )

    def expired(self, row: sqlite3.Row) -> bool:
        return time.time() > float(row["created_at"]) + self.settings.mailer_otp_exp

    @staticmethod
    def by_hash(
        conn: sqlite3.Connection, stored_or_plain: str, types: tuple[str, ...]
    ) -> sqlite3.Row | None:
        marks = ", ".join("?" for _ in types)
        row: sqlite3.Row | None = conn.execute(
            f"SELECT * FROM one_time_tokens WHERE token_type IN ({marks}) "
            "AND (token_hash = ? OR token_hash = ?) ORDER BY created_at DESC LIMIT 1",
            (*types, stored_or_plain, PKCE_PREFIX + stored_or_plain),
        ).fetchone()
        return row

    def for_user(
        self, conn: sqlite3.Connection, uid: str, hashed: str, types: tuple[str, ...]
    ) -> sqlite3.Row | None:
        """The user's live token of one of ``types`` matching ``hashed`` (an OTP's hash)."""
        for token_type in types:
            row: sqlite3.Row | None = conn.execute(
                "SELECT * FROM one_time_tokens WHERE user_id = ? AND token_type = ?",
                (uid, token_type),
            ).fetchone()
            if row is None or self.expired(row):
                continue
            if row["token_hash"] in {hashed, PKCE_PREFIX + hashed}:
                return row
        return None

    @staticmethod
    def consume(conn: sqlite3.Connection, uid: str, *types: str) -> None:
        marks = ", ".join("?" for _ in types)
        conn.execute(
            f"DELETE FROM one_time_tokens WHERE user_id = ? AND token_type IN ({marks})",
            (uid, *types),
        )

    @staticmethod
    def has(conn: sqlite3.Connection, uid: str, token_type: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM one_time_tokens WHERE user_id = ? AND token_type = ?",
            (uid, token_type),
        ).fetchone()
        return row is not None

    def link(self, stored_hash: str, verify_type: str, redirect_to: str) -> str:
        return (
            f"{self.settings.api_external_url}/verify?token={stored_hash}"
            f"&type={verify_type}&redirect_to={quote(redirect_to, safe='')}"
        )

    # -- PKCE flow states ------------------------------------------------------------------

    @staticmethod
    def start_flow(conn: sqlite3.Connection, uid: str, pkce: Pkce, method: str) -> None:
        conn.execute(
            "INSERT INTO flow_states (id, user_id, code_challenge, code_challenge_method, "
            "authentication_method, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (str(uuid.uuid4()), uid, pkce.challenge, pkce.method, method, time.time()),
        )

    @staticmethod
    def issue_auth_code(conn: sqlite3.Connection, uid: str, method: str) -> str:
        row = conn.execute(
            "SELECT id FROM flow_states WHERE user_id = ? AND authentication_method = ? "
            "ORDER BY created_at DESC LIMIT 1",
            (uid, method),
        ).fetchone()
        if row is None:
            raise ApiError(
                400, "flow_state_not_found", "No associated flow state found. no flow state"
            )
        code = str(uuid.uuid4())
        conn.execute(
            "UPDATE flow_states SET auth_code = ?, auth_code_issued_at = ? WHERE id = ?",
            (code, time.time(), row["id"]),
        )
        return code
