"""The admin flows behind requireAdminCredentials. All blocking."""

from __future__ import annotations

import time
from typing import Any

from localauth.core import Core, metadata_columns
from localauth.email_flows import allowed_redirect
from localauth.errors import ApiError
from localauth.onetime import (
    CONFIRMATION,
    EMAIL_CHANGE_CURRENT,
    EMAIL_CHANGE_NEW,
    RECOVERY,
    OneTime,
)
from localauth.params import Body
from localauth.validation import (
    check_password_length,
    check_password_strength,
    parse_ban_duration,
    parse_uuid,
    validate_email,
    validate_phone,
)

__all__ = ["AdminApi", "UserPage"]

_LINK_TYPES = (
    "signup",
    "invite",
    "magiclink",
    "recovery",
    "email_change_current",
    "email_change_new",
)
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")

# (users, total, page, per_page)
UserPage = tuple[list[dict[str, Any]], int, int, int]


def _invalid(message: str) -> ApiError:
    return ApiError(400, "validation_failed", message)


def _not_found() -> ApiError:
    return ApiError(404, "user_not_found", "User not found")


def _email_exists() -> ApiError:
    return ApiError(
        422, "email_exists", "A user with this email address has already been registered"
    )


class AdminApi:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings
        self.tokens = OneTime(core.settings)

    def authorize(self, authorization: str | None) -> None:
        with self.core.db.read() as conn:
            self.core.require_admin(conn, authorization)

    def _ban_columns(self, body: Body) -> dict[str, Any]:
        raw = body.text("ban_duration")
        if raw is None or raw == "":
            return {}
        seconds = parse_ban_duration(raw)
        return {"banned_until": None if seconds is None else time.time() + seconds}

    def _password_hash(self, body: Body, *, strength: bool) -> str | None:
        password = body.text("password")
        password_hash = body.text("password_hash")
        if password and password_hash:
            raise _invalid("Only a password or a password hash should be provided")
        if password_hash:
            if not password_hash.startswith(_BCRYPT_PREFIXES):
                raise _invalid("Invalid password hash format")
            return password_hash
        if password is None:
            return None
        if strength:
            check_password_strength(self.settings, password)
        else:
            check_password_length(password)
        return self.core.hash_password(password)

    # -- POST /admin/users -----------------------------------------------------------------

    def create_user(self, authorization: str | None, body: Body, aud: str) -> dict[str, Any]:
        self.authorize(authorization)
        email = body.text("email") or ""
        phone = body.text("phone") or ""
        raw_id = body.text("id")
        aud = body.text("aud") or aud
        role = body.text("role")
        email_confirm = bool(body.flag("email_confirm"))
        phone_confirm = bool(body.flag("phone_confirm"))
        user_metadata = body.mapping("user_metadata")
        app_metadata = body.mapping("app_metadata")
        ban = self._ban_columns(body)
        uid: str | None = None
        if raw_id:
            uid = parse_uuid(raw_id)
            if uid is None:
                raise _invalid("ID must conform to the uuid v4 format")
        if not email and not phone:
            raise _invalid("Cannot create a user without either an email or phone")
        if email:
            email = validate_email(email)
        if phone:
            phone = validate_phone(phone)
        password_hash = self._password_hash(body, strength=False)
        if password_hash is None:
            password_hash = self.core.random_password_hash()
        with self.core.db.write() as conn:
            if email and self.core.user_by_email(conn, email, aud) is not None:
                raise _email_exists()
            if phone and self.core.user_by_phone(conn, phone, aud) is not None:
                raise ApiError(
                    422,
                    "phone_exists",
                    "A user with this phone number has already been registered",
                )
            user = self.core.create_user(
                conn,
                email=email,
                phone=phone,
                password_hash=password_hash,
                aud=aud,
                role=role,
                uid=uid,
                user_metadata=user_metadata,
                app_metadata=app_metadata,
                email_confirmed=email_confirm,
                phone_confirmed=phone_confirm,
                extra=ban,
            )
            return self.core.user_out(conn, user)

    # -- GET /admin/users ------------------------------------------------------------------

    def list_users(
        self,
        authorization: str | None,
        aud: str,
        page_raw: str,
        per_page_raw: str,
        email_filter: str,
    ) -> UserPage:
        self.authorize(authorization)
        try:
            page = int(page_raw) if page_raw else 1
            per_page = int(per_page_raw) if per_page_raw else 50
        except ValueError:
            raise _invalid("Bad Pagination Parameters") from None
        page = max(page, 1)
        per_page = max(per_page, 1)
        where, args = "aud = ?", [aud]
        if email_filter:
            where += " AND email LIKE ?"
            args.append(f"%{email_filter}%")
        with self.core.db.read() as conn:
            total: int = conn.execute(f"SELECT COUNT(*) FROM users WHERE {where}", args).fetchone()[
                0
            ]
            rows = conn.execute(
                f"SELECT * FROM users WHERE {where} ORDER BY created_at DESC, rowid DESC "
                "LIMIT ? OFFSET ?",
                (*args, per_page, (page - 1) * per_page),
            ).fetchall()
            return [self.core.user_out(conn, r) for r in rows], total, page, per_page

    # -- /admin/users/{id} -----------------------------------------------------------------

    @staticmethod
    def _uid(raw: str) -> str:
        uid = parse_uuid(raw)
        if uid is None:
            raise ApiError(404, "validation_failed", "user_id must be an UUID")
        return uid

    def get_user(self, authorization: str | None, raw_id: str) -> dict[str, Any]:
        self.authorize(authorization)
        uid = self._uid(raw_id)
        with self.core.db.read() as conn:
            user = self.core.user_by_id(conn, uid)
            if user is None:
                raise _not_found()
            return self.core.user_out(conn, user)

    def update_user(self, authorization: str | None, raw_id: str, body: Body) -> dict[str, Any]:
        self.authorize(authorization)
        uid = self._uid(raw_id)
        with self.core.db.read() as conn:
            if self.core.user_by_id(conn, uid) is None:
                raise _not_found()
        email = body.text("email")
        phone = body.text("phone")
        role = body.text("role")
        aud = body.text("aud")
        email_confirm = body.flag("email_confirm")
        phone_confirm = body.flag("phone_confirm")
        user_metadata = body.mapping("user_metadata")
        app_metadata = body.mapping("app_metadata")
        columns = self._ban_columns(body)
        if email:
            email = validate_email(email)
        if phone:
            phone = validate_phone(phone)
        new_hash = self._password_hash(body, strength=True)
        with self.core.db.write() as conn:
            user = self.core.user_by_id(conn, uid)
            if user is None:
                raise _not_found()
            now = time.time()
            if role:
                columns["role"] = role
            if aud:
                columns["aud"] = aud
            columns.update(
                metadata_columns(user, user_metadata=user_metadata, app_metadata=app_metadata)
            )
            if email and email != user["email"]:
                taken = self.core.user_by_email(conn, email, user["aud"])
                if taken is not None and taken["id"] != uid:
                    # GoTrue has no pre-check here; the unique index fails inside the update.
                    raise ApiError(500, "unexpected_failure", "Error updating user")
                columns.update({"email": email, "new_email": None})
            if phone and phone != user["phone"]:
                columns["phone"] = phone
            if email_confirm:
                columns["email_confirmed_at"] = user["email_confirmed_at"] or now
            if phone_confirm:
                columns["phone_confirmed_at"] = user["phone_confirmed_at"] or now
            if new_hash is not None:
                columns["encrypted_password"] = new_hash
                self.core.delete_sessions(conn, uid)
            if columns:
                user = self.core.update_user_columns(conn, uid, columns)
                self.core.sync_email_identity(conn, user)
            return self.core.user_out(conn, user)

    def delete_user(self, authorization: str | None, raw_id: str, body: Body) -> None:
        self.authorize(authorization)
        uid = self._uid(raw_id)
        soft = bool(body.flag("should_soft_delete"))
        with self.core.db.write() as conn:
            if self.core.user_by_id(conn, uid) is None:
                raise _not_found()
            self.core.delete_sessions(conn, uid)
            conn.execute("DELETE FROM identities WHERE user_id = ?", (uid,))
            for table in ("mfa_factors", "one_time_tokens", "flow_states"):
                conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (uid,))
            if soft:
                now = time.time()
                conn.execute(
                    "UPDATE users SET email = '', phone = '', encrypted_password = '', "
                    "new_email = NULL, deleted_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, uid),
                )
            else:
                conn.execute("DELETE FROM users WHERE id = ?", (uid,))

    # -- POST /admin/generate_link ---------------------------------------------------------

    def generate_link(
        self, authorization: str | None, body: Body, aud: str, redirect_to: str
    ) -> dict[str, Any]:
        self.authorize(authorization)
        link_type = body.text("type") or ""
        email = body.text("email") or ""
        password = body.text("password") or ""
        new_email = body.text("new_email") or ""
        data = body.mapping("data") or {}
        if link_type not in _LINK_TYPES:
            raise _invalid(f"Invalid email action link type requested: {link_type}")
        email = validate_email(email)
        if link_type.startswith("email_change"):
            if not new_email:
                raise _invalid("The new_email address is required for email change links")
            new_email = validate_email(new_email)
        password_hash: str | None = None
        if link_type == "signup":
            if not password:
                raise _invalid("Signup requires a valid password")
            check_password_strength(self.settings, password)
            password_hash = self.core.hash_password(password)
        random_hash = self.core.random_password_hash()
        with self.core.db.write() as conn:
            user = self.core.user_by_email(conn, email, aud)
            now = time.time()
            if link_type == "magiclink" and user is None:
                link_type = "signup"
                password_hash = random_hash
            if user is None and link_type in {
                "recovery",
                "email_change_current",
                "email_change_new",
            }:
                raise ApiError(404, "user_not_found", "User with this email not found")
            if link_type in {"signup", "invite"}:
                if user is not None and user["email_confirmed_at"] is not None:
                    raise _email_exists()
                if user is None:
                    user = self.core.create_user(
                        conn,
                        email=email,
                        password_hash=password_hash or "",
                        aud=aud,
                        user_metadata=data,
                    )
                sent_col = "invited_at" if link_type == "invite" else "confirmation_sent_at"
                user = self.core.update_user_columns(conn, user["id"], {sent_col: now})
            elif link_type in {"magiclink", "recovery"}:
                assert user is not None
                user = self.core.update_user_columns(conn, user["id"], {"recovery_sent_at": now})
            else:
                assert user is not None
                taken = self.core.user_by_email(conn, new_email, aud)
                if taken is not None and taken["id"] != user["id"]:
                    raise _email_exists()
                user = self.core.update_user_columns(
                    conn, user["id"], {"new_email": new_email, "email_change_sent_at": now}
                )
            kind = link_type.replace("_current", "").replace("_new", "")
            if link_type == "email_change_current":
                token_type, address = EMAIL_CHANGE_CURRENT, user["email"]
            elif link_type == "email_change_new":
                token_type, address = EMAIL_CHANGE_NEW, new_email
            elif link_type in {"signup", "invite"}:
                token_type, address = CONFIRMATION, email
            else:
                token_type, address = RECOVERY, email
            otp, hashed = self.tokens.issue(conn, user["id"], token_type, address)
            out = self.core.user_out(conn, user)
        redirect = allowed_redirect(self.settings, redirect_to)
        return {
            **out,
            "action_link": self.tokens.link(hashed, kind, redirect),
            "email_otp": otp,
            "hashed_token": hashed,
            "verification_type": link_type,
            "redirect_to": redirect,
        }
