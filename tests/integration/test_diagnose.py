"""`python -m app.diagnose` against real localauth and Redis, healthy and broken."""

from __future__ import annotations

import io
import subprocess
import sys

from app import diagnose
from tests.conftest import app_env
from tests.support.localauth import LocalAuth, free_port


def run(env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = diagnose.main(["--timeout", "2"], environ=env, out=out)
    return code, out.getvalue()


def test_all_good_exits_zero_as_a_module(localauth: LocalAuth, redis_url: str) -> None:
    """Against a healthy setup every check passes and `python -m app.diagnose` exits 0."""
    env = app_env(localauth, redis_url, "sgtest:diag:")
    result = subprocess.run(
        [sys.executable, "-m", "app.diagnose"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "settings",
        "redis",
        "supabase_auth",
        "anon_key",
        "service_role_key",
        "jwks",
        "clock",
    ):
        assert f"[ OK ] {name}" in result.stdout
    assert localauth.service_role_key not in result.stdout
    assert localauth.anon_key not in result.stdout


def test_bad_url_points_at_supabase_url(localauth: LocalAuth, redis_url: str) -> None:
    """An unreachable SUPABASE_URL fails with advice about SUPABASE_URL."""
    env = app_env(
        localauth, redis_url, "sgtest:diag:", supabase_url=f"http://127.0.0.1:{free_port()}"
    )
    code, out = run(env)
    assert code == 1
    assert "[FAIL] supabase_auth" in out
    assert "check SUPABASE_URL" in out


def test_bad_service_key_points_at_the_service_role_key(
    localauth: LocalAuth, redis_url: str
) -> None:
    """A service-role key that is not one fails the admin check with advice about that key."""
    env = app_env(
        localauth, redis_url, "sgtest:diag:", supabase_service_role_key=localauth.anon_key
    )
    code, out = run(env)
    assert code == 1
    assert "[FAIL] service_role_key" in out
    assert "SUPABASE_SERVICE_ROLE_KEY" in out
    assert "[ OK ] anon_key" in out
    assert localauth.anon_key not in out


def test_redis_down_points_at_redis_url(localauth: LocalAuth) -> None:
    """Nothing listening at REDIS_URL fails the Redis check with advice about REDIS_URL."""
    env = app_env(localauth, f"redis://:hunter2@127.0.0.1:{free_port()}/0", "sgtest:diag:")
    code, out = run(env)
    assert code == 1
    assert "[FAIL] redis" in out
    assert "check REDIS_URL" in out
    assert "hunter2" not in out


def test_missing_settings_exit_two_naming_the_variable() -> None:
    """Without SUPABASE_URL the settings check fails, names it and exits 2."""
    code, out = run({"SUPABASE_ANON_KEY": "a", "SUPABASE_SERVICE_ROLE_KEY": "b"})
    assert code == 2
    assert "[FAIL] settings" in out
    assert "SUPABASE_URL" in out
