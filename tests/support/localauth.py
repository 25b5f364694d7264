"""Run ``python -m localauth`` in a subprocess for tests (an interface other suites import)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import jwt

from scripts.devstack import stop_process

__all__ = [
    "KEY_MODES",
    "KeyMode",
    "LocalAuth",
    "forged_service_role_key",
    "free_port",
    "log_path",
    "read_env_file",
    "run_localauth",
]

# "legacy": the anon/service_role JWT keys, as an older project; "new": sb_publishable_ /
# sb_secret_ keys with the legacy pair disabled and an apikey required, as a project created
# today.
KeyMode = Literal["legacy", "new"]
KEY_MODES: tuple[KeyMode, ...] = ("legacy", "new")
_NEW_PROJECT_ENV = {"LOCALAUTH_LEGACY_API_KEYS": "false", "LOCALAUTH_REQUIRE_API_KEY": "true"}

_STARTUP_SECONDS = 20.0
_STOP_SECONDS = 5.0


@dataclass(frozen=True)
class LocalAuth:
    url: str  # "http://127.0.0.1:PORT"; the SDK's auth base is url + "/auth/v1"
    anon_key: str  # the legacy pair (refused by the gateway in "new" mode)
    service_role_key: str
    jwt_secret: str  # the HS256 secret
    db_path: Path
    pid: int
    port: int
    publishable_key: str = ""
    secret_key: str = ""
    key_mode: KeyMode = "legacy"

    @property
    def public_key(self) -> str:
        """The key of user-facing calls in this mode."""
        return self.publishable_key if self.key_mode == "new" else self.anon_key

    @property
    def server_key(self) -> str:
        """The Admin API's key in this mode."""
        return self.secret_key if self.key_mode == "new" else self.service_role_key

    def admin_headers(self) -> dict[str, str]:
        """How the platform expects the server key: a bearer only when it is a JWT."""
        if self.key_mode == "new":
            return {"apikey": self.secret_key}
        return {"apikey": self.service_role_key, "Authorization": f"Bearer {self.service_role_key}"}

    def app_key_env(self) -> dict[str, str]:
        """The key variables an app configured for this project sets."""
        if self.key_mode == "new":
            return {
                "SUPABASE_PUBLISHABLE_KEY": self.publishable_key,
                "SUPABASE_SECRET_KEY": self.secret_key,
            }
        return {
            "SUPABASE_ANON_KEY": self.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_role_key,
        }


def forged_service_role_key() -> str:
    """Well-formed legacy service_role key of no project: the platform refuses it."""
    return jwt.encode(
        {"iss": "supabase-demo", "role": "service_role"}, "not-the-project-secret-" * 2, "HS256"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def log_path(tmp_dir: Path, port: int) -> Path:
    """Where run_localauth puts the server's stderr (tests may assert it has no traceback)."""
    return tmp_dir / f"localauth-{port}.log"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, _STOP_SECONDS)


@contextmanager
def run_localauth(
    tmp_dir: Path,
    *,
    jwt_alg: str = "ES256",
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    db_path: Path | None = None,
    bcrypt_cost: int = 4,
    key_mode: KeyMode = "legacy",
) -> Iterator[LocalAuth]:
    """Start localauth on 127.0.0.1, wait for GET /health, yield, then stop it.

    Startup is bounded (20 s); if the process dies or never answers, this fails with its stderr.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    db_path = db_path or tmp_dir / "localauth.sqlite3"
    env_file = tmp_dir / f"localauth-{port}.env"
    env_file.unlink(missing_ok=True)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("GOTRUE_", "LOCALAUTH_"))}
    if key_mode == "new":
        child_env.update(_NEW_PROJECT_ENV)
    child_env.update(env or {})
    cmd = [
        sys.executable,
        "-m",
        "localauth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        str(db_path),
        "--env-file",
        str(env_file),
        "--jwt-alg",
        jwt_alg,
        "--bcrypt-cost",
        str(bcrypt_cost),
    ]
    log = log_path(tmp_dir, port)
    with log.open("wb") as stderr:
        proc = subprocess.Popen(cmd, env=child_env, stdout=stderr, stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + _STARTUP_SECONDS
        with httpx.Client(timeout=1.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"localauth exited with {proc.returncode}:\n{log.read_text()}"
                    )
                try:
                    if client.get(f"{url}/health").status_code == 200 and env_file.exists():
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"localauth did not come up in 20 s:\n{log.read_text()}")
                time.sleep(0.05)
        values = read_env_file(env_file)
        secret = values.get("SUPABASE_JWT_SECRET") or _secret_from_keys(db_path, env)
        yield LocalAuth(
            url=url,
            anon_key=values.get("SUPABASE_ANON_KEY") or _legacy_key(db_path, secret, "anon"),
            service_role_key=values.get("SUPABASE_SERVICE_ROLE_KEY")
            or _legacy_key(db_path, secret, "service_role"),
            jwt_secret=secret,
            db_path=db_path,
            pid=proc.pid,
            port=port,
            publishable_key=values["SUPABASE_PUBLISHABLE_KEY"],
            secret_key=values["SUPABASE_SECRET_KEY"],
            key_mode=key_mode,
        )
    finally:
        _stop(proc)


def _legacy_key(db_path: Path, secret: str, role: str) -> str:
    """The legacy key localauth would issue (its env file omits them once disabled)."""
    import json

    keys = json.loads(db_path.with_name(db_path.name + ".keys.json").read_text())
    created = int(keys["created_at"])
    payload = {"iss": "supabase-demo", "role": role, "iat": created, "exp": created + 3153600000}
    return jwt.encode(payload, secret, algorithm="HS256")


def _secret_from_keys(db_path: Path, env: Mapping[str, str] | None) -> str:
    # The env file only carries the secret in HS256 mode; in ES256 mode it still exists
    # (API keys and kid-less admin tokens use it) and lives in the key file.
    if env and env.get("GOTRUE_JWT_SECRET"):
        return env["GOTRUE_JWT_SECRET"]
    import json

    keys = json.loads(db_path.with_name(db_path.name + ".keys.json").read_text())
    secret: str = keys["jwt_secret"]
    return secret
