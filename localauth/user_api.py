"""The user-facing flows: signup, the token grants, /user and /logout. All blocking."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import Any

from localauth.core import Core, Principal, merge_metadata, metadata_columns
from localauth.email_flows import EmailFlows
from localauth.errors import ApiError
from localauth.models import is_banned, rfc3339
from localauth.onetime import EMAIL_CHANGE_NEW, Pkce
from localauth.params import Body
from localauth.tokens import REFRESH_TOKEN_RE
from localauth.validation import (
    check_password_strength,
    validate_email,
    validate_phone,
)
from localauth.verify import Verifier

__all__ = ["UserApi"]

_INVALID_CREDENTIALS = ApiError(400, "invalid_credentials", "Invalid login credentials")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "validation_failed", message)


class UserApi:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings
        self.flows = EmailFlows(core)
        self.verifier = Verifier(self.flows)

    # -- POST /signup ----------------------------------------------------------------------

    def signup(self, body: Body, aud: str, redirect_to: str = "") -> dict[str, Any]:
        s = self.settings
        if s.disable_signup:
            raise ApiError(422, "signup_disabled", "Signups not allowed for this instance")
        email = body.text("email") or ""
        phone = body.text("phone") or ""
        password = body.text("password") or ""
        data = body.mapping("data") or {}
        body.text("channel")
        pkce = Pkce.from_body(body)
        if not email and not phone:
            return self._anonymous_signup(data, aud)
        if email and phone:
            raise _invalid("Only an email address or phone number should be provided on signup.")
        if email and not s.external_email_enabled:
            raise ApiError(400, "email_provider_disabled", "Email signups are disabled")
        if phone and not s.external_phone_enabled:
            raise ApiError(400, "phone_provider_disabled", "Phone signups are disabled")
        if not password:
            raise _invalid("Signup requires a valid password")
        check_password_strength(s, password)
        if email:
            email = validate_email(email)
        else:
            phone = validate_phone(phone)
        password_hash = self.core.hash_password(password)
        with self.core.db.write() as conn:
            existing = (
                self.core.user_by_email(conn, email, aud)
                if email
                else self.core.user_by_phone(conn, phone, aud)
            )
            confirmed_col = "email_confirmed_at" if email else "phone_confirmed_at"
            autoconfirm = s.mailer_autoconfirm if email else False
            if existing is not None and existing[confirmed_col] is not None:
                if autoconfirm:
                    raise ApiError(422, "user_already_exists", "User already registered")
                return self._fake_user(email, phone, aud, data)
            now = time.time()
            if existing is not None:
                sent = existing["confirmation_sent_at"]
                if not autoconfirm and sent is not None and now - sent < s.smtp_max_frequency:
                    wait = int(s.smtp_max_frequency - (now - sent)) + 1
                    raise ApiError(
                        429,
                        "over_email_send_rate_limit",
                        f"For security purposes, you can only request this after {wait} seconds.",
                    )
                meta = merge_metadata(json.loads(existing["user_metadata"]), data)
                user = self.core.update_user_columns(
                    conn,
                    existing["id"],
                    {"user_metadata": json.dumps(meta), "encrypted_password": password_hash},
                )
            else:
                user = self.core.create_user(
                    conn,
                    email=email,
                    phone=phone,
                    password_hash=password_hash,
                    aud=aud,
                    user_metadata=data,
                )
            if autoconfirm:
                user = self.core.update_user_columns(conn, user["id"], {confirmed_col: now})
                self.core.sync_email_identity(conn, user)
                return self.core.issue_session(conn, user, "password")
            if email:
                user = self.flows.send_confirmation(conn, user, redirect_to, pkce)
            else:
                user = self.flows.send_sms_confirmation(conn, user)
            return self.core.user_out(conn, user)

    def _anonymous_signup(self, data: dict[str, Any], aud: str) -> dict[str, Any]:
        if not self.settings.external_anonymous_users_enabled:
            raise ApiError(422, "anonymous_provider_disabled", "Anonymous sign-ins are disabled")
        with self.core.db.write() as conn:
            user = self.core.create_user(conn, aud=aud, user_metadata=data, is_anonymous=True)
            return self.core.issue_session(conn, user, "anonymous")

    def _fake_user(self, email: str, phone: str, aud: str, data: dict[str, Any]) -> dict[str, Any]:
        # GoTrue answers a repeated signup of a confirmed address with a look-alike user, so
        # that signup cannot be used to find out which addresses are registered.
        now = rfc3339(time.time())
        provider = "email" if email else "phone"
        return {
            "id": str(uuid.uuid4()),
            "aud": aud,
            "role": self.settings.jwt_default_group_name,
            "email": email,
            "phone": phone,
            "confirmation_sent_at": now,
            "app_metadata": {"provider": provider, "providers": [provider]},
            "user_metadata": {k: v for k, v in data.items() if v is not None},
            "identities": [],
            "created_at": now,
            "updated_at": now,
            "is_anonymous": False,
        }

    # -- POST /token -----------------------------------------------------------------------

    def password_grant(self, body: Body, aud: str) -> dict[str, Any]:
        s = self.settings
        email = body.text("email") or ""
        phone = body.text("phone") or ""
        password = body.text("password") or ""
        if email and phone:
            raise _invalid("Only an email address or phone number should be provided on login.")
        if email and not s.external_email_enabled:
            raise ApiError(422, "email_provider_disabled", "Email logins are disabled")
        if phone and not s.external_phone_enabled:
            raise ApiError(422, "phone_provider_disabled", "Phone logins are disabled")
        if not email and not phone:
            raise _invalid("missing email or phone")
        with self.core.db.read() as conn:
            if email:
                user = self.core.user_by_email(conn, email, aud)
            else:
                user = self.core.user_by_phone(conn, phone.replace(" ", "").lstrip("+"), aud)
        if user is None or not user["encrypted_password"]:
            raise _INVALID_CREDENTIALS
        if is_banned(user):
            raise ApiError(400, "user_banned", "User is banned")
        if not self.core.password_matches(password, user["encrypted_password"]):
            raise _INVALID_CREDENTIALS
        if email and user["email_confirmed_at"] is None:
            raise ApiError(400, "email_not_confirmed", "Email not confirmed")
        if phone and user["phone_confirmed_at"] is None:
            raise ApiError(400, "phone_not_confirmed", "Phone not confirmed")
        with self.core.db.write() as conn:
            current = self.core.user_by_id(conn, user["id"])
            if current is None:
                raise _INVALID_CREDENTIALS
            return self.core.issue_session(conn, current, "password")

    def refresh_grant(self, body: Body) -> dict[str, Any]:
        token = body.text("refresh_token") or ""
        if len(token) != 12 or not REFRESH_TOKEN_RE.match(token):
            # Longer tokens would have to be v2 signed tokens, which localauth never issues.
            raise _invalid("Refresh token is not valid")
        already_used = False
        with self.core.db.write() as conn:
            row = conn.execute("SELECT * FROM refresh_tokens WHERE token = ?", (token,)).fetchone()
            user = self.core.user_by_id(conn, row["user_id"]) if row is not None else None
            if row is None or user is None:
                raise ApiError(
                    400,
                    "refresh_token_not_found",
                    "Invalid Refresh Token: Refresh Token Not Found",
                )
            if is_banned(user):
                raise ApiError(400, "user_banned", "Invalid Refresh Token: User Banned")
            session = conn.execute(
                "SELECT * FROM sessions WHERE id = ?", (row["session_id"],)
            ).fetchone()
            if session is None:
                raise ApiError(
                    400, "session_not_found", "Invalid Refresh Token: No Valid Session Found"
                )
            now = time.time()
            issued: str | None = None
            if row["revoked"]:
                active = conn.execute(
                    "SELECT token, parent FROM refresh_tokens WHERE session_id = ? AND revoked = 0 "
                    "ORDER BY id DESC LIMIT 1",
                    (session["id"],),
                ).fetchone()
                if active is not None and active["parent"] == token:
                    # The client lost the answer to its last refresh: hand that answer out again.
                    issued = active["token"]
                elif now > row["updated_at"] + self.settings.refresh_token_reuse_interval:
                    if self.settings.refresh_token_rotation_enabled:
                        conn.execute(
                            "UPDATE refresh_tokens SET revoked = 1, updated_at = ? "
                            "WHERE session_id = ? AND revoked = 0",
                            (now, session["id"]),
                        )
                    already_used = True
            if not already_used:
                if issued is None:
                    conn.execute(
                        "UPDATE refresh_tokens SET revoked = 1, updated_at = ? WHERE id = ?",
                        (now, row["id"]),
                    )
                    issued = self.core.insert_refresh_token(
                        conn, user["id"], session["id"], parent=token
                    )
                conn.execute(
                    "UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session["id"])
                )
                return self.core.session_json(conn, user, session, issued)
        # Raised after COMMIT: the family revocation above must stick.
        raise ApiError(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")

    # -- /user -----------------------------------------------------------------------------

    def get_user(self, authorization: str | None, request_aud: str) -> dict[str, Any]:
        with self.core.db.read() as conn:
            principal = self.core.authenticate(conn, authorization)
            aud = principal.claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if request_aud not in auds:
                raise _invalid("Token audience doesn't match request audience")
            return self.core.user_out(conn, principal.user)

    def update_user(
        self, authorization: str | None, body: Body, redirect_to: str = ""
    ) -> dict[str, Any]:
        s = self.settings
        email = body.text("email")
        phone = body.text("phone")
        password = body.text("password")
        data = body.mapping("data")
        app_data = body.mapping("app_metadata")
        nonce = body.text("nonce") or ""
        body.text("current_password")
        pkce = Pkce.from_body(body)
        with self.core.db.read() as conn:
            principal = self.core.authenticate(conn, authorization)
        if app_data is not None and principal.claims.get("role") not in s.jwt_admin_roles:
            raise ApiError(403, "not_admin", "Updating app_metadata requires admin privileges")
        new_hash: str | None = None
        if password is not None:
            check_password_strength(s, password)
            if self.core.password_matches(password, principal.user["encrypted_password"]):
                raise ApiError(
                    422,
                    "same_password",
                    "New password should be different from the old password.",
                )
            new_hash = self.core.hash_password(password)
        if email:
            email = validate_email(email)
        if phone:
            if not s.external_phone_enabled:
                raise ApiError(400, "phone_provider_disabled", "Phone logins are disabled")
            phone = validate_phone(phone)
        with self.core.db.write() as conn:
            principal = self.core.authenticate(conn, authorization)
            uid = principal.user["id"]
            user = principal.user
            changes_email = bool(email) and email != user["email"]
            if (changes_email or password) and self._needs_aal2(conn, principal):
                raise ApiError(
                    401,
                    "insufficient_aal",
                    "AAL2 session is required to update email or password when MFA is enabled.",
                )
            if nonce:
                self.verifier.check_nonce(conn, user, nonce)
            columns: dict[str, Any] = {}
            change_to: str | None = None
            columns.update(metadata_columns(user, user_metadata=data, app_metadata=app_data))
            if phone and phone != user["phone"]:
                taken = self.core.user_by_phone(conn, phone, user["aud"])
                if taken is not None and taken["id"] != uid:
                    raise ApiError(
                        422,
                        "phone_exists",
                        "A user with this phone number has already been registered",
                    )
                columns["phone"] = phone
            if email and email != user["email"]:
                taken = self.core.user_by_email(conn, email, user["aud"])
                if taken is not None and taken["id"] != uid:
                    raise ApiError(
                        422,
                        "email_exists",
                        "A user with this email address has already been registered",
                    )
                if s.mailer_autoconfirm:
                    columns.update({"email": email, "email_confirmed_at": time.time()})
                else:
                    change_to = email
            if new_hash is not None:
                columns["encrypted_password"] = new_hash
                self.core.delete_sessions(conn, uid, keep=principal.session_id)
            if columns:
                user = self.core.update_user_columns(conn, uid, columns)
                if "email" in columns:
                    self.core.sync_email_identity(conn, user)
            if change_to is not None:
                self.flows.tokens.check_frequency(conn, uid, EMAIL_CHANGE_NEW)
                user = self.flows.send_email_change(conn, user, change_to, redirect_to, pkce)
            return self.core.user_out(conn, user)

    @staticmethod
    def _needs_aal2(conn: sqlite3.Connection, principal: Principal) -> bool:
        verified = conn.execute(
            "SELECT 1 FROM mfa_factors WHERE user_id = ? AND status = 'verified' LIMIT 1",
            (principal.user["id"],),
        ).fetchone()
        if verified is None:
            return False
        session = conn.execute(
            "SELECT aal FROM sessions WHERE id = ?", (principal.session_id,)
        ).fetchone()
        return session is None or session["aal"] != "aal2"

    # -- POST /logout ----------------------------------------------------------------------

    def logout(self, authorization: str | None, scope: str) -> None:
        with self.core.db.write() as conn:
            principal = self.core.authenticate(conn, authorization)
            if scope not in {"", "global", "local", "others"}:
                raise _invalid("Unsupported logout scope")
            uid = principal.user["id"]
            sid = principal.session_id
            if sid is None or scope in {"", "global"}:
                self.core.delete_sessions(conn, uid)
            elif scope == "local":
                self.core.delete_sessions(conn, uid, only=sid)
            else:
                self.core.delete_sessions(conn, uid, keep=sid)
