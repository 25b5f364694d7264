"""Building blocks of the benchmark report: the machine, the servers, wrk, /proc counters.

Every comparison runs its targets side by side in one script run and interleaves short wrk
rounds over them (A B C A B C ...), so a change in the machine's load hits each alike; the
report quotes medians over rounds and ratios taken round by round.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scripts.bench_hotpath import BARE_APP, EMAIL, FU_APP, PASSWORD, fastapi_users_python
from scripts.devstack import Stack, free_port, stop_process, wait_http

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# One core for the server under test, the other for wrk, while there are two.
SERVER_CPU, LOAD_CPU = ("0", "1") if (os.cpu_count() or 1) >= 2 else ("0", "0")


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cpus, *cmd]


# Bare Starlette served as ``python -m app`` serves (``app.httpserver``'s protocol, no
# access log, no server header); argv[1] is the port.
BARE_ON_OUR_PROTOCOL = """
import sys
import uvicorn
from app.httpserver import bounded_protocol
from bare_app import app
http = bounded_protocol(max_header_count=100, max_header_bytes=32 * 1024)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http=http, access_log=False,
            server_header=False, log_level="warning")
"""
IMG = "img/bench"  # the report's plots, relative to docs/
LOGIN_RULES = "login=1000000/60,refresh=1000000/60"  # one client, hundreds of logins


class Report:
    def __init__(self, out: Path, quick: bool) -> None:
        self.out = out
        self.quick = quick
        self.parts: list[str] = []
        self.data: dict[str, Any] = {}
        (out.parent / IMG).mkdir(parents=True, exist_ok=True)

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def plot(self, name: str, draw: Callable[[Any], None]) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.4), dpi=80)
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out.parent / IMG / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        return f"![{name}]({IMG}/{name}.png)"


def load_note() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- /proc ---------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the workers of a ``--workers`` supervisor)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        pids += [int(child) for child in text.split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its workers."""
    total = 0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` alone (a worker), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pss_mib(pid: int) -> float:
    """Proportional set size of ``pid`` in MiB: pages shared after a fork count once, split
    among the processes sharing them (what N workers really add)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no Pss")


# -- wrk -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_request: float


def _ms(out: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {percentile} in wrk output:\n{out}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: Mapping[str, str] | None = None,
    script: Path | None = None,
    script_args: Sequence[str] = (),
    server_pid: int | None = None,
    threads: int = 1,
    cpus: str | None = LOAD_CPU,
) -> Run:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    before = cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(server_pid) - before if server_pid else 0.0
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if total is None or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*?(\d+) timeout", out)
    requests = int(total.group(1))
    return Run(
        rps=float(rps.group(1)),
        p50_ms=_ms(out, "50%"),
        p99_ms=_ms(out, "99%"),
        requests=requests,
        errors=(int(non2xx.group(1)) if non2xx else 0)
        + (int(socket_errors.group(1)) if socket_errors else 0),
        cpu_us_per_request=used / requests * 1e6 if requests and server_pid else 0.0,
    )


@dataclass
class Series:
    """Interleaved rounds of one target."""

    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        values: list[float] = [getattr(run, attr) for run in self.runs]
        return statistics.median(values)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


def ratio(a: Series, b: Series) -> float:
    """Median over rounds of a's req/s over b's in the same round."""
    return statistics.median(x.rps / y.rps for x, y in zip(a.runs, b.runs, strict=True))


# -- the targets ---------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)


class Bench:
    """Starts processes in one work directory and stops them all at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stack = Stack(workdir)
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, name: str, cmd: list[str], env: Mapping[str, str], *, cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        self._procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-3000:]

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc)

    def close(self) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)
        self.stack.stop()

    def localauth(self) -> dict[str, str]:
        return self.stack.localauth(free_port(), {"LOCALAUTH_BCRYPT_COST": "4"})

    def bare(self, cpus: str | None = SERVER_CPU, *, our_protocol: bool = False) -> Target:
        """Bare Starlette on uvicorn's own HTTP protocol, or (``our_protocol``) on the one
        ``python -m app`` serves with (``app.httpserver``): the same server as ours."""
        (self.workdir / "bare_app.py").write_text(BARE_APP)
        port = free_port()
        if our_protocol:
            cmd = [sys.executable, "-c", BARE_ON_OUR_PROTOCOL, str(port)]
            name = "bare Starlette JSON, our HTTP protocol"
        else:
            cmd = [
                sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
            name = "bare Starlette JSON"
        env = {"PYTHONPATH": os.pathsep.join([str(self.workdir), str(ROOT)])}
        proc = self.spawn(f"bare-{port}", pinned(cmd, cpus), env)
        url = f"http://127.0.0.1:{port}/hello"
        wait_http(url, proc, name)
        return Target(name, url, proc.pid)

    def ours(
        self,
        name: str,
        supabase: Mapping[str, str],
        redis_url: str,
        *,
        workers: int = 1,
        cpus: str | None = SERVER_CPU,
        env: Mapping[str, str] | None = None,
    ) -> Target:
        port = free_port()
        full_env = {
            **supabase,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": self.stack.scratch_prefix(redis_url, f"bench-{name}"),
            "LOG_LEVEL": "warning",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            **(env or {}),
        }
        proc = self.spawn(name, pinned([sys.executable, "-m", "app"], cpus), full_env)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health/live", proc, name)
        return Target(f"supaguard /me ({workers} worker{'s' * (workers > 1)})", base, proc.pid)

    def fastapi_users(self, redis_url: str, cpus: str | None = SERVER_CPU) -> Target:
        python = fastapi_users_python()
        (self.workdir / "fu_app.py").write_text(FU_APP)
        port = free_port()
        cmd = [
            python, "-m", "uvicorn", "fu_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        env = {
            "PYTHONPATH": str(self.workdir),
            "REDIS_URL": redis_url,
            "EMAIL": EMAIL,
            "PASSWORD": PASSWORD,
        }
        proc = self.spawn("fu", pinned(cmd, cpus), env, cwd=self.workdir)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/docs", proc, "fastapi-users")
        httpx.post(base + "/seed", timeout=30).raise_for_status()
        form = {"username": EMAIL, "password": PASSWORD}
        response = httpx.post(base + "/auth/login", data=form, timeout=30)
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        assert httpx.get(base + "/me", headers=headers).status_code == 200
        return Target("fastapi-users RedisStrategy /me", base + "/me", proc.pid, headers)


def sign_in(base: str, email: str = EMAIL, password: str = PASSWORD) -> dict[str, str]:
    """Register (if new) and log in through the app: the /me target's headers."""
    body = {"email": email, "password": password}
    httpx.post(base + "/api/v1/auth/register", json=body, timeout=10)
    response = httpx.post(base + "/api/v1/auth/login", json=body, timeout=10)
    response.raise_for_status()
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert httpx.get(base + "/api/v1/auth/me", headers=headers).status_code == 200
    return headers


def interleave(
    targets: Sequence[Target], *, connections: int, seconds: float, rounds: int
) -> list[Series]:
    series = [Series() for _ in targets]
    for _ in range(rounds):
        for target, each in zip(targets, series, strict=True):
            each.runs.append(
                wrk(
                    target.url,
                    connections=connections,
                    seconds=seconds,
                    headers=target.headers,
                    server_pid=target.pid,
                )
            )
    return series


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        yield Path(tmp)


async def _drive(port: int, path: str, tokens: Sequence[str], connections: int) -> int:
    """Send one ``GET path`` per token over keep-alive connections; the non-200 count."""
    queue = iter(tokens)
    failures = 0

    async def connection() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for token in queue:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if b" 200 " not in status:
                failures += 1
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return failures


def drive_tokens(base: str, tokens: Sequence[str], connections: int = 32) -> int:
    """Each of ``tokens`` presented once to ``/api/v1/auth/me``; the refusals."""
    port = int(base.rsplit(":", 1)[1])
    return asyncio.run(_drive(port, "/api/v1/auth/me", tokens, connections))
