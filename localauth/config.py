"""Settings, read from a mapping of GoTrue-style environment names.

The command line is translated into the same names (CLI wins), so there is exactly one
parsing path: ``Settings.from_env({**os.environ, **cli_overrides})``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["ENV_FLAGS", "ConfigError", "Settings", "parse_go_duration"]


class ConfigError(ValueError):
    pass


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string ("24h", "1h30m", "-5s") into seconds."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {text!r}")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


def _bool(name: str, raw: str) -> bool:
    # strconv.ParseBool semantics, as GoTrue's envconfig uses.
    if raw in {"1", "t", "T", "TRUE", "true", "True"}:
        return True
    if raw in {"0", "f", "F", "FALSE", "false", "False"}:
        return False
    raise ConfigError(f"{name}: invalid boolean {raw!r}")


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}: invalid integer {raw!r}") from None


def _seconds(name: str, raw: str) -> float:
    try:
        return float(raw) if re.fullmatch(r"\d+(\.\d+)?", raw) else parse_go_duration(raw)
    except ValueError:
        raise ConfigError(f"{name}: invalid duration {raw!r}") from None


# env name -> (Settings field, CLI flag). Flags are the kebab-case of the GoTrue name.
ENV_FLAGS: dict[str, tuple[str, str]] = {
    "GOTRUE_API_HOST": ("host", "--host"),
    "PORT": ("port", "--port"),
    "LOCALAUTH_DB": ("db_path", "--db"),
    "LOCALAUTH_JWT_ALG": ("jwt_alg", "--jwt-alg"),
    "LOCALAUTH_BCRYPT_COST": ("bcrypt_cost", "--bcrypt-cost"),
    "LOCALAUTH_THREADS": ("threads", "--threads"),
    "GOTRUE_JWT_SECRET": ("jwt_secret", "--jwt-secret"),
    "GOTRUE_JWT_KEY_ID": ("jwt_key_id", "--jwt-key-id"),
    "GOTRUE_JWT_EXP": ("jwt_exp", "--jwt-exp"),
    "GOTRUE_JWT_AUD": ("jwt_aud", "--jwt-aud"),
    "GOTRUE_JWT_ISSUER": ("jwt_issuer", "--jwt-issuer"),
    "GOTRUE_JWT_ADMIN_ROLES": ("jwt_admin_roles", "--jwt-admin-roles"),
    "GOTRUE_JWT_DEFAULT_GROUP_NAME": ("jwt_default_group_name", "--jwt-default-group-name"),
    "GOTRUE_SITE_URL": ("site_url", "--site-url"),
    "GOTRUE_URI_ALLOW_LIST": ("uri_allow_list", "--uri-allow-list"),
    "API_EXTERNAL_URL": ("api_external_url", "--api-external-url"),
    "GOTRUE_DISABLE_SIGNUP": ("disable_signup", "--disable-signup"),
    "GOTRUE_MAILER_AUTOCONFIRM": ("mailer_autoconfirm", "--mailer-autoconfirm"),
    "GOTRUE_EXTERNAL_EMAIL_ENABLED": ("external_email_enabled", "--external-email-enabled"),
    "GOTRUE_EXTERNAL_PHONE_ENABLED": ("external_phone_enabled", "--external-phone-enabled"),
    # localauth-only: the fake OAuth provider (localauth/fake_oauth.py)
    "GOTRUE_EXTERNAL_FAKE_ENABLED": ("external_fake_enabled", "--external-fake-enabled"),
    "GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED": (
        "external_anonymous_users_enabled",
        "--external-anonymous-users-enabled",
    ),
    "GOTRUE_PASSWORD_MIN_LENGTH": ("password_min_length", "--password-min-length"),
    "GOTRUE_PASSWORD_REQUIRED_CHARACTERS": (
        "password_required_characters",
        "--password-required-characters",
    ),
    "GOTRUE_SECURITY_REFRESH_TOKEN_ROTATION_ENABLED": (
        "refresh_token_rotation_enabled",
        "--security-refresh-token-rotation-enabled",
    ),
    "GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL": (
        "refresh_token_reuse_interval",
        "--security-refresh-token-reuse-interval",
    ),
    "GOTRUE_SMTP_MAX_FREQUENCY": ("smtp_max_frequency", "--smtp-max-frequency"),
    "GOTRUE_JWT_KEYS": ("jwt_keys", "--jwt-keys"),
    "GOTRUE_MAILER_OTP_EXP": ("mailer_otp_exp", "--mailer-otp-exp"),
    "GOTRUE_MAILER_OTP_LENGTH": ("mailer_otp_length", "--mailer-otp-length"),
    "GOTRUE_MAILER_SECURE_EMAIL_CHANGE_ENABLED": (
        "mailer_secure_email_change_enabled",
        "--mailer-secure-email-change-enabled",
    ),
    "GOTRUE_MFA_MAX_ENROLLED_FACTORS": ("mfa_max_enrolled_factors", "--mfa-max-enrolled-factors"),
    "GOTRUE_MFA_CHALLENGE_EXPIRY_DURATION": (
        "mfa_challenge_expiry_duration",
        "--mfa-challenge-expiry-duration",
    ),
    "GOTRUE_EXTERNAL_FLOW_STATE_EXPIRY_DURATION": (
        "flow_state_expiry_duration",
        "--external-flow-state-expiry-duration",
    ),
    # The API gateway's keys (localauth/apikeys.py).
    "LOCALAUTH_PUBLISHABLE_KEY": ("publishable_key", "--publishable-key"),
    "LOCALAUTH_SECRET_KEY": ("secret_key", "--secret-key"),
    "LOCALAUTH_LEGACY_API_KEYS": ("legacy_api_keys_enabled", "--legacy-api-keys"),
    "LOCALAUTH_REQUIRE_API_KEY": ("require_api_key", "--require-api-key"),
}


@dataclass(frozen=True)
class Settings:
    db_path: Path
    host: str = "127.0.0.1"
    port: int = 9999
    jwt_alg: str = "ES256"
    bcrypt_cost: int = 10
    threads: int = 16
    jwt_secret: str | None = None
    jwt_key_id: str | None = None
    jwt_exp: int = 3600
    jwt_aud: str = "authenticated"
    jwt_issuer: str = ""
    jwt_admin_roles: tuple[str, ...] = ("service_role", "supabase_admin")
    jwt_default_group_name: str = "authenticated"
    site_url: str = "http://localhost:3000"
    uri_allow_list: tuple[str, ...] = ()
    api_external_url: str = ""
    disable_signup: bool = False
    mailer_autoconfirm: bool = False
    external_email_enabled: bool = True
    external_phone_enabled: bool = False
    external_fake_enabled: bool = False
    external_anonymous_users_enabled: bool = False
    password_min_length: int = 6
    password_required_characters: tuple[str, ...] = ()
    refresh_token_rotation_enabled: bool = True
    refresh_token_reuse_interval: int = 0
    smtp_max_frequency: float = 60.0
    jwt_keys: str | None = None  # GOTRUE_JWT_KEYS: a JSON array of private JWKs
    mailer_otp_exp: int = 3600
    mailer_otp_length: int = 6
    mailer_secure_email_change_enabled: bool = True
    mfa_max_enrolled_factors: int = 10
    mfa_challenge_expiry_duration: float = 300.0
    flow_state_expiry_duration: float = 300.0
    publishable_key: str | None = None
    secret_key: str | None = None
    legacy_api_keys_enabled: bool = True
    require_api_key: bool = False

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, (field, _flag) in ENV_FLAGS.items():
            raw = env.get(name)
            if raw is None:
                continue
            kind = types[field]
            if kind == "bool":
                values[field] = _bool(name, raw)
            elif kind == "int":
                values[field] = _int(name, raw)
            elif kind == "float":
                values[field] = _seconds(name, raw)
            elif kind == "tuple[str, ...]":
                sep = ":" if field == "password_required_characters" else ","
                values[field] = tuple(p.strip() for p in raw.split(sep) if p.strip())
            elif kind == "Path":
                values[field] = Path(raw)
            elif kind == "str | None":
                values[field] = raw or None
            else:
                values[field] = raw
        if "db_path" not in values:
            raise ConfigError("--db (LOCALAUTH_DB) is required")
        settings = cls(**values)
        if settings.jwt_alg not in {"ES256", "RS256", "HS256"}:
            raise ConfigError(f"--jwt-alg must be ES256, RS256 or HS256, not {settings.jwt_alg!r}")
        if not 6 <= settings.mailer_otp_length <= 10:
            raise ConfigError("GOTRUE_MAILER_OTP_LENGTH must be between 6 and 10")
        if not 4 <= settings.bcrypt_cost <= 31:
            raise ConfigError("--bcrypt-cost must be between 4 and 31")
        if settings.threads < 1:
            raise ConfigError("--threads must be at least 1")
        for given, prefix, flag in (
            (settings.publishable_key, "sb_publishable_", "--publishable-key"),
            (settings.secret_key, "sb_secret_", "--secret-key"),
        ):
            if given is not None and (not given.startswith(prefix) or len(given) <= len(prefix)):
                raise ConfigError(f"{flag} must start with {prefix}")
        # GoTrue never accepts a minimum below 6.
        min_len = max(settings.password_min_length, 6)
        issuer = settings.jwt_issuer or f"{settings.base_url}/auth/v1"
        external = settings.api_external_url or f"{settings.base_url}/auth/v1"
        return cls(
            **{
                **{f.name: getattr(settings, f.name) for f in fields(cls)},
                "password_min_length": min_len,
                "jwt_issuer": issuer,
                "api_external_url": external.rstrip("/"),
            }
        )
