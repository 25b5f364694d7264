"""Shared building blocks: user rows, sessions, token responses, authentication.

Everything here blocks (SQLite, bcrypt) and runs in worker threads.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

import bcrypt

from localauth.config import Settings
from localauth.errors import ApiError
from localauth.keys import KeyRing
from localauth.models import factor_json, is_banned, user_json
from localauth.store import Database
from localauth.tokens import new_refresh_token, session_uuid, sign_access_token, verify_jwt
from localauth.validation import MAX_PASSWORD_BYTES, parse_uuid

__all__ = ["Core", "Principal", "merge_metadata", "metadata_columns"]

_BEARER_RE = re.compile(r"^(?:B|b)earer (\S+$)")


def merge_metadata(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Shallow merge; a null value deletes the key (GoTrue's UpdateUserMetaData)."""
    merged = dict(current)
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def metadata_columns(
    user: sqlite3.Row,
    *,
    user_metadata: dict[str, Any] | None = None,
    app_metadata: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The metadata columns of ``user`` an update changes, merged and serialised."""
    columns: dict[str, str] = {}
    for column, update in (("user_metadata", user_metadata), ("app_metadata", app_metadata)):
        if update is not None:
            columns[column] = json.dumps(merge_metadata(json.loads(user[column]), update))
    return columns


@dataclass(frozen=True)
class Principal:
    user: sqlite3.Row
    claims: dict[str, Any]
    session_id: str | None


class Core:
    def __init__(self, settings: Settings, db: Database, keyring: KeyRing) -> None:
        self.settings = settings
        self.db = db
        self.keyring = keyring

    # -- passwords -------------------------------------------------------------------------

    def hash_password(self, password: str) -> str:
        return bcrypt.hashpw(
            password.encode(), bcrypt.gensalt(rounds=self.settings.bcrypt_cost)
        ).decode()

    def random_password_hash(self) -> str:
        return self.hash_password(secrets.token_urlsafe(48)[:64])

    @staticmethod
    def password_matches(password: str, hashed: str) -> bool:
        raw = password.encode()
        if not hashed or len(raw) > MAX_PASSWORD_BYTES:
            return False
        try:
            return bcrypt.checkpw(raw, hashed.encode())
        except ValueError:
            return False

    # -- rows ------------------------------------------------------------------------------

    @staticmethod
    def user_by_id(conn: sqlite3.Connection, uid: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM users WHERE id = ?", (uid,)
        ).fetchone()
        return row

    @staticmethod
    def user_by_email(conn: sqlite3.Connection, email: str, aud: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM users WHERE email = ? AND aud = ? AND email != '' "
            "ORDER BY created_at LIMIT 1",
            (email.lower(), aud),
        ).fetchone()
        return row

    @staticmethod
    def user_by_phone(conn: sqlite3.Connection, phone: str, aud: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM users WHERE phone = ? AND aud = ? AND phone != '' LIMIT 1",
            (phone, aud),
        ).fetchone()
        return row

    def user_out(self, conn: sqlite3.Connection, user: sqlite3.Row) -> dict[str, Any]:
        identities = conn.execute(
            "SELECT * FROM identities WHERE user_id = ? ORDER BY created_at", (user["id"],)
        ).fetchall()
        out = user_json(user, identities)
        factors = conn.execute(
            "SELECT * FROM mfa_factors WHERE user_id = ? ORDER BY created_at", (user["id"],)
        ).fetchall()
        if factors:  # GoTrue omits an empty factors list
            out["factors"] = [factor_json(f) for f in factors]
        return out

    def reload(self, conn: sqlite3.Connection, uid: str) -> sqlite3.Row:
        row = self.user_by_id(conn, uid)
        if row is None:
            raise ApiError(404, "user_not_found", "User not found")
        return row

    def create_user(
        self,
        conn: sqlite3.Connection,
        *,
        email: str = "",
        phone: str = "",
        password_hash: str = "",
        aud: str,
        role: str | None = None,
        uid: str | None = None,
        user_metadata: dict[str, Any] | None = None,
        app_metadata: dict[str, Any] | None = None,
        email_confirmed: bool = False,
        phone_confirmed: bool = False,
        is_anonymous: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> sqlite3.Row:
        now = time.time()
        uid = uid or str(uuid.uuid4())
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (uid,)).fetchone():
            raise ApiError(422, "user_already_exists", "User already registered")
        provider = "email" if email else ("phone" if phone else None)
        app_meta: dict[str, Any] = {}
        if provider:
            app_meta = {"provider": provider, "providers": [provider]}
        app_meta = merge_metadata(app_meta, app_metadata or {})
        user_meta = {k: v for k, v in (user_metadata or {}).items() if v is not None}
        columns: dict[str, Any] = {
            "id": uid,
            "aud": aud,
            "role": role or self.settings.jwt_default_group_name,
            "email": email,
            "phone": phone,
            "encrypted_password": password_hash,
            "email_confirmed_at": now if email and email_confirmed else None,
            "phone_confirmed_at": now if phone and phone_confirmed else None,
            "app_metadata": json.dumps(app_meta),
            "user_metadata": json.dumps(user_meta),
            "is_anonymous": int(is_anonymous),
            "created_at": now,
            "updated_at": now,
            **(extra or {}),
        }
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        conn.execute(f"INSERT INTO users ({names}) VALUES ({marks})", tuple(columns.values()))
        if provider:
            data: dict[str, Any] = {
                "sub": uid,
                "email_verified": bool(email and email_confirmed),
                "phone_verified": bool(phone and phone_confirmed),
            }
            if email:
                data["email"] = email
            else:
                data["phone"] = phone
            data = {**user_meta, **data}
            conn.execute(
                "INSERT INTO identities (identity_id, provider_id, user_id, provider, "
                "identity_data, email, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (str(uuid.uuid4()), uid, uid, provider, json.dumps(data), email, now, now),
            )
        return self.reload(conn, uid)

    def update_user_columns(
        self, conn: sqlite3.Connection, uid: str, columns: dict[str, Any]
    ) -> sqlite3.Row:
        columns = {**columns, "updated_at": time.time()}
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(f"UPDATE users SET {assignments} WHERE id = ?", (*columns.values(), uid))
        return self.reload(conn, uid)

    def sync_email_identity(self, conn: sqlite3.Connection, user: sqlite3.Row) -> None:
        """Keep the email identity in line with the user's email and confirmation."""
        if not user["email"]:
            return
        now = time.time()
        row = conn.execute(
            "SELECT * FROM identities WHERE user_id = ? AND provider = 'email'", (user["id"],)
        ).fetchone()
        verified = user["email_confirmed_at"] is not None
        if row is None:
            data = {
                "sub": user["id"],
                "email": user["email"],
                "email_verified": verified,
                "phone_verified": False,
            }
            conn.execute(
                "INSERT INTO identities (identity_id, provider_id, user_id, provider, "
                "identity_data, email, created_at, updated_at) "
                "VALUES (?, ?, ?, 'email', ?, ?, ?, ?)",
                (
                    str(uuid.uuid4()),
                    user["id"],
                    user["id"],
                    json.dumps(data),
                    user["email"],
                    now,
                    now,
                ),
            )
            app_meta = json.loads(user["app_metadata"])
            providers = list(app_meta.get("providers") or [])
            if "email" not in providers:
                app_meta["providers"] = [*providers, "email"]
                app_meta.setdefault("provider", "email")
                self.update_user_columns(conn, user["id"], {"app_metadata": json.dumps(app_meta)})
            return
        data = json.loads(row["identity_data"])
        data.update({"email": user["email"], "email_verified": verified})
        conn.execute(
            "UPDATE identities SET identity_data = ?, email = ?, updated_at = ? "
            "WHERE identity_id = ?",
            (json.dumps(data), user["email"], now, row["identity_id"]),
        )

    # -- sessions --------------------------------------------------------------------------

    def issue_session(
        self, conn: sqlite3.Connection, user: sqlite3.Row, method: str
    ) -> dict[str, Any]:
        now = time.time()
        session_id = str(uuid.uuid4())
        amr = [{"method": method, "timestamp": int(now)}]
        conn.execute(
            "INSERT INTO sessions (id, user_id, aal, amr, created_at, updated_at) "
            "VALUES (?, ?, 'aal1', ?, ?, ?)",
            (session_id, user["id"], json.dumps(amr), now, now),
        )
        token = self.insert_refresh_token(conn, user["id"], session_id, parent=None)
        conn.execute("UPDATE users SET last_sign_in_at = ? WHERE id = ?", (now, user["id"]))
        conn.execute(
            "UPDATE identities SET last_sign_in_at = ? WHERE user_id = ?", (now, user["id"])
        )
        session = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return self.session_json(conn, self.reload(conn, user["id"]), session, token)

    @staticmethod
    def insert_refresh_token(
        conn: sqlite3.Connection, uid: str, session_id: str, *, parent: str | None
    ) -> str:
        now = time.time()
        while True:
            token = new_refresh_token()
            try:
                conn.execute(
                    "INSERT INTO refresh_tokens (token, user_id, session_id, parent, revoked, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
                    (token, uid, session_id, parent, now, now),
                )
            except sqlite3.IntegrityError:
                continue  # a 36^12 collision; just draw again
            return token

    def session_json(
        self,
        conn: sqlite3.Connection,
        user: sqlite3.Row,
        session: sqlite3.Row,
        refresh_token: str,
    ) -> dict[str, Any]:
        now = int(time.time())
        exp = self.settings.jwt_exp
        claims: dict[str, Any] = {}
        if self.settings.jwt_issuer:
            claims["iss"] = self.settings.jwt_issuer
        claims.update(
            {
                "sub": user["id"],
                "aud": user["aud"],
                "exp": now + exp,
                "iat": now,
                "email": user["email"],
                "phone": user["phone"],
                "app_metadata": json.loads(user["app_metadata"]),
                "user_metadata": json.loads(user["user_metadata"]),
                "role": user["role"],
                "aal": session["aal"],
                "amr": json.loads(session["amr"]),
                "session_id": session["id"],
                "is_anonymous": bool(user["is_anonymous"]),
            }
        )
        access = sign_access_token(self.settings, self.keyring.current, claims)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": exp,
            "expires_at": now + exp,
            "refresh_token": refresh_token,
            "user": self.user_out(conn, user),
        }

    @staticmethod
    def delete_sessions(
        conn: sqlite3.Connection, uid: str, *, keep: str | None = None, only: str | None = None
    ) -> None:
        args: tuple[str, ...]
        if only is not None:
            where, args = "id = ? AND user_id = ?", (only, uid)
        elif keep is not None:
            where, args = "user_id = ? AND id != ?", (uid, keep)
        else:
            where, args = "user_id = ?", (uid,)
        conn.execute(
            "DELETE FROM refresh_tokens WHERE session_id IN "
            f"(SELECT id FROM sessions WHERE {where})",
            args,
        )
        conn.execute(f"DELETE FROM sessions WHERE {where}", args)

    # -- authentication --------------------------------------------------------------------

    def bearer_claims(self, authorization: str | None) -> dict[str, Any]:
        match = _BEARER_RE.match(authorization or "")
        if match is None:
            raise ApiError(401, "no_authorization", "This endpoint requires a valid Bearer token")
        return verify_jwt(self.settings, self.keyring.current, match.group(1))

    def authenticate(self, conn: sqlite3.Connection, authorization: str | None) -> Principal:
        """GoTrue's requireAuthentication plus the user/session loading behind it."""
        claims = self.bearer_claims(authorization)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ApiError(403, "bad_jwt", "invalid claim: missing sub claim")
        uid = parse_uuid(sub)
        if uid is None:
            raise ApiError(400, "bad_jwt", "invalid claim: sub claim must be a UUID")
        user = self.user_by_id(conn, uid)
        if user is None:
            raise ApiError(403, "user_not_found", "User from sub claim in JWT does not exist")
        session_id = session_uuid(claims)
        if session_id is not None:
            found = conn.execute(
                "SELECT 1 FROM sessions WHERE id = ? AND user_id = ?", (session_id, uid)
            ).fetchone()
            if found is None:
                raise ApiError(
                    403,
                    "session_not_found",
                    "Session from session_id claim in JWT does not exist",
                )
        if is_banned(user):
            raise ApiError(403, "user_banned", "User is banned")
        return Principal(user=user, claims=claims, session_id=session_id)

    def require_admin(self, conn: sqlite3.Connection, authorization: str | None) -> None:
        claims = self.bearer_claims(authorization)
        session_id = session_uuid(claims)
        if session_id is not None:
            found = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if found is None:
                raise ApiError(
                    403,
                    "session_not_found",
                    "Session from session_id claim in JWT does not exist",
                )
        role = claims.get("role")
        if not isinstance(role, str) or role not in self.settings.jwt_admin_roles:
            raise ApiError(403, "not_admin", "User not allowed")
