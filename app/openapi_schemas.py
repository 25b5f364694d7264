"""The response and error schemas of ``/openapi.json`` (request bodies are the pydantic
models of ``app.schemas``). Kept beside the document builder (``app.openapi``), which
references them as ``#/components/schemas/<name>``."""

from __future__ import annotations

from typing import Any

from services import errors


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def error_codes() -> list[str]:
    """Every ``code`` a problem body can carry: the whole ``services.errors`` tree."""
    codes: set[str] = set()
    pending: list[type[errors.AuthServiceError]] = [errors.AuthServiceError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return sorted(codes)


_TIME = {"type": "string", "format": "date-time"}
_OBJECT = {"type": "object", "additionalProperties": True}

# A Supabase Auth user as the Admin API and sign-in return it (null members are omitted).
USER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "aud", "created_at", "app_metadata", "user_metadata"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "aud": {"type": "string"},
        "role": _nullable({"type": "string"}),
        "email": _nullable({"type": "string"}),
        "phone": _nullable({"type": "string"}),
        "new_email": _nullable({"type": "string"}),
        "new_phone": _nullable({"type": "string"}),
        "app_metadata": {
            "type": "object",
            "additionalProperties": True,
            "properties": {"roles": {"type": "array", "items": {"type": "string"}}},
        },
        "user_metadata": _OBJECT,
        "created_at": _TIME,
        "updated_at": _nullable(_TIME),
        "confirmed_at": _nullable(_TIME),
        "email_confirmed_at": _nullable(_TIME),
        "phone_confirmed_at": _nullable(_TIME),
        "confirmation_sent_at": _nullable(_TIME),
        "recovery_sent_at": _nullable(_TIME),
        "email_change_sent_at": _nullable(_TIME),
        "invited_at": _nullable(_TIME),
        "last_sign_in_at": _nullable(_TIME),
        "banned_until": _nullable({"type": "string"}),
        "deleted_at": _nullable({"type": "string"}),
        "action_link": _nullable({"type": "string"}),
        "is_anonymous": {"type": "boolean"},
        "is_sso_user": {"type": "boolean"},
        "identities": _nullable({"type": "array", "items": _OBJECT}),
        "factors": _nullable({"type": "array", "items": _OBJECT}),
    },
}
SESSION: dict[str, Any] = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in", "expires_at", "user"],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"type": "string", "const": "bearer"},
        "expires_in": {"type": "integer"},
        "expires_at": {"type": "integer"},
        "refresh_token": {
            "type": "string",
            "description": "Absent in the cookie session transport (docs/frontend.md): the "
            "token is then only in the HttpOnly refresh cookie.",
        },
        "user": ref("User"),
    },
}
REGISTRATION: dict[str, Any] = {
    "type": "object",
    "required": ["user", "session"],
    "properties": {
        "user": {
            "oneOf": [
                ref("User"),
                {
                    "type": "object",
                    "description": "With REGISTER_CONCEAL_EXISTING: only the address",
                    "required": ["email"],
                    "properties": {"email": {"type": "string"}},
                    "additionalProperties": False,
                },
            ]
        },
        "session": {"oneOf": [ref("Session"), {"type": "null"}]},
    },
}
EVENT_OUTCOME: dict[str, Any] = {
    "type": "object",
    "required": ["status", "sessions_ended"],
    "properties": {
        "status": {"type": "string", "enum": ["applied", "duplicate"]},
        "sessions_ended": {"type": "integer", "minimum": 0},
    },
}
ME: dict[str, Any] = {
    "type": "object",
    "required": ["id", "session_id", "roles", "aal"],
    "properties": {
        "id": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "roles": {"type": "array", "items": {"type": "string"}},
        "app_metadata": _OBJECT,
        "user_metadata": _OBJECT,
        "session_id": {"type": "string"},
        "aal": {"type": ["string", "null"]},
    },
}
SESSION_INFO: dict[str, Any] = {
    "type": "object",
    "required": ["id", "created_at", "last_seen_at", "current"],
    "properties": {
        "id": {"type": "string"},
        "created_at": {"type": "string"},
        "last_seen_at": {"type": "string"},
        "ip": {"type": "string"},
        "user_agent": {"type": "string"},
        "current": {"type": "boolean"},
    },
}
SESSIONS: dict[str, Any] = {
    "type": "object",
    "required": ["sessions"],
    "properties": {"sessions": {"type": "array", "items": ref("SessionInfo")}},
}
USER_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["users", "page", "per_page"],
    "properties": {
        "users": {"type": "array", "items": ref("User")},
        "page": {"type": "integer", "minimum": 1},
        "per_page": {"type": "integer", "minimum": 1},
    },
}
REVOKED: dict[str, Any] = {
    "type": "object",
    "required": ["revoked"],
    "properties": {"revoked": {"type": "integer", "minimum": 0, "description": "sessions ended"}},
}
USER_STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["user_id", "banned", "not_before"],
    "properties": {
        "user_id": {"type": "string", "format": "uuid"},
        "banned": {"type": "boolean"},
        "not_before": {
            "type": "integer",
            "description": "Unix time; tokens issued before it are refused (0: none)",
        },
    },
}
LIVE: dict[str, Any] = {
    "type": "object",
    "required": ["status", "version"],
    "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
}
CHECK: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "state", "latency_ms"],
    "properties": {
        "ok": {"type": "boolean"},
        "state": {"type": "string"},
        "latency_ms": {"type": "number"},
    },
}
READY: dict[str, Any] = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "degraded", "not_ready"]},
        "checks": {
            "type": "object",
            "required": ["redis", "supabase_auth", "jwks", "breaker", "thread_pool"],
            "additionalProperties": ref("Check"),
        },
    },
}
FIELD_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "One failing field; a weak password lists its `reasons` (length, "
    "lowercase, uppercase, digit, symbol, too_long).",
    "required": ["field"],
    "properties": {
        "field": {"type": "string"},
        "message": {"type": "string"},
        "type": {"type": "string"},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
}


def problem() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "RFC 9457 problem details; `code` is stable, `debug` appears outside "
        "production only.",
        "required": ["type", "title", "status", "detail", "code", "request_id"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": ref("ErrorCode"),
            "request_id": {"type": ["string", "null"]},
            "errors": {"type": "array", "items": ref("FieldError")},
            "debug": {"type": "string"},
        },
    }


def components() -> dict[str, Any]:
    return {
        "ErrorCode": {
            "type": "string",
            "enum": error_codes(),
            "description": "What went wrong, stable across versions: switch on this.",
        },
        "FieldError": FIELD_ERROR,
        "Problem": problem(),
        "User": USER,
        "Session": SESSION,
        "Registration": REGISTRATION,
        "Me": ME,
        "SessionInfo": SESSION_INFO,
        "Sessions": SESSIONS,
        "UserPage": USER_PAGE,
        "Revoked": REVOKED,
        "UserStatus": USER_STATUS,
        "EventOutcome": EVENT_OUTCOME,
        "Live": LIVE,
        "Ready": READY,
        "Check": CHECK,
    }
