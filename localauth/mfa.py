"""MFA: ``/factors`` (enroll, challenge, verify, unenroll) and the admin factor endpoints.

TOTP as GoTrue does it: a 20-byte base32 secret, SHA-1, 6 digits, 30 s period, one step of
skew (pyotp computes the codes; any RFC 6238 app agrees). The enrollment answer carries the
``otpauth://`` URI and its QR code as raw SVG (the SDK turns it into a data URI). A verified
challenge moves the session to ``aal2`` with ``totp`` added in front of ``amr``, and ends the
user's other ``aal1`` sessions. Phone and WebAuthn factors are disabled, as in GoTrue's defaults.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
import uuid
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pyotp
import segno

from localauth.core import Core, Principal
from localauth.errors import ApiError
from localauth.models import factor_json
from localauth.params import Body
from localauth.validation import parse_uuid

__all__ = ["Mfa", "factor_json", "user_factors"]

_QR_SCALE = 3


def user_factors(conn: sqlite3.Connection, uid: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM mfa_factors WHERE user_id = ? ORDER BY created_at", (uid,)
    ).fetchall()
    return [factor_json(r) for r in rows]


def _svg(uri: str) -> str:
    buf = io.BytesIO()
    segno.make(uri, error="h").save(buf, kind="svg", scale=_QR_SCALE, xmldecl=False)
    return buf.getvalue().decode()


def _otpauth_uri(issuer: str, account: str, secret: str) -> str:
    """The key URI in pquerna/otp's form (GoTrue's library): sorted query, SHA1, 6, 30 s."""
    query = urlencode(
        {"algorithm": "SHA1", "digits": "6", "issuer": issuer, "period": "30", "secret": secret}
    )
    return f"otpauth://totp/{quote(f'{issuer}:{account}', safe=':@')}?{query}"


def _not_found() -> ApiError:
    return ApiError(404, "mfa_factor_not_found", "Factor not found")


class Mfa:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings

    def _factor(self, conn: sqlite3.Connection, uid: str, raw_id: str) -> sqlite3.Row:
        fid = parse_uuid(raw_id)
        if fid is None:
            raise ApiError(404, "validation_failed", "factor_id must be an UUID")
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM mfa_factors WHERE id = ? AND user_id = ?", (fid, uid)
        ).fetchone()
        if row is None:
            raise _not_found()
        return row

    @staticmethod
    def _aal(conn: sqlite3.Connection, principal: Principal) -> str:
        if principal.session_id is None:
            return "aal1"
        row = conn.execute(
            "SELECT aal FROM sessions WHERE id = ?", (principal.session_id,)
        ).fetchone()
        return str(row["aal"]) if row is not None else "aal1"

    # -- POST /factors ---------------------------------------------------------------------

    def enroll(self, authorization: str | None, body: Body) -> dict[str, Any]:
        friendly_name = body.text("friendly_name") or ""
        factor_type = body.text("factor_type") or ""
        issuer = body.text("issuer") or ""
        body.text("phone")
        with self.core.db.write() as conn:
            principal = self.core.authenticate(conn, authorization)
            if principal.session_id is None:
                raise ApiError(
                    500,
                    "unexpected_failure",
                    "A valid session and a registered user are required to enroll a factor",
                )
            if factor_type == "phone":
                raise ApiError(
                    422, "mfa_phone_enroll_not_enabled", "MFA enroll is disabled for Phone"
                )
            if factor_type == "webauthn":
                raise ApiError(
                    422, "mfa_webauthn_enroll_not_enabled", "MFA enroll is disabled for WebAuthn"
                )
            if factor_type != "totp":
                raise ApiError(
                    400, "validation_failed", "factor_type needs to be totp, phone, or webauthn"
                )
            user = principal.user
            uid = user["id"]
            factors = conn.execute("SELECT * FROM mfa_factors WHERE user_id = ?", (uid,)).fetchall()
            if any(f["friendly_name"] == friendly_name for f in factors):
                raise ApiError(
                    422,
                    "mfa_factor_name_conflict",
                    f'A factor with the friendly name "{friendly_name}" for this user '
                    "already exists",
                )
            verified = [f for f in factors if f["status"] == "verified"]
            if len(factors) >= self.settings.mfa_max_enrolled_factors:
                raise ApiError(
                    422,
                    "too_many_enrolled_mfa_factors",
                    "Maximum number of verified factors reached, unenroll to continue",
                )
            if verified and self._aal(conn, principal) != "aal2":
                raise ApiError(403, "insufficient_aal", "AAL2 required to enroll a new factor")
            issuer = issuer or (urlsplit(self.settings.site_url).netloc or "localhost")
            secret = pyotp.random_base32()
            uri = _otpauth_uri(issuer, user["email"] or user["phone"], secret)
            now = time.time()
            fid = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO mfa_factors (id, user_id, friendly_name, factor_type, status, "
                "secret, created_at, updated_at) VALUES (?, ?, ?, 'totp', 'unverified', ?, ?, ?)",
                (fid, uid, friendly_name, secret, now, now),
            )
        return {
            "id": fid,
            "type": "totp",
            "friendly_name": friendly_name,
            "totp": {"qr_code": _svg(uri), "secret": secret, "uri": uri},
        }

    # -- POST /factors/{id}/challenge ------------------------------------------------------

    def challenge(
        self, authorization: str | None, raw_id: str, body: Body, ip: str
    ) -> dict[str, Any]:
        body.text("channel")
        with self.core.db.write() as conn:
            principal = self.core.authenticate(conn, authorization)
            factor = self._factor(conn, principal.user["id"], raw_id)
            now = time.time()
            cid = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO mfa_challenges (id, factor_id, ip_address, created_at) "
                "VALUES (?, ?, ?, ?)",
                (cid, factor["id"], ip, now),
            )
            conn.execute(
                "UPDATE mfa_factors SET last_challenged_at = ? WHERE id = ?", (now, factor["id"])
            )
        expires = int(now + self.settings.mfa_challenge_expiry_duration)
        return {"id": cid, "type": factor["factor_type"], "expires_at": expires}

    # -- POST /factors/{id}/verify ---------------------------------------------------------

    def verify(self, authorization: str | None, raw_id: str, body: Body, ip: str) -> dict[str, Any]:
        code = body.text("code") or ""
        challenge_id = body.text("challenge_id") or ""
        body.text("factor_id")
        with self.core.db.write() as conn:
            principal = self.core.authenticate(conn, authorization)
            uid = principal.user["id"]
            factor = self._factor(conn, uid, raw_id)
            if not code:
                raise ApiError(400, "validation_failed", "Code needs to be non-empty")
            cid = parse_uuid(challenge_id)
            if cid is None:
                raise ApiError(
                    400,
                    "bad_json",
                    "Could not parse request body as JSON: invalid challenge_id, expected an UUID",
                )
            challenge = conn.execute(
                "SELECT * FROM mfa_challenges WHERE id = ? AND factor_id = ?", (cid, factor["id"])
            ).fetchone()
            if challenge is None:
                raise ApiError(
                    422,
                    "mfa_factor_not_found",
                    "MFA factor with the provided challenge ID not found",
                )
            if challenge["verified_at"] is not None or challenge["ip_address"] != ip:
                raise ApiError(
                    422, "mfa_ip_address_mismatch", "Challenge and verify IP addresses mismatch."
                )
            now = time.time()
            if now > challenge["created_at"] + self.settings.mfa_challenge_expiry_duration:
                conn.execute("DELETE FROM mfa_challenges WHERE id = ?", (cid,))
                raise ApiError(
                    422,
                    "mfa_challenge_expired",
                    f"MFA challenge {cid} has expired, verify against another challenge or "
                    "create a new challenge.",
                )
            if not pyotp.TOTP(factor["secret"]).verify(code, valid_window=1):
                raise ApiError(422, "mfa_verification_failed", "Invalid TOTP code entered")
            conn.execute("UPDATE mfa_challenges SET verified_at = ? WHERE id = ?", (now, cid))
            if factor["status"] != "verified":
                conn.execute(
                    "UPDATE mfa_factors SET status = 'verified', updated_at = ? WHERE id = ?",
                    (now, factor["id"]),
                )
            session_id = principal.session_id
            session = (
                conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
                if session_id is not None
                else None
            )
            if session is None:
                raise ApiError(403, "session_not_found", "Session not found")
            amr = [{"method": "totp", "timestamp": int(now)}]
            amr += [e for e in json.loads(session["amr"]) if e.get("method") != "totp"]
            conn.execute(
                "UPDATE sessions SET aal = 'aal2', amr = ?, updated_at = ? WHERE id = ?",
                (json.dumps(amr), now, session["id"]),
            )
            conn.execute(
                "INSERT OR REPLACE INTO session_factors (session_id, factor_id) VALUES (?, ?)",
                (session["id"], factor["id"]),
            )
            # GoTrue's InvalidateSessionsWithAALLessThan(aal2) and DeleteUnverifiedFactors
            others = conn.execute(
                "SELECT id FROM sessions WHERE user_id = ? AND aal = 'aal1' AND id != ?",
                (uid, session["id"]),
            ).fetchall()
            for other in others:
                self.core.delete_sessions(conn, uid, only=other["id"])
            conn.execute(
                "DELETE FROM mfa_factors WHERE user_id = ? AND status = 'unverified' "
                "AND factor_type = ?",
                (uid, factor["factor_type"]),
            )
            # GoTrue swaps the session's refresh token: the active one is revoked, a child issued
            active = conn.execute(
                "SELECT token FROM refresh_tokens WHERE session_id = ? AND revoked = 0 "
                "ORDER BY id DESC LIMIT 1",
                (session["id"],),
            ).fetchone()
            conn.execute(
                "UPDATE refresh_tokens SET revoked = 1, updated_at = ? "
                "WHERE session_id = ? AND revoked = 0",
                (now, session["id"]),
            )
            parent = active["token"] if active is not None else None
            refresh = self.core.insert_refresh_token(conn, uid, session["id"], parent=parent)
            session = conn.execute(
                "SELECT * FROM sessions WHERE id = ?", (session["id"],)
            ).fetchone()
            user = self.core.reload(conn, uid)
            return self.core.session_json(conn, user, session, refresh)

    # -- DELETE /factors/{id} --------------------------------------------------------------

    def unenroll(self, authorization: str | None, raw_id: str) -> dict[str, Any]:
        with self.core.db.write() as conn:
            principal = self.core.authenticate(conn, authorization)
            factor = self._factor(conn, principal.user["id"], raw_id)
            if factor["status"] == "verified" and self._aal(conn, principal) != "aal2":
                raise ApiError(422, "insufficient_aal", "AAL2 required to unenroll verified factor")
            self._delete(conn, factor)
        return {"id": factor["id"]}

    @staticmethod
    def _delete(conn: sqlite3.Connection, factor: sqlite3.Row) -> None:
        """Remove the factor; sessions it raised to aal2 fall back to aal1."""
        conn.execute("DELETE FROM mfa_challenges WHERE factor_id = ?", (factor["id"],))
        conn.execute("DELETE FROM mfa_factors WHERE id = ?", (factor["id"],))
        conn.execute(
            "UPDATE sessions SET aal = 'aal1', updated_at = ? WHERE id IN "
            "(SELECT session_id FROM session_factors WHERE factor_id = ?)",
            (time.time(), factor["id"]),
        )
        conn.execute("DELETE FROM session_factors WHERE factor_id = ?", (factor["id"],))

    # -- admin -----------------------------------------------------------------------------

    def _admin_user(self, conn: sqlite3.Connection, authorization: str | None, raw: str) -> str:
        self.core.require_admin(conn, authorization)
        uid = parse_uuid(raw)
        if uid is None or self.core.user_by_id(conn, uid) is None:
            raise ApiError(404, "user_not_found", "User not found")
        return uid

    def admin_list(self, authorization: str | None, raw_uid: str) -> list[dict[str, Any]]:
        with self.core.db.read() as conn:
            uid = self._admin_user(conn, authorization, raw_uid)
            return user_factors(conn, uid)

    def admin_delete(self, authorization: str | None, raw_uid: str, raw_fid: str) -> dict[str, Any]:
        with self.core.db.write() as conn:
            uid = self._admin_user(conn, authorization, raw_uid)
            factor = self._factor(conn, uid, raw_fid)
            self._delete(conn, factor)
            return factor_json(factor)
