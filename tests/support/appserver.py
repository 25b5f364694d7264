"""Run the app as a real uvicorn process (``python -m app``) for tests that need a network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.devstack import stop_process
from tests.support.localauth import free_port

_START_SECONDS = 20.0
# How often a port taken between picking it and the app binding it is replaced.
_BIND_ATTEMPTS = 5
_TAKEN = "Address already in use"


@dataclass(frozen=True)
class AppServer:
    url: str
    pid: int
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def threads(self) -> int:
        """The process's live thread count, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise RuntimeError("no Threads line in /proc status")


def _free_port(host: str) -> int:
    """A port free on every family ``host`` listens on (``::`` is dual-stack: a port free
    for IPv4 alone may be taken on IPv6)."""
    if ":" not in host:
        return free_port()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(
    env: Mapping[str, str], log: Path, port: int, host: str, argv: Sequence[str]
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env, "HOST": host, "PORT": str(port)}
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "app", *argv],
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def run_app(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    argv: Sequence[str] = (),
) -> Iterator[AppServer]:
    """Start ``python -m app`` with ``env`` on a free port (``host``: HOST, ``::`` for
    dual-stack) and the extra command-line ``argv``; wait for /health/live over IPv4;
    stop it. A port picked here that another process takes before the app binds it (the
    suite starts many servers) is replaced by a fresh one, up to a few times."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(_BIND_ATTEMPTS):
        bound = port or _free_port(host)
        log = log_dir / f"app-{bound}.log"
        process = _start(env, log, bound, host, argv)
        url = f"http://127.0.0.1:{bound}"
        try:
            if _came_up(process, url, log, retry=port is None and attempt + 1 < _BIND_ATTEMPTS):
                break
        except BaseException:
            stop_process(process)
            raise
    try:
        yield AppServer(url=url, pid=process.pid, port=bound, log=log, process=process)
    finally:
        stop_process(process)


def _came_up(process: subprocess.Popen[bytes], url: str, log: Path, *, retry: bool) -> bool:
    """Wait for /health/live: True once it answers, False if the port was taken (and
    ``retry`` allows another), else an error with the app's output."""
    deadline = time.monotonic() + _START_SECONDS
    while True:
        if process.poll() is not None:
            output = log.read_text()
            if retry and _TAKEN in output:
                return False
            raise RuntimeError(f"the app exited early:\n{output[-4000:]}")
        try:
            if httpx.get(url + "/health/live", timeout=0.5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app did not come up:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
