"""`python -m app.diagnose` against real localauth and Redis, healthy and broken.

Both key families: a project on legacy keys, and one created today (sb_ keys, legacy keys
disabled). Every key misconfiguration a user can make gets its own line and fix.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from app import diagnose
from tests.conftest import app_env, both_key_modes
from tests.support.localauth import LocalAuth, forged_service_role_key, free_port

pytestmark = both_key_modes
NEW = pytest.mark.parametrize("localauth", ["new"], indirect=True)


def run(env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = diagnose.main(["--timeout", "2"], environ=env, out=out)
    return code, out.getvalue()


def keys(**names: str) -> dict[str, str]:
    """Just the key variables (and the URL to some project), for settings-only checks."""
    return {"SUPABASE_URL": "http://127.0.0.1:9", **{k.upper(): v for k, v in names.items()}}


def no_secrets(localauth: LocalAuth, out: str) -> None:
    for value in (
        localauth.anon_key,
        localauth.service_role_key,
        localauth.publishable_key,
        localauth.secret_key,
    ):
        assert value not in out


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
        "publishable_key",
        "secret_key",
        "jwks",
        "clock",
    ):
        assert f"[ OK ] {name}" in result.stdout
    if localauth.key_mode == "new":
        assert "SUPABASE_PUBLISHABLE_KEY: publishable key (sb_publishable_…) accepted" in (
            result.stdout
        )
        assert "SUPABASE_SECRET_KEY: secret key (sb_secret_…) accepted" in result.stdout
    else:
        # Working legacy keys pass, with the way out of them.
        assert "SUPABASE_ANON_KEY: legacy anon JWT key accepted" in result.stdout
        assert "set SUPABASE_PUBLISHABLE_KEY" in result.stdout
        assert "set SUPABASE_SECRET_KEY" in result.stdout
    no_secrets(localauth, result.stdout)


def test_bad_url_points_at_supabase_url(localauth: LocalAuth, redis_url: str) -> None:
    """An unreachable SUPABASE_URL fails with advice about SUPABASE_URL."""
    env = app_env(
        localauth, redis_url, "sgtest:diag:", supabase_url=f"http://127.0.0.1:{free_port()}"
    )
    code, out = run(env)
    assert code == 1
    assert "[FAIL] supabase_auth" in out
    assert "check SUPABASE_URL" in out


def test_a_refused_server_key_points_at_the_secret_key(
    localauth: LocalAuth, redis_url: str
) -> None:
    """A well-formed server key of no project fails the admin check, naming the key's family
    and where the right one goes; the public key still passes."""
    if localauth.key_mode == "new":
        wrong = {"supabase_secret_key": "sb_secret_" + "x" * 40}
        family = "secret key (sb_secret_…) refused"
    else:
        wrong = {"supabase_service_role_key": forged_service_role_key()}
        family = "legacy service_role JWT key refused"
    code, out = run(app_env(localauth, redis_url, "sgtest:diag:", **wrong))
    assert code == 1
    assert "[FAIL] secret_key" in out
    assert family in out
    assert "401 Invalid API key" in out
    assert "into SUPABASE_SECRET_KEY" in out
    assert "[ OK ] publishable_key" in out
    no_secrets(localauth, out)


def test_a_refused_public_key_points_at_the_publishable_key(
    localauth: LocalAuth, redis_url: str
) -> None:
    env = app_env(
        localauth, redis_url, "sgtest:diag:", supabase_publishable_key="sb_publishable_" + "y" * 30
    )
    code, out = run(env)
    assert code == 1
    assert "[FAIL] publishable_key" in out
    assert "SUPABASE_PUBLISHABLE_KEY: publishable key (sb_publishable_…) refused" in out
    assert "into SUPABASE_PUBLISHABLE_KEY" in out


@NEW
def test_legacy_keys_of_a_project_that_disabled_them(localauth: LocalAuth, redis_url: str) -> None:
    """The legacy pair of a new project: both checks fail and say to use the new keys."""
    env = app_env(localauth, redis_url, "sgtest:diag:")
    for name in ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY"):
        del env[name]
    env.update(
        SUPABASE_ANON_KEY=localauth.anon_key, SUPABASE_SERVICE_ROLE_KEY=localauth.service_role_key
    )
    code, out = run(env)
    assert code == 1
    assert "[FAIL] publishable_key" in out
    assert "[FAIL] secret_key" in out
    assert "Legacy API keys are disabled" in out
    assert "has disabled its legacy JWT keys" in out
    no_secrets(localauth, out)


@NEW
def test_both_families_set_the_new_key_wins(localauth: LocalAuth, redis_url: str) -> None:
    env = app_env(
        localauth,
        redis_url,
        "sgtest:diag:",
        supabase_anon_key=localauth.anon_key,
        supabase_service_role_key=localauth.service_role_key,
    )
    code, out = run(env)
    assert code == 0, out
    assert "SUPABASE_ANON_KEY is ignored (the new key wins)" in out
    assert "SUPABASE_SERVICE_ROLE_KEY is ignored (the new key wins)" in out


@NEW
def test_keys_in_the_wrong_place_exit_two_naming_the_fix(localauth: LocalAuth) -> None:
    """Settings refuse a key of the wrong family before anything is called."""
    cases = [
        (
            keys(
                supabase_publishable_key=localauth.secret_key,
                supabase_secret_key=localauth.secret_key,
            ),
            "SUPABASE_PUBLISHABLE_KEY: holds a secret key (sb_secret_…)",
            "move it to SUPABASE_SECRET_KEY",
        ),
        (
            keys(
                supabase_publishable_key=localauth.publishable_key,
                supabase_secret_key=localauth.publishable_key,
            ),
            "SUPABASE_SECRET_KEY: holds a publishable key (sb_publishable_…)",
            "put a secret key (sb_secret_…) here",
        ),
        (
            keys(
                supabase_anon_key=localauth.anon_key,
                supabase_service_role_key=localauth.anon_key,
            ),
            "SUPABASE_SERVICE_ROLE_KEY: holds the legacy anon key",
            "SUPABASE_SECRET_KEY",
        ),
        (
            keys(
                supabase_anon_key=localauth.service_role_key,
                supabase_service_role_key=localauth.service_role_key,
            ),
            "SUPABASE_ANON_KEY: holds the legacy service_role key",
            "sb_publishable_",
        ),
        (
            keys(supabase_publishable_key=localauth.publishable_key),
            "SUPABASE_SECRET_KEY: is required but not set",
            "(or the legacy SUPABASE_SERVICE_ROLE_KEY)",
        ),
    ]
    for env, problem, fix in cases:
        code, out = run(env)
        assert code == 2, out
        assert "[FAIL] settings" in out
        assert problem in out
        assert fix in out
        no_secrets(localauth, out)


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
