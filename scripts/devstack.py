"""The development stack: Redis (found or started), localauth, and the app, with a demo user.

``scripts/dev`` runs this. Everything it creates lives in ``.dev/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "Demo-password-1"
# As a project created today: sb_publishable_/sb_secret_ keys, the legacy JWT pair disabled,
# and an apikey required on every call (`--legacy-keys` runs an older project's setup).
NEW_PROJECT_KEYS = {"LOCALAUTH_LEGACY_API_KEYS": "false", "LOCALAUTH_REQUIRE_API_KEY": "true"}
LEGACY_PROJECT_KEYS = {"LOCALAUTH_LEGACY_API_KEYS": "true"}
NEW_KEY_NAMES = ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM a child still running, wait ``timeout`` seconds for it, then kill it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"dev: {what} exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"dev: {what} did not answer at {url} within {seconds:.0f}s")


def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN and UNLINK; never a FLUSH). Best effort: a
    Redis that is already gone holds nothing to delete."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    except redis.RedisError:
        pass
    finally:
        client.close()


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


class Stack:
    def __init__(self, workdir: Path, prefix: Sequence[str] = ()) -> None:
        """``prefix`` goes before every command started, e.g. ``taskset -c 0`` to pin them."""
        self.workdir = workdir
        self.prefix = list(prefix)
        self.children: list[subprocess.Popen[bytes]] = []
        self._scratch: list[tuple[str, str]] = []

    def scratch_prefix(self, redis_url: str, name: str) -> str:
        """A Redis key prefix of this run's own (``name:<random>:``); ``stop`` deletes its
        keys, so a benchmark against a shared Redis leaves nothing behind and never starts
        on a previous run's sessions."""
        prefix = f"{name}:{secrets.token_hex(4)}:"
        self._scratch.append((redis_url, prefix))
        return prefix

    def spawn(
        self, args: list[str], env: Mapping[str, str] | None = None, *, quiet: bool = False
    ) -> subprocess.Popen[bytes]:
        sink = subprocess.DEVNULL if quiet else None
        process = subprocess.Popen(
            [*self.prefix, *args],
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            stdout=sink,
            stderr=sink,
        )
        self.children.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.children):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for url, prefix in self._scratch:
            delete_keys(url, prefix)
        self._scratch.clear()

    def redis_url(self) -> str:
        if os.environ.get("REDIS_URL"):
            return os.environ["REDIS_URL"]
        if redis_answers(6379):
            return "redis://127.0.0.1:6379/0"
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit(
                "dev: no Redis answers on 127.0.0.1:6379 and redis-server is not installed.\n"
                "     Install it (Debian: apt-get install redis-server) or set REDIS_URL."
            )
        port = free_port()
        self.spawn(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ]
        )
        deadline = time.monotonic() + 10
        while not redis_answers(port):
            if time.monotonic() > deadline:
                sys.exit("dev: redis-server did not start")
            time.sleep(0.05)
        print(f"dev: started redis-server on port {port}")
        return f"redis://127.0.0.1:{port}/0"

    def examples(self, port: int) -> str:
        """Serve examples/browser on its own port (another origin than the API, as a real
        frontend would be); its URL."""
        port = port if port_free(port) else free_port()
        process = self.spawn(
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(ROOT / "examples" / "browser"),
            ],
            quiet=True,
        )
        wait_http(f"http://127.0.0.1:{port}/index.html", process, "the example frontend")
        return f"http://localhost:{port}"

    def localauth(self, port: int, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        env_file = self.workdir / "localauth.env"
        process = self.spawn(
            [
                sys.executable,
                "-m",
                "localauth",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                str(self.workdir / "localauth.db"),
                "--env-file",
                str(env_file),
            ],
            env={
                "GOTRUE_MAILER_AUTOCONFIRM": "true",
                "GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL": "10",
                **NEW_PROJECT_KEYS,
                # "Sign in with ..." against a local consent page (docs/account-lifecycle.md).
                "GOTRUE_EXTERNAL_FAKE_ENABLED": "true",
                **(extra_env or {}),
            },
        )
        wait_http(f"http://127.0.0.1:{port}/health", process, "localauth")
        return read_env(env_file)


def examples_env(frontend: str) -> dict[str, str]:
    """The app settings the example frontend needs: its origin allowed, both transports."""
    origins = [frontend, frontend.replace("localhost", "127.0.0.1")]
    extra = os.environ.get("CORS_ORIGINS", "")
    return {
        "CORS_ORIGINS": ",".join([*origins, *([extra] if extra else [])]),
        "SESSION_TRANSPORT": os.environ.get("SESSION_TRANSPORT", "both"),
    }


def admin_headers(supabase: Mapping[str, str]) -> dict[str, str]:
    """The server key as the platform expects it: an sb_secret_ key in `apikey` alone."""
    if "SUPABASE_SECRET_KEY" in supabase:
        return {"apikey": supabase["SUPABASE_SECRET_KEY"]}
    key = supabase["SUPABASE_SERVICE_ROLE_KEY"]
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def public_key(supabase: Mapping[str, str]) -> str:
    return supabase.get("SUPABASE_PUBLISHABLE_KEY") or supabase["SUPABASE_ANON_KEY"]


def seed_demo_user(supabase: Mapping[str, str]) -> None:
    response = httpx.post(
        supabase["SUPABASE_URL"] + "/auth/v1/admin/users",
        headers=admin_headers(supabase),
        json={
            "email": DEMO_EMAIL,
            "password": DEMO_PASSWORD,
            "email_confirm": True,
            "app_metadata": {"roles": ["admin"]},
        },
        timeout=10,
    )
    if response.status_code not in (200, 422):  # 422: already there from an earlier run
        sys.exit(f"dev: could not create the demo user: {response.status_code} {response.text}")


def seed_users(supabase: Mapping[str, str], count: int, prefix: str, password: str) -> list[str]:
    """``count`` confirmed users ``{prefix}-{i}@example.com`` (kept if already there)."""
    emails = [f"{prefix}-{index}@example.com" for index in range(count)]

    def create(email: str) -> None:
        response = httpx.post(
            supabase["SUPABASE_URL"] + "/auth/v1/admin/users",
            headers=admin_headers(supabase),
            json={"email": email, "password": password, "email_confirm": True},
            timeout=60,
        )
        if response.status_code not in (200, 422):
            raise RuntimeError(f"seeding failed: {response.status_code} {response.text}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, emails))
    return emails


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--localauth-port", type=int, default=9999)
    parser.add_argument(
        "--legacy-keys",
        action="store_true",
        help="run localauth as an older project: legacy anon/service_role JWT keys enabled "
        "and given to the app (default: new sb_publishable_/sb_secret_ keys, legacy disabled)",
    )
    parser.add_argument(
        "--examples-port", type=int, default=8080, help="the example frontend (0: off)"
    )
    args = parser.parse_args()
    workdir = ROOT / ".dev"
    workdir.mkdir(exist_ok=True)
    stack = Stack(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        redis_url = stack.redis_url()
        auth_port = args.localauth_port if port_free(args.localauth_port) else free_port()
        supabase = stack.localauth(auth_port, LEGACY_PROJECT_KEYS if args.legacy_keys else None)
        if args.legacy_keys:
            supabase = {
                k: v for k, v in supabase.items() if k not in NEW_KEY_NAMES
            }  # the app on the legacy pair, as before a migration
        family = "legacy JWT keys" if args.legacy_keys else "sb_publishable_/sb_secret_ keys"
        print(f"dev: localauth (Supabase Auth) at {supabase['SUPABASE_URL']}/auth/v1 ({family})")
        print(
            f"dev: local mailbox (every auth email) at {supabase['SUPABASE_URL']}/mailbox/messages"
        )
        seed_demo_user(supabase)
        frontend = stack.examples(args.examples_port) if args.examples_port else None
        app = stack.spawn(
            [sys.executable, "-m", "app"],
            env={
                **supabase,
                "REDIS_URL": redis_url,
                "PORT": str(args.port),
                "ENVIRONMENT": "development",
                "LOG_JSON": os.environ.get("LOG_JSON", "false"),
                **(examples_env(frontend) if frontend else {}),
                "OAUTH_PROVIDERS": os.environ.get("OAUTH_PROVIDERS", "fake"),
                "OAUTH_REDIRECT_URLS": os.environ.get(
                    "OAUTH_REDIRECT_URLS", "http://localhost:3000/"
                ),
            },
        )
        base = f"http://127.0.0.1:{args.port}"
        wait_http(base + "/health/live", app, "the app")
        print(
            f"\ndev: the auth backend is up at {base}  (Ctrl-C stops everything)\n"
            f"     log in as the demo user:\n\n"
            f"  curl -s -X POST {base}/api/v1/auth/login -H 'Content-Type: application/json' \\\n"
            f'       -d \'{{"email": "{DEMO_EMAIL}", "password": "{DEMO_PASSWORD}"}}\'\n',
            flush=True,
        )
        if frontend:
            # "localhost" for both: the page and the API must be the same site for the
            # SameSite=Strict refresh cookie (127.0.0.1 and localhost are different sites).
            print(
                f"dev: example frontend at {frontend}/?api=http://localhost:{args.port}"
                f"&mailbox={supabase['SUPABASE_URL']}\n"
                f"     (sign in as {DEMO_EMAIL} / {DEMO_PASSWORD}; docs/frontend.md)\n",
                flush=True,
            )
        app.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
