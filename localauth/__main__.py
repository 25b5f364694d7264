"""``python -m localauth``: serve, or ``rotate-keys``."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import uvicorn

from localauth.apikeys import load_project_keys
from localauth.app import build_app
from localauth.config import ENV_FLAGS, ConfigError, Settings
from localauth.jwt_keys import parse_jwt_keys
from localauth.keys import KeyRing, ensure_signing_key, rotate_keys
from localauth.store import Database
from localauth.tokens import api_key, effective_secret, signing_key

_BOOL_FIELDS = {
    "disable_signup",
    "mailer_autoconfirm",
    "external_email_enabled",
    "external_phone_enabled",
    "external_fake_enabled",
    "external_anonymous_users_enabled",
    "refresh_token_rotation_enabled",
    "mailer_secure_email_change_enabled",
    "legacy_api_keys_enabled",
    "require_api_key",
}


_HELP = {
    "LOCALAUTH_BCRYPT_COST": (
        "localauth-only: bcrypt cost for new hashes (default 10, as GoTrue; tests and load "
        "tests use 4 so that bcrypt does not dominate CPU)"
    ),
    "LOCALAUTH_JWT_ALG": (
        "ES256 (default; JWKS with kid), RS256, or HS256 (legacy shared secret); "
        "GOTRUE_JWT_KEYS, when set, decides instead"
    ),
    "LOCALAUTH_THREADS": "localauth-only: worker threads for SQLite and bcrypt (default 16)",
    "LOCALAUTH_DB": "SQLite file; keys live beside it in <db>.keys.json",
    "LOCALAUTH_PUBLISHABLE_KEY": "sb_publishable_… key (default: generated, <db>.apikeys.json)",
    "LOCALAUTH_SECRET_KEY": "sb_secret_… key (default: generated, <db>.apikeys.json)",
    "LOCALAUTH_LEGACY_API_KEYS": "accept the legacy anon/service_role JWT keys (default true)",
    "LOCALAUTH_REQUIRE_API_KEY": "refuse requests without an apikey, as hosted (default false)",
}


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localauth",
        description=(
            "A local Supabase Auth (GoTrue) server. Every flag can also be given as the "
            "environment variable in brackets; flags win. `python -m localauth rotate-keys "
            "--db PATH` adds a new ES256 signing key."
        ),
    )
    for env_name, (field, flag) in ENV_FLAGS.items():
        extra: dict[str, object] = {}
        if field in _BOOL_FIELDS:
            extra = {"nargs": "?", "const": "true", "metavar": "BOOL"}
        help_text = _HELP.get(env_name, "")
        parser.add_argument(
            flag,
            dest=env_name,
            help=f"{help_text} [{env_name}]".strip(),
            **extra,  # type: ignore[arg-type]
        )
    parser.add_argument("--env-file", type=Path, help="write SUPABASE_* settings here")
    parser.add_argument("--log-level", default="warning")
    return parser


def _write_env_file(path: Path, values: Mapping[str, str]) -> None:
    text = "".join(f"{k}={v}\n" for k, v in values.items())
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def serve(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = _serve_parser().parse_args(argv)
    cli = {
        env_name: value for env_name in ENV_FLAGS if (value := getattr(args, env_name)) is not None
    }
    try:
        settings = Settings.from_env({**environ, **cli})
        configured_keys = parse_jwt_keys(settings.jwt_keys)
    except ConfigError as exc:
        print(f"localauth: {exc}", file=sys.stderr)
        return 2
    db = Database(settings.db_path)
    db.initialise()
    if not configured_keys:
        ensure_signing_key(settings.db_path, settings.jwt_alg)
    keyring = KeyRing(settings.db_path, configured=configured_keys)
    if args.env_file is not None:
        keys = keyring.current
        secret = effective_secret(settings, keys)
        project = load_project_keys(settings)
        values = {
            "SUPABASE_URL": settings.base_url,
            "SUPABASE_PUBLISHABLE_KEY": project.publishable,
            "SUPABASE_SECRET_KEY": project.secret,
        }
        if settings.legacy_api_keys_enabled:  # a new project's Connect dialog lists only these
            values["SUPABASE_ANON_KEY"] = api_key(keys, secret, "anon")
            values["SUPABASE_SERVICE_ROLE_KEY"] = api_key(keys, secret, "service_role")
        if settings.jwt_alg == "HS256":
            values["SUPABASE_JWT_SECRET"] = secret
        _write_env_file(args.env_file, values)
    app = build_app(settings, db, keyring)
    signer = signing_key(settings, keyring.current)
    alg = signer.alg if signer is not None else "HS256"
    print(
        f"localauth: serving Supabase Auth at {settings.base_url}/auth/v1 "
        f"(SUPABASE_URL={settings.base_url}, jwt alg {alg}, db {settings.db_path})",
        file=sys.stderr,
        flush=True,
    )
    print(
        f"localauth: mailbox (every email it sends) at {settings.base_url}/mailbox/messages",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()
    return 0


def rotate(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m localauth rotate-keys")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--alg", choices=("ES256", "RS256"), default="ES256")
    args = parser.parse_args(argv)
    kid = rotate_keys(args.db, args.alg)
    print(f"localauth: new signing key {kid}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rotate-keys"]:
        return rotate(argv[1:])
    return serve(argv, os.environ)


if __name__ == "__main__":
    sys.exit(main())
