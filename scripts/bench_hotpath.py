"""Hot-path benchmark: (a) bare Starlette JSON, (b) our ``GET /api/v1/auth/me`` with a valid
token, (c) fastapi-users' protected route with its Redis strategy; one uvicorn worker each,
in one run, at the same concurrency.

    uv run python scripts/bench_hotpath.py [--duration 10] [--connections 64]

Uses wrk when installed (``apt-get install -y wrk``), else a small asyncio load generator.
fastapi-users is installed only into a throwaway venv under /tmp (never into the project).
Redis is found on 6379 or started privately; localauth and the apps run as subprocesses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.devstack import delete_keys, stop_process

ROOT = Path(__file__).resolve().parent.parent
FU_VENV = Path(tempfile.gettempdir()) / "supaguard-bench-fastapi-users"
EMAIL = "bench@example.com"
PASSWORD = "Bench-password-1"

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def hello(request):
    return JSONResponse({"id": "00000000-0000-0000-0000-000000000000", "email": "a@b.c"})

app = Starlette(routes=[Route("/hello", hello)])
"""

# The documented fastapi-users setup (BearerTransport, RedisStrategy, current_user(active=True))
# over an in-memory user DB: its best case, since a SQL lookup would only add cost.
FU_APP = """
import os, uuid
from dataclasses import dataclass, field
import redis.asyncio
from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, RedisStrategy
from fastapi_users.db import BaseUserDatabase

@dataclass
class User:
    email: str
    hashed_password: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    is_active: bool = True
    is_superuser: bool = False
    is_verified: bool = True

class MemoryDB(BaseUserDatabase):
    def __init__(self):
        self.users = {}
    async def get(self, id):
        return self.users.get(id)
    async def get_by_email(self, email):
        return next((u for u in self.users.values() if u.email.lower() == email.lower()), None)
    async def create(self, create_dict):
        user = User(**{k: v for k, v in create_dict.items() if k in User.__dataclass_fields__})
        self.users[user.id] = user
        return user
    async def update(self, user, update_dict):
        for key, value in update_dict.items():
            setattr(user, key, value)
        return user
    async def delete(self, user):
        self.users.pop(user.id, None)

DB = MemoryDB()

class UserManager(UUIDIDMixin, BaseUserManager):
    reset_password_token_secret = "bench"
    verification_token_secret = "bench"

async def get_user_db():
    yield DB

async def get_user_manager(user_db=Depends(get_user_db)):
    yield UserManager(user_db)

redis_client = redis.asyncio.from_url(os.environ["REDIS_URL"], decode_responses=True)

def get_redis_strategy():
    return RedisStrategy(redis_client, lifetime_seconds=3600, key_prefix="sgbench:fu:")

backend = AuthenticationBackend(
    name="redis", transport=BearerTransport(tokenUrl="auth/login"), get_strategy=get_redis_strategy
)
fastapi_users = FastAPIUsers(get_user_manager, [backend])
current_user = fastapi_users.current_user(active=True)
app = FastAPI()
app.include_router(fastapi_users.get_auth_router(backend), prefix="/auth")

@app.post("/seed")
async def seed():
    user = schemas.BaseUserCreate(email=os.environ["EMAIL"], password=os.environ["PASSWORD"])
    await UserManager(DB).create(user)
    return {"ok": True}

@app.get("/me")
async def me(user=Depends(current_user)):
    return {"id": str(user.id), "email": user.email}
"""


@dataclass(frozen=True)
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def process(
    cmd: list[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        stop_process(proc, 15)


def uvicorn_cmd(python: str, target: str, port: int) -> list[str]:
    return [
        python, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


# -- load generation ---------------------------------------------------------------------


def run_wrk(url: str, headers: Mapping[str, str], duration: int, connections: int) -> Result:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Result(
        name=url,
        rps=rps,
        p50_ms=_wrk_ms(out, "50%"),
        p99_ms=_wrk_ms(out, "99%"),
        errors=int(non2xx.group(1)) if non2xx else 0,
    )


def _wrk_ms(out: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    assert match is not None, out
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def _pyload(url: str, headers: Mapping[str, str], duration: int, connections: int) -> Result:
    parsed = httpx.URL(url)
    head = f"GET {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    request = head.encode()
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + duration

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        while time.monotonic() < stop:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status_line:
                errors += 1
        writer.close()

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.monotonic() - began
    cuts = statistics.quantiles(latencies, n=100)
    return Result(url, len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000, errors)


def load(url: str, headers: Mapping[str, str], duration: int, connections: int) -> Result:
    if shutil.which("wrk"):
        return run_wrk(url, headers, duration, connections)
    return asyncio.run(_pyload(url, headers, duration, connections))


# -- the three targets ---------------------------------------------------------------------


def bench_bare(work: Path, args: argparse.Namespace) -> Result:
    (work / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    cmd = uvicorn_cmd(sys.executable, "bare_app:app", port)
    with process(cmd, work / "bare.log", cwd=work, env={"PYTHONPATH": str(work)}) as proc:
        wait_http(f"http://127.0.0.1:{port}/hello", proc, work / "bare.log")
        return load(f"http://127.0.0.1:{port}/hello", {}, args.duration, args.connections)


def bench_ours(work: Path, redis_url: str, args: argparse.Namespace) -> Result:
    auth_port, app_port = free_port(), free_port()
    env_file = work / "localauth.env"
    localauth = [
        sys.executable, "-m", "localauth", "--host", "127.0.0.1", "--port", str(auth_port),
        "--db", str(work / "localauth.sqlite3"), "--env-file", str(env_file),
        "--jwt-alg", "ES256", "--bcrypt-cost", "4",
    ]  # fmt: skip
    auth_env = {"GOTRUE_MAILER_AUTOCONFIRM": "true"}
    with process(localauth, work / "localauth.log", env=auth_env, cwd=ROOT) as auth:
        wait_http(f"http://127.0.0.1:{auth_port}/health", auth, work / "localauth.log")
        while not env_file.exists():
            time.sleep(0.05)
        keys = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        env = {
            "SUPABASE_URL": f"http://127.0.0.1:{auth_port}",
            "SUPABASE_ANON_KEY": keys["SUPABASE_ANON_KEY"].strip(),
            "SUPABASE_SERVICE_ROLE_KEY": keys["SUPABASE_SERVICE_ROLE_KEY"].strip(),
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": "sgbench:",
            "LOG_LEVEL": "warning",
            "HOST": "127.0.0.1",
            "PORT": str(app_port),
        }
        base = f"http://127.0.0.1:{app_port}"
        with process([sys.executable, "-m", "app"], work / "app.log", env=env, cwd=ROOT) as app:
            wait_http(base + "/health/live", app, work / "app.log")
            body = {"email": EMAIL, "password": PASSWORD}
            httpx.post(base + "/api/v1/auth/register", json=body, timeout=10)
            response = httpx.post(base + "/api/v1/auth/login", json=body, timeout=10)
            response.raise_for_status()
            headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
            assert httpx.get(base + "/api/v1/auth/me", headers=headers).status_code == 200
            return load(base + "/api/v1/auth/me", headers, args.duration, args.connections)


def fastapi_users_python() -> str:
    python = FU_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["uv", "venv", "--quiet", "--python", "3.11", str(FU_VENV)], check=True)
        subprocess.run(
            ["uv", "pip", "install", "--quiet", "--python", str(python),
             "fastapi-users[redis]", "uvicorn"],
            check=True,
        )  # fmt: skip
    return str(python)


def bench_fastapi_users(work: Path, redis_url: str, args: argparse.Namespace) -> Result:
    python = fastapi_users_python()
    (work / "fu_app.py").write_text(FU_APP)
    port = free_port()
    env = {"PYTHONPATH": str(work), "REDIS_URL": redis_url, "EMAIL": EMAIL, "PASSWORD": PASSWORD}
    base = f"http://127.0.0.1:{port}"
    with process(uvicorn_cmd(python, "fu_app:app", port), work / "fu.log", env=env, cwd=work) as p:
        wait_http(base + "/docs", p, work / "fu.log")
        httpx.post(base + "/seed", timeout=30).raise_for_status()
        form = {"username": EMAIL, "password": PASSWORD}
        response = httpx.post(base + "/auth/login", data=form, timeout=30)
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        assert httpx.get(base + "/me", headers=headers).status_code == 200
        return load(base + "/me", headers, args.duration, args.connections)


@contextlib.contextmanager
def redis_server(work: Path) -> Iterator[str]:
    if answers(6379):
        # A shared Redis: everything written here is under "sgbench:" and deleted after.
        url = "redis://127.0.0.1:6379/14"
        try:
            yield url
        finally:
            delete_keys(url, "sgbench:")
        return
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    with process(cmd, work / "redis.log", cwd=work):
        deadline = time.monotonic() + 10
        while not answers(port):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per target")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    tool = "wrk" if shutil.which("wrk") else "python asyncio load generator"
    print(f"load: {tool}, {args.connections} connections, {args.duration} s per target")
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp, redis_server(Path(tmp)) as url:
        work = Path(tmp)
        results = {
            "a": bench_bare(work, args),
            "b": bench_ours(work, url, args),
            "c": bench_fastapi_users(work, url, args),
        }
    labels = {
        "a": "bare Starlette JSON",
        "b": "supaguard GET /api/v1/auth/me",
        "c": "fastapi-users RedisStrategy /me",
    }
    print(f"{'':3}{'target':34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for key, result in results.items():
        print(
            f"{key:3}{labels[key]:34}{result.rps:>10.0f}{result.p50_ms:>9.2f}"
            f"{result.p99_ms:>9.2f}{result.errors:>9}"
        )
    a, b, c = results["a"], results["b"], results["c"]
    b_over_a, b_over_c = b.rps / a.rps, b.rps / c.rps
    print(f"b/a = {b_over_a:.2f} (target >= 0.80)   b/c = {b_over_c:.2f} (target >= 10)")
    print(f"b p99 = {b.p99_ms:.2f} ms (target < 5 ms)")
    print("(targets one after another here; scripts/bench_report interleaves them)")
    met = b_over_a >= 0.8 and b_over_c >= 10 and b.p99_ms < 5 and b.errors == 0
    print("targets met" if met else "targets NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
