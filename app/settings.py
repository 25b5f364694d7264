"""Service settings: one frozen object, read from an environ mapping, validated at start."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.ratelimit import parse_rules

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], BeforeValidator(_split_csv)]
CsvNetworks = Annotated[list[IpNetwork], BeforeValidator(_split_csv)]


def _split_credentials(value: Any) -> Any:
    """``"id1:secret1,id2:secret2"`` → ``{"id1": "secret1", ...}``."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for item in _split_csv(value):
        service_id, sep, secret = item.partition(":")
        if not sep or not service_id.strip() or not secret.strip():
            raise ValueError("each entry must be SERVICE_ID:SECRET")
        pairs[service_id.strip()] = secret.strip()
    return pairs


def _valid_rate_limits(value: list[str]) -> list[str]:
    parse_rules(value)
    return value


ServiceCredentials = Annotated[dict[str, SecretStr], BeforeValidator(_split_credentials)]
RateLimitRules = Annotated[
    list[str], BeforeValidator(_split_csv), AfterValidator(_valid_rate_limits)
]


class ConfigurationError(Exception):
    """The settings cannot start the service; the message names each bad variable."""


class Settings(BaseSettings):
    """Every knob of the service. Environment names are the upper-case field names."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any
    ) -> tuple[Any, ...]:
        # Only the mapping given to ``from_environ``: pydantic-settings' own env source would
        # also read os.environ and JSON-decode list fields, so CORS_ORIGINS=https://a.example
        # or TRUSTED_PROXIES=10.0.0.0/8 in a real environment would fail to start.
        return (init_settings,)

    # Supabase project.
    supabase_url: AnyHttpUrl
    supabase_anon_key: SecretStr = Field(min_length=1)
    supabase_service_role_key: SecretStr = Field(min_length=1)
    supabase_jwt_secret: SecretStr | None = None
    jwt_audience: str = "authenticated"
    # Defaults to SUPABASE_URL + /auth/v1, as GoTrue issues it.
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    jwks_refresh_interval_seconds: float = Field(default=60.0, ge=1)

    # Redis.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "sg:"
    redis_timeout_seconds: float = Field(default=0.5, gt=0, le=10)
    redis_max_connections: int = Field(default=64, ge=2)

    # Process.
    environment: Literal["development", "staging", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    # Kong's upstream keep-alive idle timeout is 60 s; ours must outlast it.
    keepalive_seconds: int = Field(default=75, ge=1)
    shutdown_drain_seconds: float = Field(default=15.0, ge=0)
    trusted_proxies: CsvNetworks = Field(default_factory=list)
    cors_origins: CsvList = Field(default_factory=list)
    max_body_bytes: int = Field(default=16 * 1024, ge=256)

    # Supabase gateway: admission (docs/deadlocks.md), deadlines, retries and breaker.
    # The thread bound: most Supabase calls in flight (the adaptive limit stays below it).
    upstream_pool_size: int = Field(default=128, ge=1, le=512)
    # No longer used: admission queues a call while it can still finish in its deadline.
    upstream_pool_wait_seconds: float = Field(default=0.0, ge=0)
    # The whole budget of a Supabase call, queueing included.
    upstream_deadline_seconds: float = Field(default=5.0, gt=0, le=60)
    upstream_connect_timeout_seconds: float = Field(default=1.5, gt=0)
    # Unset: every socket read may take the time left of the deadline.
    upstream_read_timeout_seconds: float | None = Field(default=None, gt=0)
    upstream_max_attempts: int = Field(default=3, ge=1, le=10)
    upstream_initial_limit: int = Field(default=16, ge=1)
    upstream_min_limit: int = Field(default=16, ge=1)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=10.0, gt=0)
    breaker_min_callers: int = Field(default=3, ge=1)

    # Sessions and refresh.
    session_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    refresh_grace_seconds: float = Field(default=10.0, ge=0, le=120)
    verified_token_cache_size: int = Field(default=10_000, ge=0)

    # Registration.
    register_email_confirm: bool = True
    password_min_length: int = Field(default=8, ge=6, le=72)
    password_require_lower: bool = True
    password_require_upper: bool = True
    password_require_digit: bool = True
    password_require_symbol: bool = False

    # Authorization (docs/authorization.md).
    admin_require_aal2: bool = False
    # Empty: admin routes answer from any address.
    admin_ip_allowlist: CsvNetworks = Field(default_factory=list)
    # "id1:secret1,id2:secret2": callers of the internal routes (X-Service-ID/-Secret).
    service_credentials: ServiceCredentials = Field(default_factory=dict)
    rate_limit_enabled: bool = True
    # "login=10/60,register=5/60": NAME=LIMIT/SECONDS over services.ratelimit.DEFAULT_RULES.
    rate_limits: RateLimitRules = Field(default_factory=list)
    lockout_enabled: bool = True
    lockout_window_seconds: float = Field(default=900.0, gt=0)
    lockout_ip_threshold: int = Field(default=5, ge=1)
    lockout_base_seconds: float = Field(default=30.0, gt=0)
    lockout_max_seconds: float = Field(default=3600.0, gt=0)
    lockout_account_window_seconds: float = Field(default=300.0, gt=0)
    lockout_account_threshold: int = Field(default=50, ge=1)
    lockout_account_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _deadlines_fit(self) -> Settings:
        if self.upstream_connect_timeout_seconds >= self.upstream_deadline_seconds:
            raise ValueError(
                "UPSTREAM_CONNECT_TIMEOUT_SECONDS must be below UPSTREAM_DEADLINE_SECONDS"
            )
        read_timeout = self.upstream_read_timeout_seconds
        if read_timeout is not None and read_timeout >= self.upstream_deadline_seconds:
            raise ValueError(
                "UPSTREAM_READ_TIMEOUT_SECONDS must be below UPSTREAM_DEADLINE_SECONDS"
            )
        return self

    @property
    def auth_url(self) -> str:
        return str(self.supabase_url).rstrip("/") + "/auth/v1"

    @property
    def issuer(self) -> str:
        return self.jwt_issuer or self.auth_url

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def worst_case_request_seconds(self) -> float:
        """The longest any request may take: the upstream deadline covers queueing too."""
        return self.upstream_deadline_seconds

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build from a mapping (``os.environ`` in production, a dict in tests)."""
        fields = cls.model_fields
        values: dict[str, Any] = {
            key.lower(): value for key, value in environ.items() if key.lower() in fields
        }
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"]).upper() or "SETTINGS"
        message = "is required but not set" if error["type"] == "missing" else error["msg"]
        lines.append(f"  {name}: {message}")
    return "\n".join(lines)
