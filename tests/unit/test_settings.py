"""Settings are validated at start, and a bad one is named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.settings import ConfigurationError, Settings

GOOD = {
    "SUPABASE_URL": "https://project.supabase.co",
    "SUPABASE_ANON_KEY": "anon",
    "SUPABASE_SERVICE_ROLE_KEY": "service",
}


def test_defaults_and_derived_values() -> None:
    """A minimal environment is enough; the auth URL and issuer follow SUPABASE_URL."""
    settings = Settings.from_environ(GOOD)
    assert settings.auth_url == "https://project.supabase.co/auth/v1"
    assert settings.issuer == settings.auth_url
    assert settings.environment == "development"
    assert settings.keepalive_seconds > 60


@pytest.mark.parametrize("missing", sorted(GOOD))
def test_missing_required_setting_is_named(missing: str) -> None:
    """Leaving out a required variable names that variable."""
    env = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ConfigurationError, match=missing):
        Settings.from_environ(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SUPABASE_URL", "not a url"),
        ("ENVIRONMENT", "prod"),
        ("PORT", "eighty"),
        ("UPSTREAM_POOL_SIZE", "0"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
    ],
)
def test_malformed_setting_is_named(name: str, value: str) -> None:
    """A malformed value names its variable."""
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_environ({**GOOD, name: value})


def test_timeouts_must_fit_the_deadline() -> None:
    """Socket timeouts longer than the call deadline are refused at start."""
    with pytest.raises(ConfigurationError, match="UPSTREAM_READ_TIMEOUT_SECONDS"):
        Settings.from_environ(
            {**GOOD, "UPSTREAM_DEADLINE_SECONDS": "2", "UPSTREAM_READ_TIMEOUT_SECONDS": "3"}
        )


def test_lists_are_comma_separated() -> None:
    """CORS origins and trusted proxies are comma-separated lists."""
    settings = Settings.from_environ(
        {
            **GOOD,
            "CORS_ORIGINS": "https://a.example, https://b.example",
            "TRUSTED_PROXIES": "10.0.0.0/8,::1/128",
        }
    )
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "::1/128"]


@pytest.mark.timeout(60)
def test_python_m_app_refuses_to_start_without_settings() -> None:
    """`python -m app` with no Supabase settings exits 2 naming each missing variable."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 2
    for name in GOOD:
        assert name in result.stderr
    assert "Traceback" not in result.stderr
