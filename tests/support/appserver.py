"""Run the app as a real uvicorn process (``python -m app``) for tests that need a network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.localauth import free_port

_START_SECONDS = 20.0


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
    stop it."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"app-{port}.log"
    full_env = {**os.environ, **env, "HOST": host, "PORT": str(port)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *argv],
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + _START_SECONDS
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited early:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(url + "/health/live", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not come up:\n{log.read_text()[-4000:]}")
            time.sleep(0.05)
        yield AppServer(url=url, pid=process.pid, port=port, log=log, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
