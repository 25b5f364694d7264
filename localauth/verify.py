"""``/verify`` (GET link and POST OTP / token hash), the PKCE code exchange and the
reauthentication nonce check. All blocking.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from localauth.email_flows import EmailFlows, allowed_redirect
from localauth.errors import ApiError
from localauth.models import is_banned
from localauth.onetime import (
    CONFIRMATION,
    EMAIL_CHANGE_CURRENT,
    EMAIL_CHANGE_NEW,
    PKCE_PREFIX,
    REAUTHENTICATION,
    RECOVERY,
    Pkce,
    token_hash,
)
from localauth.params import Body
from localauth.validation import validate_email, validate_phone

__all__ = ["SINGLE_CONFIRMATION", "Verifier"]

SINGLE_CONFIRMATION = (
    "Confirmation link accepted. Please proceed to confirm link sent to the other email"
)
_TYPES: dict[str, tuple[str, ...]] = {
    "email": (CONFIRMATION, RECOVERY),
    "signup": (CONFIRMATION,),
    "invite": (CONFIRMATION,),
    "recovery": (RECOVERY,),
    "magiclink": (RECOVERY,),
    "email_change": (EMAIL_CHANGE_CURRENT, EMAIL_CHANGE_NEW),
    "sms": (CONFIRMATION,),
}
_LINK_TYPES = ("email", "signup", "invite", "recovery", "magiclink", "email_change")
_PKCE_METHODS = {
    "signup": "email/signup",
    "invite": "invite",
    "magiclink": "magiclink",
    "recovery": "recovery",
    "email_change": "email_change",
}
_OAUTH_ERRORS = {400: "invalid_request", 401: "unauthorized_client", 403: "access_denied"}


def _invalid(message: str) -> ApiError:
    return ApiError(400, "validation_failed", message)


def _link_expired() -> ApiError:
    return ApiError(403, "otp_expired", "Email link is invalid or has expired")


def _otp_expired() -> ApiError:
    return ApiError(403, "otp_expired", "Token has expired or is invalid")


def _with(url: str, *, query: Mapping[str, str] | None = None, fragment: str = "") -> str:
    parts = urlsplit(url)
    q = parts.query
    if query:
        q = (q + "&" if q else "") + urlencode(query)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, q, fragment))


class Verifier:
    def __init__(self, flows: EmailFlows) -> None:
        self.flows = flows
        self.core = flows.core
        self.settings = flows.settings
        self.tokens = flows.tokens

    # -- shared ----------------------------------------------------------------------------

    def _by_token_hash(
        self, conn: sqlite3.Connection, vtype: str, hashed: str
    ) -> tuple[sqlite3.Row, sqlite3.Row, str]:
        if vtype not in _LINK_TYPES:
            raise _invalid("Invalid email verification type")
        row = self.tokens.by_hash(conn, hashed, _TYPES[vtype])
        user = self.core.user_by_id(conn, row["user_id"]) if row is not None else None
        if row is None or user is None:
            raise _link_expired()
        if is_banned(user):
            raise ApiError(403, "user_banned", "User is banned")
        if self.tokens.expired(row):
            raise _link_expired()
        if vtype == "email":
            vtype = "magiclink" if row["token_type"] == RECOVERY else "signup"
        return user, row, vtype

    def _apply(
        self, conn: sqlite3.Connection, user: sqlite3.Row, vtype: str, row: sqlite3.Row
    ) -> sqlite3.Row | None:
        """Carry out the verified action; None means one half of a secure email change."""
        core, uid, now = self.core, user["id"], time.time()
        if vtype in {"signup", "invite"}:
            columns: dict[str, Any] = {"email_confirmed_at": user["email_confirmed_at"] or now}
            if not user["encrypted_password"] and user["invited_at"] is not None:
                columns["encrypted_password"] = core.random_password_hash()
            self.tokens.consume(conn, uid, CONFIRMATION)
            user = core.update_user_columns(conn, uid, columns)
            core.sync_email_identity(conn, user)
        elif vtype in {"recovery", "magiclink"}:
            self.tokens.consume(conn, uid, RECOVERY)
            if user["email_confirmed_at"] is None:
                user = core.update_user_columns(conn, uid, {"email_confirmed_at": now})
                core.sync_email_identity(conn, user)
        elif vtype == "email_change":
            self.tokens.consume(conn, uid, row["token_type"])
            other = (
                EMAIL_CHANGE_NEW
                if row["token_type"] == EMAIL_CHANGE_CURRENT
                else EMAIL_CHANGE_CURRENT
            )
            if (
                self.settings.mailer_secure_email_change_enabled
                and user["email"]
                and self.tokens.has(conn, uid, other)
            ):
                return None
            self.tokens.consume(conn, uid, other)
            if not user["new_email"]:
                raise _otp_expired()
            user = core.update_user_columns(
                conn,
                uid,
                {
                    "email": user["new_email"],
                    "new_email": None,
                    "email_confirmed_at": now,
                    "is_anonymous": 0,
                },
            )
            core.sync_email_identity(conn, user)
        elif vtype == "sms":
            self.tokens.consume(conn, uid, CONFIRMATION)
            user = core.update_user_columns(conn, uid, {"phone_confirmed_at": now})
        else:
            raise _invalid("Unsupported verification type")
        return user

    # -- POST /verify ----------------------------------------------------------------------

    def verify_post(self, body: Body, aud: str) -> dict[str, Any]:
        vtype = body.text("type") or ""
        token = body.text("token") or ""
        hashed = body.text("token_hash") or ""
        email = body.text("email") or ""
        phone = body.text("phone") or ""
        redirect_to = body.text("redirect_to") or ""
        if not vtype:
            raise _invalid("Verify requires a verification type")
        if bool(token) == bool(hashed):
            raise _invalid("Verify requires either a token or a token hash")
        if token:
            if phone and not email:
                phone = validate_phone(phone)
                hashed = token_hash(phone, token)
            elif email and not phone:
                try:
                    email = validate_email(email)
                except ApiError:
                    raise ApiError(422, "validation_failed", "Invalid email format") from None
                hashed = token_hash(email, token)
            else:
                raise _invalid("Only an email address or phone number should be provided on verify")
        elif email or phone or redirect_to:
            raise _invalid("Only the token_hash and type should be provided")
        with self.core.db.write() as conn:
            if not token:
                user, row, vtype = self._by_token_hash(conn, vtype, hashed)
            else:
                user, row, vtype = self._by_otp(conn, vtype, email, phone, hashed, aud)
            updated = self._apply(conn, user, vtype, row)
            if updated is None:
                return {"msg": SINGLE_CONFIRMATION, "code": "200"}
            return self.core.issue_session(conn, updated, "otp")

    def _by_otp(
        self, conn: sqlite3.Connection, vtype: str, email: str, phone: str, hashed: str, aud: str
    ) -> tuple[sqlite3.Row, sqlite3.Row, str]:
        if phone:
            user = self.core.user_by_phone(conn, phone, aud) if vtype == "sms" else None
        elif vtype == "email_change":
            user = conn.execute(
                "SELECT * FROM users WHERE aud = ? AND (email = ? OR new_email = ?) "
                "AND new_email IS NOT NULL AND new_email != '' LIMIT 1",
                (aud, email, email),
            ).fetchone()
        else:
            user = self.core.user_by_email(conn, email, aud)
        if user is None:
            raise _otp_expired()
        if is_banned(user):
            raise ApiError(403, "user_banned", "User is banned")
        row = self.tokens.for_user(conn, user["id"], hashed, _TYPES.get(vtype, ()))
        if row is None:
            raise _otp_expired()
        if vtype == "email":
            vtype = "magiclink" if row["token_type"] == RECOVERY else "signup"
        return user, row, vtype

    # -- GET /verify (the email link) ------------------------------------------------------

    def verify_get(self, query: Mapping[str, str]) -> str:
        """The redirect target (303) for an email link."""
        vtype = query.get("type", "")
        token = query.get("token", "")
        redirect = allowed_redirect(self.settings, query.get("redirect_to", ""))
        if not vtype:
            raise _invalid("Verify requires a verification type")
        if not token:
            raise _invalid("Verify requires a token or a token hash")
        pkce = token.startswith(PKCE_PREFIX)
        try:
            with self.core.db.write() as conn:
                user, row, vtype = self._by_token_hash(conn, vtype, token)
                updated = self._apply(conn, user, vtype, row)
                if updated is None:
                    message = {"message": SINGLE_CONFIRMATION}
                    return _with(
                        redirect, query=message if pkce else None, fragment=urlencode(message)
                    )
                if pkce:
                    code = self.tokens.issue_auth_code(conn, user["id"], _PKCE_METHODS[vtype])
                    return _with(redirect, query={"code": code})
                session = self.core.issue_session(conn, updated, "otp")
        except ApiError as err:
            params = {"error": _OAUTH_ERRORS.get(err.status, "server_error")}
            params.update({"error_code": err.error_code, "error_description": err.message})
            fragment = urlencode({**params, "sb": ""})
            return _with(redirect, query=params if pkce else None, fragment=fragment)
        fragment = urlencode(
            {
                "access_token": session["access_token"],
                "expires_at": str(session["expires_at"]),
                "expires_in": str(session["expires_in"]),
                "refresh_token": session["refresh_token"],
                "token_type": "bearer",
                "type": vtype,
            }
        )
        return _with(redirect, fragment=fragment)

    # -- POST /token?grant_type=pkce -------------------------------------------------------

    def pkce_grant(self, body: Body) -> dict[str, Any]:
        code = body.text("auth_code") or ""
        verifier = body.text("code_verifier") or ""
        if not code or not verifier:
            raise _invalid("invalid request: both auth code and code verifier should be non-empty")
        with self.core.db.write() as conn:
            flow = conn.execute("SELECT * FROM flow_states WHERE auth_code = ?", (code,)).fetchone()
            if flow is None:
                raise ApiError(
                    404, "flow_state_not_found", "invalid flow state, no valid flow state found"
                )
            issued = float(flow["auth_code_issued_at"] or flow["created_at"])
            if time.time() > issued + self.settings.flow_state_expiry_duration:
                raise ApiError(
                    400, "flow_state_expired", "invalid flow state, flow state has expired"
                )
            pkce = Pkce(flow["code_challenge"], flow["code_challenge_method"])
            if not pkce.matches(verifier):
                raise ApiError(
                    400,
                    "bad_code_verifier",
                    "code challenge does not match previously saved code verifier",
                )
            user = self.core.user_by_id(conn, flow["user_id"])
            if user is None:
                raise ApiError(404, "user_not_found", "User not found")
            if is_banned(user):
                raise ApiError(400, "user_banned", "User is banned")
            conn.execute("DELETE FROM flow_states WHERE id = ?", (flow["id"],))
            return self.core.issue_session(conn, user, flow["authentication_method"])

    # -- PUT /user nonce -------------------------------------------------------------------

    def check_nonce(self, conn: sqlite3.Connection, user: sqlite3.Row, nonce: str) -> None:
        invalid = ApiError(400, "reauthentication_not_valid", "Nonce has expired or is invalid")
        row = self.tokens.for_user(
            conn, user["id"], token_hash(user["email"], nonce), (REAUTHENTICATION,)
        )
        if row is None:
            raise invalid
        self.tokens.consume(conn, user["id"], REAUTHENTICATION)
