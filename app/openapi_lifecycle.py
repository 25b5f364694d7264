"""The OpenAPI entries of the account-lifecycle routes (``docs/account-lifecycle.md``), kept
apart from ``app.openapi`` so each can change without touching the other."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app import lifecycle_schemas as s
from app.openapi import _BODY_ERRORS, Operation
from app.openapi_schemas import ref

ACCEPTED: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}, "detail": {"type": "string"}},
}
USER_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["user"],
    "properties": {"user": ref("User"), "status": {"type": "string"}},
}
EMAIL_CHANGE: dict[str, Any] = {
    "type": "object",
    "required": ["status", "session"],
    "properties": {
        "status": {"type": "string", "enum": ["pending", "changed"]},
        "session": {"oneOf": [ref("Session"), {"type": "null"}]},
    },
}
OAUTH_START: dict[str, Any] = {
    "type": "object",
    "required": ["url", "flow_id", "expires_in"],
    "properties": {
        "url": {"type": "string"},
        "flow_id": {"type": "string"},
        "expires_in": {"type": "integer"},
    },
}
FACTOR: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "friendly_name": {"type": ["string", "null"]},
        "factor_type": {"type": ["string", "null"]},
        "status": {"type": ["string", "null"]},
        "created_at": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"]},
    },
}
FACTORS: dict[str, Any] = {
    "type": "object",
    "required": ["factors"],
    "properties": {"factors": {"type": "array", "items": ref("Factor")}},
}
ENROLLMENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "totp"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string", "const": "totp"},
        "friendly_name": {"type": "string"},
        "totp": {
            "type": "object",
            "required": ["secret", "uri", "qr_code"],
            "properties": {
                "secret": {"type": "string"},
                "uri": {"type": "string"},
                "qr_code": {"type": "string", "description": "an SVG data: URI"},
            },
        },
    },
}
CHALLENGE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "expires_at"],
    "properties": {"id": {"type": "string"}, "expires_at": {"type": "integer"}},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Accepted": ACCEPTED,
    "UserAnswer": USER_ANSWER,
    "EmailChange": EMAIL_CHANGE,
    "OAuthStart": OAUTH_START,
    "Factor": FACTOR,
    "Factors": FACTORS,
    "Enrollment": ENROLLMENT,
    "Challenge": CHALLENGE,
}
MODELS: tuple[type[BaseModel], ...] = s.MODELS
_SIGNED_IN = (401, 403)

OPERATIONS: dict[str, Operation] = {
    "auth:password_recover": Operation(
        "Mail a password recovery code and link (202 for every address)",
        "account",
        ok_status=202,
        ok_schema=ref("Accepted"),
        body=s.EmailBody,
        problems=_BODY_ERRORS,
    ),
    "auth:password_reset": Operation(
        "Set a new password with the mailed code or link; ends every other session",
        "account",
        ok_schema=ref("Session"),
        body=s.PasswordResetBody,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:email_confirm_resend": Operation(
        "Mail the address confirmation again (202 for every address)",
        "account",
        ok_status=202,
        ok_schema=ref("Accepted"),
        body=s.EmailBody,
        problems=_BODY_ERRORS,
    ),
    "auth:email_confirm": Operation(
        "Confirm the address with the mailed code or link; signs in",
        "account",
        ok_schema=ref("Session"),
        body=s.EmailedSecretBody,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:otp": Operation(
        "Mail a sign-in code and magic link (202 for every address)",
        "account",
        ok_status=202,
        ok_schema=ref("Accepted"),
        body=s.EmailBody,
        problems=_BODY_ERRORS,
    ),
    "auth:otp_verify": Operation(
        "Sign in with the mailed code or the magic link's token hash",
        "account",
        ok_schema=ref("Session"),
        body=s.EmailedSecretBody,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:oauth_authorize": Operation(
        "The provider sign-in URL (PKCE) and the flow_id to keep",
        "account",
        ok_schema=ref("OAuthStart"),
        problems=(404, 422),
    ),
    "auth:oauth_callback": Operation(
        "Exchange the code of the provider redirect for a session",
        "account",
        ok_schema=ref("Session"),
        body=s.OAuthCallbackBody,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:reauthenticate": Operation(
        "Mail a one-time nonce proving a fresh sign-in",
        "account",
        ok_status=202,
        ok_schema=ref("Accepted"),
        problems=_SIGNED_IN,
    ),
    "auth:password_change": Operation(
        "Change the password (current password or nonce); ends every other session",
        "account",
        ok_schema=ref("UserAnswer"),
        body=s.PasswordChangeBody,
        problems=(*_BODY_ERRORS, *_SIGNED_IN),
    ),
    "auth:email_change": Operation(
        "Start a secure email change (both addresses confirm)",
        "account",
        ok_status=202,
        ok_schema=ref("UserAnswer"),
        body=s.EmailChangeBody,
        problems=(*_BODY_ERRORS, *_SIGNED_IN, 409),
    ),
    "auth:email_change_confirm": Operation(
        "Confirm one half of an email change with its code or link",
        "account",
        ok_schema=ref("EmailChange"),
        body=s.EmailedSecretBody,
        problems=(*_BODY_ERRORS, 401, 403),
        transport=True,
    ),
    "auth:profile": Operation(
        "Merge fields into user_metadata (null removes one)",
        "account",
        ok_schema=ref("UserAnswer"),
        body=s.ProfileBody,
        problems=(*_BODY_ERRORS, *_SIGNED_IN),
    ),
    "auth:account_delete": Operation(
        "Delete the account (current password or nonce); ends every session",
        "account",
        ok_status=204,
        body=s.DeleteAccountBody,
        problems=(*_BODY_ERRORS, *_SIGNED_IN),
    ),
    "auth:mfa_factors": Operation(
        "The caller's factors",
        "mfa",
        ok_schema=ref("Factors"),
        problems=_SIGNED_IN,
    ),
    "auth:mfa_enroll": Operation(
        "Enrol a TOTP factor: secret, otpauth URI, QR code",
        "mfa",
        ok_status=201,
        ok_schema=ref("Enrollment"),
        body=s.MfaEnrollBody,
        body_required=False,
        problems=(*_BODY_ERRORS, *_SIGNED_IN, 409),
    ),
    "auth:mfa_challenge": Operation(
        "Start a challenge of a factor",
        "mfa",
        ok_status=201,
        ok_schema=ref("Challenge"),
        problems=(*_SIGNED_IN, 404),
    ),
    "auth:mfa_verify": Operation(
        "Answer a challenge with the authenticator code; the session becomes aal2",
        "mfa",
        ok_schema=ref("Session"),
        body=s.MfaVerifyBody,
        problems=(*_BODY_ERRORS, *_SIGNED_IN, 404),
        transport=True,
    ),
    "auth:mfa_unenroll": Operation(
        "Remove a factor (a verified one needs aal2)",
        "mfa",
        ok_status=204,
        problems=(*_SIGNED_IN, 404),
    ),
}
