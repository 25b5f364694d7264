"""Run ``python -m localauth`` in a subprocess for tests (an interface other suites import)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["LocalAuth", "free_port", "log_path", "read_env_file", "run_localauth"]

_STARTUP_SECONDS = 20.0
_STOP_SECONDS = 5.0


@dataclass(frozen=True)
class LocalAuth:
    url: str  # "http://127.0.0.1:PORT"; the SDK's auth base is url + "/auth/v1"
    anon_key: str
    service_role_key: str
    jwt_secret: str  # the HS256 secret
    db_path: Path
    pid: int
    port: int


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
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def run_localauth(
    tmp_dir: Path,
    *,
    jwt_alg: str = "ES256",
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    db_path: Path | None = None,
    bcrypt_cost: int = 4,
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
            anon_key=values["SUPABASE_ANON_KEY"],
            service_role_key=values["SUPABASE_SERVICE_ROLE_KEY"],
            jwt_secret=secret,
            db_path=db_path,
            pid=proc.pid,
            port=port,
        )
    finally:
        _stop(proc)


def _secret_from_keys(db_path: Path, env: Mapping[str, str] | None) -> str:
    # The env file only carries the secret in HS256 mode; in ES256 mode it still exists
    # (API keys and kid-less admin tokens use it) and lives in the key file.
    if env and env.get("GOTRUE_JWT_SECRET"):
        return env["GOTRUE_JWT_SECRET"]
    import json

    keys = json.loads(db_path.with_name(db_path.name + ".keys.json").read_text())
    secret: str = keys["jwt_secret"]
    return secret
