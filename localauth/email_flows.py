"""Everything that sends an email: confirmation, invite, magic link / email OTP, recovery,
email change and reauthentication, plus the endpoints that only send (``/otp``,
``/magiclink``, ``/recover``, ``/resend``, ``/reauthenticate``, ``/invite``). All blocking.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import time
from typing import Any

from localauth.core import Core
from localauth.errors import ApiError
from localauth.mailbox import Mail, Mailbox
from localauth.onetime import (
    CONFIRMATION,
    EMAIL_CHANGE_CURRENT,
    EMAIL_CHANGE_NEW,
    REAUTHENTICATION,
    RECOVERY,
    OneTime,
    Pkce,
)
from localauth.params import Body
from localauth.validation import validate_email, validate_phone

__all__ = ["EmailFlows", "allowed_redirect"]

_SUBJECTS = {
    "signup": "Confirm Your Email",
    "invite": "You have been invited",
    "magiclink": "Your Magic Link",
    "recovery": "Reset Your Password",
    "email_change": "Confirm Email Change",
    "reauthentication": "Confirm reauthentication",
    "sms": "Your code",
}
# PKCE authentication methods, as GoTrue's models.ParseAuthenticationMethod names them
_FLOW_METHODS = {
    "signup": "email/signup",
    "invite": "invite",
    "magiclink": "magiclink",
    "recovery": "recovery",
    "email_change": "email_change",
}


def _invalid(message: str) -> ApiError:
    return ApiError(400, "validation_failed", message)


def allowed_redirect(settings: Any, requested: str) -> str:
    """GoTrue's redirect check: the site URL, or a match of GOTRUE_URI_ALLOW_LIST."""
    site: str = settings.site_url
    if not requested:
        return site
    allowed = requested.startswith(site) or any(
        fnmatch.fnmatch(requested, pattern) for pattern in settings.uri_allow_list
    )
    return requested if allowed else site


class EmailFlows:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings
        self.tokens = OneTime(core.settings)
        self.mailbox = Mailbox()

    # -- senders (inside the caller's write transaction) -----------------------------------

    def _send(
        self,
        conn: sqlite3.Connection,
        user: sqlite3.Row,
        *,
        token_type: str,
        kind: str,
        address: str,
        redirect_to: str,
        pkce: Pkce | None,
        with_link: bool = True,
    ) -> None:
        otp, stored = self.tokens.issue(
            conn, user["id"], token_type, address, pkce=pkce is not None
        )
        if pkce is not None and kind in _FLOW_METHODS:
            self.tokens.start_flow(conn, user["id"], pkce, _FLOW_METHODS[kind])
        redirect = allowed_redirect(self.settings, redirect_to)
        link = self.tokens.link(stored, kind, redirect) if with_link else ""
        mail = Mail(address, kind, _SUBJECTS[kind], link, otp, stored, redirect)
        self.mailbox.send(conn, mail)

    def send_confirmation(
        self,
        conn: sqlite3.Connection,
        user: sqlite3.Row,
        redirect_to: str,
        pkce: Pkce | None,
        *,
        invite: bool = False,
    ) -> sqlite3.Row:
        kind = "invite" if invite else "signup"
        self._send(
            conn,
            user,
            token_type=CONFIRMATION,
            kind=kind,
            address=user["email"],
            redirect_to=redirect_to,
            pkce=pkce,
        )
        column = "invited_at" if invite else "confirmation_sent_at"
        return self.core.update_user_columns(conn, user["id"], {column: time.time()})

    def send_recovery(
        self,
        conn: sqlite3.Connection,
        user: sqlite3.Row,
        redirect_to: str,
        pkce: Pkce | None,
        *,
        magiclink: bool = False,
    ) -> sqlite3.Row:
        self._send(
            conn,
            user,
            token_type=RECOVERY,
            kind="magiclink" if magiclink else "recovery",
            address=user["email"],
            redirect_to=redirect_to,
            pkce=pkce,
        )
        return self.core.update_user_columns(conn, user["id"], {"recovery_sent_at": time.time()})

    def send_email_change(
        self,
        conn: sqlite3.Connection,
        user: sqlite3.Row,
        new_email: str,
        redirect_to: str,
        pkce: Pkce | None,
    ) -> sqlite3.Row:
        """Secure email change (the default) mails both addresses; each has its own token."""
        self.tokens.consume(conn, user["id"], EMAIL_CHANGE_CURRENT, EMAIL_CHANGE_NEW)
        common: dict[str, Any] = {"kind": "email_change", "redirect_to": redirect_to}
        if self.settings.mailer_secure_email_change_enabled and user["email"]:
            self._send(
                conn,
                user,
                token_type=EMAIL_CHANGE_CURRENT,
                address=user["email"],
                pkce=pkce,
                **common,
            )
            pkce = None  # one flow state serves both links
        self._send(conn, user, token_type=EMAIL_CHANGE_NEW, address=new_email, pkce=pkce, **common)
        return self.core.update_user_columns(
            conn, user["id"], {"new_email": new_email, "email_change_sent_at": time.time()}
        )

    def send_reauthentication(self, conn: sqlite3.Connection, user: sqlite3.Row) -> None:
        self._send(
            conn,
            user,
            token_type=REAUTHENTICATION,
            kind="reauthentication",
            address=user["email"],
            redirect_to="",
            pkce=None,
            with_link=False,
        )

    # -- POST /otp and /magiclink ----------------------------------------------------------

    def otp(self, body: Body, aud: str, redirect_to: str) -> dict[str, Any]:
        s = self.settings
        email = body.text("email") or ""
        phone = body.text("phone") or ""
        data = body.mapping("data") or {}
        create = body.flag("create_user")
        create_user = True if create is None else create
        channel = body.text("channel") or ""
        if email and phone:
            raise _invalid("Only an email address or phone number should be provided")
        if email and channel:
            raise _invalid("Channel should only be specified with Phone OTP")
        pkce = Pkce.from_body(body)
        if phone and channel not in {"", "sms", "whatsapp"}:
            raise _invalid("Invalid channel, supported values are 'sms' or 'whatsapp'")
        if phone:
            if not s.external_phone_enabled:
                raise ApiError(400, "phone_provider_disabled", "Unsupported phone provider")
            return self._phone_otp(validate_phone(phone), create_user, data, aud)
        if not email:
            raise _invalid("One of email or phone must be set")
        if not s.external_email_enabled:
            raise ApiError(400, "email_provider_disabled", "Email logins are disabled")
        email = validate_email(email)
        random_hash = self.core.random_password_hash()
        with self.core.db.write() as conn:
            user = self.core.user_by_email(conn, email, aud)
            if user is None:
                if not create_user:
                    raise ApiError(422, "otp_disabled", "Signups not allowed for otp")
                if s.disable_signup:
                    raise ApiError(422, "signup_disabled", "Signups not allowed for this instance")
                user = self.core.create_user(
                    conn, email=email, password_hash=random_hash, aud=aud, user_metadata=data
                )
                if s.mailer_autoconfirm:
                    user = self.core.update_user_columns(
                        conn, user["id"], {"email_confirmed_at": time.time()}
                    )
                    self.core.sync_email_identity(conn, user)
            if user["email_confirmed_at"] is None:
                self.tokens.check_frequency(conn, user["id"], CONFIRMATION)
                self.send_confirmation(conn, user, redirect_to, pkce)
            else:
                self.tokens.check_frequency(conn, user["id"], RECOVERY)
                self.send_recovery(conn, user, redirect_to, pkce, magiclink=True)
        return {}

    def _phone_otp(
        self, phone: str, create_user: bool, data: dict[str, Any], aud: str
    ) -> dict[str, Any]:
        with self.core.db.write() as conn:
            user = self.core.user_by_phone(conn, phone, aud)
            if user is None:
                if not create_user:
                    raise ApiError(422, "otp_disabled", "Signups not allowed for otp")
                if self.settings.disable_signup:
                    raise ApiError(422, "signup_disabled", "Signups not allowed for this instance")
                user = self.core.create_user(conn, phone=phone, aud=aud, user_metadata=data)
            self.tokens.check_frequency(conn, user["id"], CONFIRMATION)
            self.send_sms_confirmation(conn, user)
        return {}

    def send_sms_confirmation(self, conn: sqlite3.Connection, user: sqlite3.Row) -> sqlite3.Row:
        """No SMS provider here: the code goes to the mailbox, addressed to the number."""
        self._send(
            conn,
            user,
            token_type=CONFIRMATION,
            kind="sms",
            address=user["phone"],
            redirect_to="",
            pkce=None,
            with_link=False,
        )
        return self.core.update_user_columns(
            conn, user["id"], {"confirmation_sent_at": time.time()}
        )

    # -- POST /recover ---------------------------------------------------------------------

    def recover(self, body: Body, aud: str, redirect_to: str) -> dict[str, Any]:
        email = body.text("email") or ""
        pkce = Pkce.from_body(body)
        if not email:
            raise _invalid("Password recovery requires an email")
        email = validate_email(email)
        with self.core.db.write() as conn:
            user = self.core.user_by_email(conn, email, aud)
            if user is None:
                return {}  # no enumeration
            self.tokens.check_frequency(conn, user["id"], RECOVERY)
            self.send_recovery(conn, user, redirect_to, pkce)
        return {}

    # -- POST /resend ----------------------------------------------------------------------

    def resend(self, body: Body, aud: str, redirect_to: str) -> dict[str, Any]:
        s = self.settings
        kind = body.text("type") or ""
        email = body.text("email") or ""
        phone = body.text("phone") or ""
        if kind not in {"signup", "email_change", "sms", "phone_change"}:
            raise _invalid("Missing one of these types: signup, email_change, sms, phone_change")
        if not email and kind == "signup":
            raise _invalid("Type provided requires an email address")
        if not phone and kind == "sms":
            raise _invalid("Type provided requires a phone number")
        if email and phone:
            raise _invalid("Only an email address or phone number should be provided.")
        if email:
            if not s.external_email_enabled:
                raise ApiError(400, "email_provider_disabled", "Email logins are disabled")
            email = validate_email(email)
        elif phone:
            if not s.external_phone_enabled:
                raise ApiError(400, "phone_provider_disabled", "Phone logins are disabled")
            phone = validate_phone(phone)
        else:
            raise _invalid("Missing email address or phone number")
        if phone:
            if kind != "sms":
                return {}  # phone change is not supported by localauth
            return self._phone_otp(phone, False, {}, aud)
        with self.core.db.write() as conn:
            user = self.core.user_by_email(conn, email, aud)
            if user is None:
                return {}
            if kind == "signup" and user["email_confirmed_at"] is None:
                self.tokens.check_frequency(conn, user["id"], CONFIRMATION)
                self.send_confirmation(conn, user, redirect_to, None)
            elif kind == "email_change" and user["new_email"]:
                self.tokens.check_frequency(conn, user["id"], EMAIL_CHANGE_NEW)
                self.send_email_change(conn, user, user["new_email"], redirect_to, None)
        return {}

    # -- GET /reauthenticate ---------------------------------------------------------------

    def reauthenticate(self, authorization: str | None) -> dict[str, Any]:
        with self.core.db.write() as conn:
            user = self.core.authenticate(conn, authorization).user
            if not user["email"] and not user["phone"]:
                raise ApiError(
                    422,
                    "validation_failed",
                    "Reauthentication requires the user to have an email or a phone number",
                )
            if not user["email"]:
                raise ApiError(400, "validation_failed", "Reauthentication by SMS is not supported")
            if user["email_confirmed_at"] is None:
                raise _invalid("Please verify your email first.")
            row = conn.execute(
                "SELECT created_at FROM one_time_tokens WHERE user_id = ? AND token_type = ?",
                (user["id"], REAUTHENTICATION),
            ).fetchone()
            limit = self.settings.smtp_max_frequency
            if row is not None and time.time() - row["created_at"] < limit:
                raise ApiError(
                    429,
                    "over_email_send_rate_limit",
                    f"For security purposes, you can only request this once every "
                    f"{int(limit)} seconds",
                )
            self.send_reauthentication(conn, user)
        return {}

    # -- POST /invite (admin) --------------------------------------------------------------

    def invite(
        self, authorization: str | None, body: Body, aud: str, redirect_to: str
    ) -> dict[str, Any]:
        with self.core.db.read() as conn:
            self.core.require_admin(conn, authorization)
        email = validate_email(body.text("email") or "")
        data = body.mapping("data") or {}
        with self.core.db.write() as conn:
            user = self.core.user_by_email(conn, email, aud)
            if user is not None and user["email_confirmed_at"] is not None:
                raise ApiError(
                    422,
                    "email_exists",
                    "A user with this email address has already been registered",
                )
            if user is None:
                user = self.core.create_user(conn, email=email, aud=aud, user_metadata=data)
            else:
                self.tokens.check_frequency(conn, user["id"], CONFIRMATION)
            user = self.send_confirmation(conn, user, redirect_to, None, invite=True)
            return self.core.user_out(conn, user)
