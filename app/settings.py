"""Service settings: one frozen object, read from an environ mapping, validated at start."""

from __future__ import annotations

import base64
import binascii
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
    ValidationInfo,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.forwarded import forwarded_prefix
from services.apikeys import ApiKey, KeySlot, classify, slot_problem
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


def _webhook_secrets(value: Any) -> Any:
    """``"v1,whsec_<base64> v1,whsec_<base64>"`` (space-separated, for rotation) → the
    ``whsec_`` secrets; each must decode (strict base64) to at least 16 bytes."""
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return value
    secrets: list[str] = []
    for item in value.split():
        secret = item.removeprefix("v1,")
        if not secret.startswith("whsec_"):
            raise ValueError("each secret must look like v1,whsec_<base64>")
        try:
            raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret is not valid base64") from None
        if len(raw) < 16:
            raise ValueError("a whsec_ secret must hold at least 16 bytes")
        secrets.append(secret)
    return secrets


WebhookSecrets = Annotated[list[SecretStr], BeforeValidator(_webhook_secrets)]


class ConfigurationError(Exception):
    """The settings cannot start the service; the message names each bad variable."""


# Each slot's environment names, the one that wins first.
KEY_VARIABLES = {
    KeySlot.PUBLIC: ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_ANON_KEY"),
    KeySlot.SERVER: ("SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY"),
}


_ALL_KEY_NAMES = tuple(name for names in KEY_VARIABLES.values() for name in names)


def _text(value: Any) -> str | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    text = value.strip() if isinstance(value, str) else ""
    return text or None


def key_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(variable, problem) for each missing or misplaced API key in raw settings values."""
    problems: list[tuple[str, str]] = []
    for slot, (new, legacy) in KEY_VARIABLES.items():
        present = [(n, t) for n in (new, legacy) if (t := _text(values.get(n.lower())))]
        if not present:
            problems.append((new, f"is required but not set (or the legacy {legacy})"))
        for name, key in present:
            problem = slot_problem(classify(key), slot)
            if problem is not None:
                problems.append((name, problem))
    return problems


def _first_key(settings: Settings, names: tuple[str, str]) -> ApiKey:
    for name in names:
        if (key := _text(getattr(settings, name.lower()))) is not None:
            return classify(key)
    raise ConfigurationError(f"one of {' or '.join(names)} is required")


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
    # The new keys win over the legacy names when both are set (``public_api_key``,
    # ``server_api_key``); one of each pair is required.
    supabase_publishable_key: SecretStr | None = None
    supabase_secret_key: SecretStr | None = None
    supabase_anon_key: SecretStr | None = None
    supabase_service_role_key: SecretStr | None = None
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
    # Topologies, TLS and ACL users (docs/redis.md). Sentinel: host:port,host:port.
    redis_sentinels: CsvList = Field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_username: str | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_cluster: bool = False
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_tls: bool = False
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None
    redis_tls_verify: bool = True
    redis_tls_check_hostname: bool = True
    redis_retries: int = Field(default=3, ge=0, le=10)
    # WAIT after every session write: replicas that must confirm it (0: do not wait).
    redis_min_replica_acks: int = Field(default=0, ge=0, le=16)
    redis_replica_ack_timeout_ms: int = Field(default=250, ge=10, le=5000)

    # Process.
    environment: Literal["development", "staging", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    # One access line per request (health checks and scrapes at debug unless they fail).
    log_access: bool = True
    # Kong's upstream keep-alive idle timeout is 60 s; ours must outlast it.
    keepalive_seconds: int = Field(default=75, ge=1)
    shutdown_drain_seconds: float = Field(default=15.0, ge=0)
    # Worker processes per instance (``python -m app --workers N`` wins); see app/workers.py.
    web_concurrency: int = Field(default=1, ge=1, le=64)
    trusted_proxies: CsvNetworks = Field(default_factory=list)
    # Proxies in front of the app, the one it talks to included, whose X-Forwarded-For
    # entries are believed by count even outside TRUSTED_PROXIES (a platform edge whose
    # addresses are not published). 1: only TRUSTED_PROXIES decide. See app/forwarded.py.
    forwarded_hops: int = Field(default=1, ge=1, le=8)
    # Path prefixes a trusted proxy may announce in X-Forwarded-Prefix (a Kong prefix route
    # with strip_path). Empty: the header is ignored. An allowlist because a proxy that
    # trusts its own edge passes a client's X-Forwarded-Prefix through.
    forwarded_prefixes: CsvList = Field(default_factory=list)
    cors_origins: CsvList = Field(default_factory=list)
    max_body_bytes: int = Field(default=16 * 1024, ge=256)

    # Supabase gateway: admission (docs/deadlocks.md), deadlines, retries and breaker.
    # The thread bound: most Supabase calls in flight (the adaptive limit stays below it).
    upstream_pool_size: int = Field(default=128, ge=1, le=512)
    # How long a request may wait for Supabase, from its arrival (services/budget.py):
    # every upstream call it makes, queueing and retries included.
    upstream_deadline_seconds: float = Field(default=5.0, gt=0, le=60)
    upstream_connect_timeout_seconds: float = Field(default=1.5, gt=0)
    # Unset: every socket read may take the time left of the deadline.
    upstream_read_timeout_seconds: float | None = Field(default=None, gt=0)
    # An idle connection to Supabase is closed after this long, before the upstream's own
    # idle timeout can close it under a request in transit (a 503 for a sign-in).
    upstream_keepalive_seconds: float = Field(default=4.0, gt=0, le=300)
    upstream_max_attempts: int = Field(default=3, ge=1, le=10)
    upstream_initial_limit: int = Field(default=16, ge=1)
    upstream_min_limit: int = Field(default=16, ge=1)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=10.0, gt=0)
    breaker_min_callers: int = Field(default=3, ge=1)

    # Sessions and refresh.
    session_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # Live sessions one user may hold; a new sign-in beyond it ends the least recently
    # used one. Bounds what every session write of that user reads in Redis.
    sessions_per_user: int = Field(default=100, ge=1, le=1000)
    refresh_grace_seconds: float = Field(default=10.0, ge=0, le=120)
    verified_token_cache_size: int = Field(default=10_000, ge=0)

    # Browser session transport (docs/frontend.md): "bearer" (tokens in JSON bodies only),
    # "cookie" (the refresh token only in an HttpOnly cookie) or "both" (each request chooses
    # with X-Session-Transport; bearer when it says nothing).
    session_transport: Literal["bearer", "cookie", "both"] = "bearer"
    session_cookie_name: str = Field(default="__Secure-sg-refresh", pattern=r"^[A-Za-z0-9_.-]+$")
    session_cookie_samesite: Literal["strict", "lax"] = "strict"

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

    # Hostile input and trust boundaries (docs/security.md).
    # Host names (or "*.example.com") this service answers for; empty: any. /health/* and
    # /metrics answer any Host (platform probes use addresses).
    allowed_hosts: CsvList = Field(default_factory=list)
    # Request heads: more headers or more bytes (request line included) answer 431.
    max_header_count: int = Field(default=100, ge=8, le=1000)
    max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    # A taken address answers registration like a fresh one (201, no tokens), not 409.
    register_conceal_existing: bool = False
    # Failed sign-ins are padded to the observed successful-path time; this until learnt.
    login_failure_floor_seconds: float = Field(default=0.1, ge=0, le=5)
    # Admin routes re-check the caller against Supabase at most this often (0: always).
    admin_reverify_seconds: float = Field(default=30.0, ge=0, le=300)
    # Standard Webhooks secrets ("v1,whsec_...", space-separated) of Supabase-side change
    # events (POST /api/v1/internal/supabase-events); unset: the endpoint answers 404.
    supabase_events_secret: WebhookSecrets = Field(default_factory=list)

    @model_validator(mode="after")
    def _redis_fits(self) -> Settings:
        if "{" in self.redis_key_prefix or "}" in self.redis_key_prefix:
            raise ValueError("REDIS_KEY_PREFIX must not contain { or } (keys carry hash tags)")
        for item in self.redis_sentinels:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"REDIS_SENTINELS entry {item!r} is not HOST:PORT")
        if self.redis_replica_ack_timeout_ms >= self.redis_timeout_seconds * 1000:
            raise ValueError(
                "REDIS_REPLICA_ACK_TIMEOUT_MS must be below REDIS_TIMEOUT_SECONDS "
                "(WAIT blocks the connection that long)"
            )
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            raise ValueError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together")
        return self

    # Account lifecycle (docs/account-lifecycle.md).
    # Providers "Sign in with ..." may use (enabled in Supabase too), e.g. "google,github".
    oauth_providers: CsvList = Field(default_factory=list)
    # URL prefixes an OAuth redirect_to may start with (empty: only Supabase's SITE_URL).
    oauth_redirect_urls: CsvList = Field(default_factory=list)

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
        if any(forwarded_prefix(prefix) != prefix for prefix in self.forwarded_prefixes):
            raise ValueError("FORWARDED_PREFIXES entries must be paths like /identity")
        if self.forwarded_hops > 1 and not self.trusted_proxies:
            raise ValueError("FORWARDED_HOPS above 1 needs TRUSTED_PROXIES (the app's peer)")
        return self

    @model_validator(mode="after")
    def _api_keys_fit(self, info: ValidationInfo) -> Settings:
        if info.context and info.context.get("keys_checked"):
            return self  # from_environ reported them with the other errors
        values = {name.lower(): getattr(self, name.lower()) for name in _ALL_KEY_NAMES}
        problems = key_problems(values)
        if problems:
            raise ValueError("; ".join(f"{name} {problem}" for name, problem in problems))
        return self

    @property
    def public_api_key(self) -> ApiKey:
        """SUPABASE_PUBLISHABLE_KEY, else SUPABASE_ANON_KEY: the key of user-facing calls."""
        return _first_key(self, KEY_VARIABLES[KeySlot.PUBLIC])

    @property
    def server_api_key(self) -> ApiKey:
        """SUPABASE_SECRET_KEY, else SUPABASE_SERVICE_ROLE_KEY: the Admin API's key."""
        return _first_key(self, KEY_VARIABLES[KeySlot.SERVER])

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
        # Checked apart, so a missing or misplaced key is named next to any other bad field.
        problems = key_problems(values)
        try:
            settings = cls.model_validate(values, context={"keys_checked": True})
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, problems)) from None
        if problems:
            raise ConfigurationError(_describe(None, problems))
        return settings


def _describe(exc: ValidationError | None, key_errors: list[tuple[str, str]] | None = None) -> str:
    lines = ["invalid configuration:"]
    lines.extend(f"  {name}: {problem}" for name, problem in key_errors or [])
    for error in exc.errors(include_url=False, include_input=False) if exc else []:
        name = ".".join(str(part) for part in error["loc"]).upper() or "SETTINGS"
        message = "is required but not set" if error["type"] == "missing" else error["msg"]
        message = message.removeprefix("Value error, ")
        lines.append(f"  {name}: {message}")
    return "\n".join(lines)
